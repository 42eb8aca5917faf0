"""Command-line interface (L6): ``torrentfs info|magnet|make|download|seed|dht …``.

The dispatcher owns exit statuses and the one-line error contract (DESIGN.md rule 8):

* 0 on success; 2 for every user error -- argparse usage errors, and any `TorrentfsError`,
  printed as ONE line ``torrentfs: <file>: <problem>`` on stderr, never a traceback;
* 130 on Ctrl-C; anything else escaping a command is a bug: a short traceback and status 70.

Each subcommand is one small parser-builder plus one ``cmd_*(args) -> int`` function. Builders
living in other modules are listed in `EXTERNAL_COMMANDS` and imported only when their command
runs, so ``torrentfs info`` does not pay for importing trio. An argv whose first word is not a
subcommand or an option is the mount form ``torrentfs METAINFO_DIR MOUNTPOINT``, handed to
``torrentfs.app.main_mount(argv)`` (imported lazily: the mount needs pyfuse3).
"""

from __future__ import annotations

import os
import sys

from . import __version__
from .errors import TorrentfsError
from .progress import show

# Everything else is imported by the command that needs it: `torrentfs --help` and
# `torrentfs make` should not pay for the magnet parser, and `info` not for the hasher; nor
# for `typing` (hence a local TYPE_CHECKING, which mypy honours like typing's).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from .magnet import Magnet
    from .metainfo import Metainfo

    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["EXTERNAL_COMMANDS", "CliError", "build_parser", "load_source", "main", "run"]

PROG = "torrentfs"
EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE
EXIT_INTERRUPTED = 130


class CliError(TorrentfsError):
    """A user error found by the command line itself (bad file, bad option, existing output)."""


# -- dispatcher -------------------------------------------------------------------------------

EXTERNAL_COMMANDS: dict[str, tuple[str, str, str]] = {
    "download": (
        "torrentfs.engine_cli",
        "build_download_parser",
        "download a whole torrent to a directory",
    ),
    "seed": (
        "torrentfs.engine_cli",
        "build_seed_parser",
        "verify local data and seed it until interrupted",
    ),
    "status": ("torrentfs.status", "build_status_parser", "show what running mounts are doing"),
    "dht": (
        "torrentfs.dht_cli",
        "build_dht_parser",
        "query the BitTorrent DHT (ping, get-peers)",
    ),
}
"""Subcommand -> (module, parser builder, help). The builder adds its subparser with
``set_defaults(func=cmd)`` where ``cmd(args) -> int``."""


def _local_commands() -> dict[str, Callable[[_SubParsers], None]]:
    from .make_cli import build_make_parser

    return {"info": _build_info_parser, "magnet": _build_magnet_parser, "make": build_make_parser}


def known_commands() -> set[str]:
    return set(_local_commands()) | set(EXTERNAL_COMMANDS)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s external builder (if any) is imported, others are stubs."""
    from .cli_argparse import ArgumentParser

    parser: argparse.ArgumentParser = ArgumentParser(
        prog=PROG,
        description="A FUSE filesystem that shows BitTorrent torrents as files; and tools.",
        epilog=f"mount form: {PROG} [options] METAINFO_DIR MOUNTPOINT "
        f"({PROG} METAINFO_DIR MOUNTPOINT --help lists the mount options)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for build in _local_commands().values():
        build(sub)
    for name, (module_name, builder, help_text) in EXTERNAL_COMMANDS.items():
        if name == command:
            try:
                import importlib

                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name != module_name:
                    raise
                raise CliError(f"{name}: this command is not available yet") from None
            getattr(module, builder)(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _main_mount(argv: list[str]) -> int:
    import importlib

    try:
        app = importlib.import_module("torrentfs.app")
    except ModuleNotFoundError as e:
        if e.name != "torrentfs.app":
            raise
        print(f"{PROG}: mounting is not available yet", file=sys.stderr)
        return EXIT_USAGE
    result: int = app.main_mount(argv)
    return result


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "error"


def run() -> None:
    """The console script: `main`, then exit with its status.

    ``torrentfs make`` then leaves with ``os._exit`` once stdout and stderr are flushed: it
    holds nothing that needs the interpreter's orderly shutdown (no logging handlers, no
    threads left, its output already renamed into place), and that shutdown is a visible share
    of a 0.2 s run benchmarked against mktorrent. Every other command exits normally.
    """
    status = main()
    if sys.argv[1:2] == ["make"]:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: main() already said what it had to
                pass
        os._exit(status)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if (
            args
            and args[0] not in known_commands()
            and args[0] not in ("-h", "--help", "--version")
        ):
            return _main_mount(args)  # the mount form, options first or not
        command = args[0] if args else None
        if command == "make":  # the plain forms without argparse: see torrentfs.make_cli
            from .make_cli import parse_fast

            fast = parse_fast(args[1:])
            if fast is not None:
                return fast.func(fast)
        namespace = build_parser(command).parse_args(args)
        result: int = namespace.func(namespace)
        return result
    except SystemExit as e:  # argparse: --help/--version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except TorrentfsError as e:
        print(f"{PROG}: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `torrentfs info x | head`: the reader left; not an error worth a traceback.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except Exception:
        import traceback

        print(f"{PROG}: internal error (this is a bug):", file=sys.stderr)
        traceback.print_exc(limit=6, file=sys.stderr)
        return EXIT_BUG


# -- loading torrents and magnets -------------------------------------------------------------


def load_source(arg: str) -> Metainfo | Magnet:
    """A .torrent file, a file holding a magnet URI, or a magnet URI itself.

    Raises `CliError` naming `arg` and the problem (missing, unreadable, too large, invalid).
    """
    from .bencode import DEFAULT_MAX_SIZE
    from .errors import MetainfoError, UnsupportedTorrent
    from .metainfo import parse_metainfo
    from .progress import format_size

    if arg.lstrip()[:7].lower() == "magnet:":
        return _parse_magnet_text(arg, arg)
    try:
        with open(arg, "rb") as f:
            data = f.read(DEFAULT_MAX_SIZE + 1)
    except OSError as e:
        raise CliError(f"{arg}: {e.strerror or e}") from None
    if len(data) > DEFAULT_MAX_SIZE:
        raise CliError(f"{arg}: too large for a torrent (over {format_size(DEFAULT_MAX_SIZE)})")
    if data.lstrip()[:7].lower() == b"magnet:":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"{arg}: invalid magnet: not UTF-8 text") from None
        return _parse_magnet_text(text, arg)
    try:
        return parse_metainfo(data)
    except UnsupportedTorrent as e:
        raise CliError(f"{arg}: unsupported torrent: {e}") from None
    except MetainfoError as e:
        raise CliError(f"{arg}: invalid torrent: {e}") from None


def _parse_magnet_text(text: str, where: str) -> Magnet:
    from .errors import MagnetError
    from .magnet import parse_magnet

    if where == text and len(where) > 60:
        where = where[:57] + "..."
    try:
        return parse_magnet(text.strip())
    except MagnetError as e:
        raise CliError(f"{where}: invalid magnet: {e}") from None


# -- info -------------------------------------------------------------------------------------


def _build_info_parser(sub: _SubParsers) -> None:
    p = sub.add_parser("info", help="show what a .torrent (or magnet) holds")
    p.add_argument("file", metavar="FILE", help=".torrent file, .magnet file or magnet URI")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from .metainfo import Metainfo

    source = load_source(args.file)
    if args.json:
        obj = info_json(source)
        print(_json_dumps(obj))
    else:
        lines = info_lines(source) if isinstance(source, Metainfo) else magnet_lines(source)
        sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def info_json(source: Metainfo | Magnet) -> dict[str, object]:
    """The ``info --json`` object; keys are the same for torrents and magnets (None if unknown)."""
    from .magnet import Magnet

    if isinstance(source, Magnet):
        return {
            "kind": "magnet",
            "info_hash": source.info_hash.hex() if source.info_hash else None,
            "info_hash_v2": source.info_hash_v2.hex() if source.info_hash_v2 else None,
            "name": source.display_name,
            "total_size": None,
            "piece_length": None,
            "num_pieces": None,
            "private": None,
            "trackers": [[url] for url in source.trackers],
            "web_seeds": list(source.web_seeds),
            "peers": [[host, port] for host, port in source.peers],
            "select_only": list(source.select_only) if source.select_only is not None else None,
            "files": None,
        }
    m = source
    return {
        "kind": "torrent",
        "info_hash": m.info_hash.hex(),
        "info_hash_v2": m.info_hash_v2.hex() if m.info_hash_v2 else None,
        "name": m.name,
        "total_size": m.total_size,
        "piece_length": m.piece_length,
        "num_pieces": m.num_pieces,
        "private": m.private,
        "multi_file": m.multi_file,
        "trackers": [list(tier) for tier in m.trackers],
        "web_seeds": list(m.web_seeds),
        "dht_nodes": [[host, port] for host, port in m.dht_nodes],
        "creation_date": m.creation_date,
        "comment": m.comment,
        "created_by": m.created_by,
        "files": [{"path": "/".join(f.path), "size": f.length} for f in m.visible_files()],
    }


_C1_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}


def _json_dumps(obj: object) -> str:
    # Non-ASCII stays readable; C1 controls (which some terminals obey) are escaped -- they can
    # only occur inside JSON strings, so escaping them keeps the JSON valid.
    import json

    text = json.dumps(obj, ensure_ascii=False, indent=2)
    return text.translate(_C1_ESCAPES)


def _size(n: int) -> str:
    from .progress import format_size

    return f"{format_size(n)} ({n:,} bytes)" if n >= 1024 else f"{n} bytes"


def _date(seconds: int) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _field_lines(label: str, values: Sequence[str]) -> list[str]:
    head = f"{label + ':':<14}"
    if not values:
        return [head + "-"]
    return [head + values[0]] + [" " * 14 + v for v in values[1:]]


def info_lines(m: Metainfo) -> list[str]:
    """The human-readable ``info`` output of a torrent."""
    from .progress import format_size

    lines = [f"{'name:':<14}{show(m.name)}", f"{'info hash:':<14}{m.info_hash.hex()}"]
    if m.info_hash_v2:
        lines.append(f"{'info hash v2:':<14}{m.info_hash_v2.hex()}  (hybrid v1+v2)")
    lines.append(f"{'total size:':<14}{_size(m.total_size)}")
    lines.append(
        f"{'pieces:':<14}{m.num_pieces:,} x {format_size(m.piece_length)} ({m.piece_length} bytes)"
    )
    lines.append(f"{'private:':<14}{'yes' if m.private else 'no'}")
    tiers = [
        f"tier {n}: " + "  ".join(show(url) for url in tier) for n, tier in enumerate(m.trackers, 1)
    ]
    lines += _field_lines("trackers", tiers)
    lines += _field_lines("web seeds", [show(url) for url in m.web_seeds])
    if m.dht_nodes:
        lines += _field_lines("dht nodes", [f"{show(h)}:{p}" for h, p in m.dht_nodes])
    if m.creation_date is not None:
        lines.append(f"{'created:':<14}{_date(m.creation_date)}")
    if m.created_by:
        lines.append(f"{'created by:':<14}{show(m.created_by)}")
    if m.comment:
        lines.append(f"{'comment:':<14}{show(m.comment)}")
    visible = m.visible_files()
    noun = "file" if len(visible) == 1 else "files"
    lines.append(
        f"{'files:':<14}{len(visible):,} {noun}"
        + (" in " + show(m.name) + "/" if m.multi_file else "")
    )
    sizes = [format_size(f.length) for f in visible]
    width = max((len(s) for s in sizes), default=0)
    for f, s in zip(visible, sizes, strict=True):
        lines.append(f"  {s:>{width}}  {show('/'.join(f.path))}")
    return lines


def magnet_lines(m: Magnet) -> list[str]:
    """The human-readable ``info`` output of a magnet link (what the link itself says)."""
    lines = [f"{'magnet:':<14}metadata not fetched; this is what the link says"]
    lines.append(f"{'name:':<14}{show(m.display_name) if m.display_name else '-'}")
    lines.append(f"{'info hash:':<14}{m.info_hash.hex() if m.info_hash else '-'}")
    if m.info_hash_v2:
        lines.append(f"{'info hash v2:':<14}{m.info_hash_v2.hex()}")
    lines += _field_lines("trackers", [show(url) for url in m.trackers])
    lines += _field_lines("web seeds", [show(url) for url in m.web_seeds])
    if m.peers:
        lines += _field_lines(
            "peers", [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in m.peers]
        )
    if m.select_only is not None:
        lines.append(f"{'select only:':<14}{', '.join(map(str, m.select_only))}")
    return lines


# -- magnet -----------------------------------------------------------------------------------


def _build_magnet_parser(sub: _SubParsers) -> None:
    p = sub.add_parser("magnet", help="print the magnet URI of a .torrent")
    p.add_argument("file", metavar="FILE", help=".torrent file (or a magnet, normalised)")
    p.set_defaults(func=cmd_magnet)


def cmd_magnet(args: argparse.Namespace) -> int:
    from .magnet import Magnet, magnet_from_metainfo

    source = load_source(args.file)
    uri = source.to_uri() if isinstance(source, Magnet) else magnet_from_metainfo(source)
    print(uri)
    return 0
