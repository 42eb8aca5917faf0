"""``torrentfs make`` on the command line (L6): its options, a lean parser, and the command.

`make` is a short command benchmarked against mktorrent (``scripts bench make``): on a 512 MiB
file mktorrent takes under 0.2 s, so every millisecond Python spends before hashing shows.
argparse alone (with the ``re``, ``enum``, ``gettext`` and ``locale`` it imports, and building a
parser) costs about 15 ms. So the options live in one table, `OPTIONS`, used twice:

* `parse_fast` reads the plain forms (``-o OUT``, ``-oOUT``, ``--output OUT``,
  ``--output=OUT``, flags, repeated options, one PATH anywhere) without importing argparse, and
  gives up (``None``) on anything else: ``-h``, an unknown or abbreviated option, a missing
  value or one that starts with ``-``, grouped flags (``-pd``), ``--``, a value that does not
  convert. For every argv it accepts it gives what argparse gives (a property test checks this
  against `build_make_parser`);
* `build_make_parser` makes the argparse subparser from the same table: help, usage errors and
  every form `parse_fast` declines go through it, so their messages never differ.

`cmd_make` runs the command either way; its output file is written to a temporary file first
and renamed into place (`_Output`), so an interrupted run never leaves a truncated .torrent.
"""

from __future__ import annotations

import os
import sys

from . import __version__
from .cli import CliError

TYPE_CHECKING = False  # not typing's: `make` does not import typing (tests/test_make_startup.py)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "OPTIONS",
    "MakeArgs",
    "build_make_parser",
    "cmd_make",
    "parse_fast",
    "parse_size",
    "positive_int",
]

PROG = "torrentfs"


class _Usage(ValueError):
    """A value that does not convert (the lean parser gives up; argparse reports it)."""


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``262144``, ``256K``, ``256KiB``, ``1M``, ``1MiB``, ``1 mb`` -> bytes (binary units)."""
    body = text.strip()
    digits = len(body) - len(body.lstrip("0123456789"))
    number, unit = body[:digits], body[digits:].lstrip().lower()
    if unit.endswith("ib"):
        unit = unit[:-2]
    elif unit.endswith("b"):
        unit = unit[:-1]
    if not number or not number.isascii() or unit not in _SIZE_UNITS:
        raise _Usage(f"not a size: {text!r} (e.g. 262144, 256K, 1M)")
    return int(number) * _SIZE_UNITS[unit]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise _Usage(f"not a positive integer: {text!r}")
    return value


class _Option:
    """One option of `make`: its flags, where it goes, and how its value is read."""

    __slots__ = ("convert", "dest", "flags", "help", "kind", "metavar")

    def __init__(
        self,
        flags: tuple[str, ...],
        kind: str,
        help: str | None = None,
        *,
        metavar: str | None = None,
        convert: Callable[[str], object] | None = None,
    ) -> None:
        self.flags = flags
        self.dest = flags[-1].lstrip("-").replace("-", "_")
        self.kind = kind  # "value" (last one wins), "append" (a list) or "flag" (True if given)
        self.convert = convert
        self.metavar = metavar
        self.help = help


OPTIONS: tuple[_Option, ...] = (
    _Option(
        ("-o", "--output"),
        "value",
        "output file, '-' for stdout (default: NAME.torrent)",
        metavar="OUT",
    ),
    _Option(
        ("-a", "--announce"),
        "append",
        "tracker URL; repeat for more, each in its own tier",
        metavar="TRACKER",
    ),
    _Option(("-w", "--web-seed"), "append", "web seed URL (BEP 19); repeatable", metavar="URL"),
    _Option(("-p", "--private"), "flag", "set the private flag (BEP 27)"),
    _Option(
        ("-l", "--piece-length"),
        "value",
        "piece length, a power of two (e.g. 262144, 256K, 1M); default: chosen for 1000-2000 "
        "pieces",
        metavar="BYTES",
        convert=parse_size,
    ),
    _Option(("-c", "--comment"), "value", metavar="TEXT"),
    _Option(("-n", "--name"), "value", "torrent name (default: PATH's name)", metavar="NAME"),
    _Option(("-d", "--no-date"), "flag", "leave out the creation date"),
    _Option(
        ("--created-by",),
        "value",
        f"'created by' text, '' to leave out (default: 'torrentfs {__version__}')",
        metavar="TEXT",
    ),
    _Option(
        ("-t", "--threads"),
        "value",
        "hashing threads, each reading its own pieces (default: one per CPU core)",
        metavar="N",
        convert=positive_int,
    ),
    _Option(("-f", "--force"), "flag", "overwrite OUT if it exists"),
)
_BY_FLAG = {flag: option for option in OPTIONS for flag in option.flags}


class MakeArgs:
    """What `make` was asked to do (the attributes argparse's namespace has)."""

    path: str
    output: str | None
    announce: list[str]
    web_seed: list[str]
    private: bool
    piece_length: int | None
    comment: str | None
    name: str | None
    no_date: bool
    created_by: str | None
    threads: int | None
    force: bool

    def __init__(self, path: str) -> None:
        self.path = path
        for option in OPTIONS:
            setattr(self, option.dest, _default(option))
        self.func = cmd_make


def _default(option: _Option) -> object:
    return [] if option.kind == "append" else False if option.kind == "flag" else None


def parse_fast(argv: Sequence[str]) -> MakeArgs | None:
    """`make`'s arguments (after the word ``make``) in their plain forms, else None."""
    values: dict[str, object] = {}
    appended: dict[str, list[object]] = {}
    paths: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "-" or not arg.startswith("-"):
            paths.append(arg)
            continue
        value: str | None
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            if not eq:
                value = None
        else:
            flag, value = arg[:2], arg[2:] or None
            if value is not None and "=" in value:  # argparse reads -o=x as x: leave it to it
                return None
        option = _BY_FLAG.get(flag)
        if option is None:  # -h, --help, --, an unknown or abbreviated option
            return None
        if option.kind == "flag":
            if value is not None:  # -pd, --private=yes
                return None
            values[option.dest] = True
            continue
        if value is None:
            if i == len(argv) or (argv[i].startswith("-") and argv[i] != "-"):
                return None
            value = argv[i]
            i += 1
        try:
            converted = option.convert(value) if option.convert is not None else value
        except _Usage:
            return None
        if option.kind == "append":
            appended.setdefault(option.dest, []).append(converted)
        else:
            values[option.dest] = converted
    if len(paths) != 1:
        return None
    args = MakeArgs(paths[0])
    for dest, v in (values | appended).items():
        setattr(args, dest, v)
    return args


def build_make_parser(sub: _SubParsers) -> None:
    """The argparse subparser of `make`, from `OPTIONS` (help and usage errors)."""
    import argparse

    def checked(convert: Callable[[str], object]) -> Callable[[str], object]:
        def check(text: str) -> object:
            try:
                return convert(text)
            except _Usage as e:
                raise argparse.ArgumentTypeError(str(e)) from None

        check.__name__ = convert.__name__
        return check

    p = sub.add_parser(
        "make",
        help="make a v1 .torrent of a file or directory",
        description=(
            "Make a BitTorrent v1 torrent. Directories: every regular file, hidden ones too, "
            "sorted by path; empty directories are left out; symbolic links and special files "
            "are skipped (with a warning), never followed."
        ),
    )
    p.add_argument("path", metavar="PATH", help="file or directory to share")
    for option in OPTIONS:
        kwargs: dict[str, object] = {"dest": option.dest, "help": option.help}
        if option.kind == "flag":
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = option.metavar
            kwargs["default"] = _default(option)
            if option.kind == "append":
                kwargs["action"] = "append"
            if option.convert is not None:
                kwargs["type"] = checked(option.convert)
        p.add_argument(*option.flags, **kwargs)  # type: ignore[arg-type]
    p.set_defaults(func=cmd_make)


def cmd_make(args: MakeArgs) -> int:
    import time

    from .create import DEFAULT_CREATED_BY, choose_piece_length, create_torrent, scan_source
    from .progress import ProgressBar, format_size, show

    tree = scan_source(args.path, name=args.name)
    out: str = args.output if args.output is not None else f"{tree.name}.torrent"
    output = None if out == "-" else _Output(out, force=args.force, source=args.path)
    try:
        _warn_skipped(tree.skipped)
        with ProgressBar(tree.total_size, label=f"hashing {show(tree.name)}") as bar:
            data, info_hash = create_torrent(
                tree,
                trackers=args.announce,
                web_seeds=args.web_seed,
                private=args.private,
                piece_length=args.piece_length,
                comment=args.comment,
                created_by=DEFAULT_CREATED_BY
                if args.created_by is None
                else args.created_by or None,
                creation_date=None if args.no_date else int(time.time()),
                threads=args.threads,
                progress=lambda done, _total: bar.update(done),
            )
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            output.commit(data)
    finally:
        if output is not None:
            output.discard()
    piece_length = args.piece_length or choose_piece_length(tree.total_size)
    summary = (
        f"{out if output else '(stdout)'}: {show(tree.name)}, {len(tree.files):,} "
        f"file(s), {format_size(tree.total_size)}, {-(-tree.total_size // piece_length):,} "
        f"pieces of {format_size(piece_length)}, info hash {info_hash.hex()}"
    )
    print(summary, file=sys.stderr if output is None else sys.stdout)
    return 0


def _warn_skipped(skipped: Sequence[tuple[str, str]], shown: int = 5) -> None:
    from .progress import show

    for path, reason in skipped[:shown]:
        print(f"{PROG}: warning: skipped {reason}: {show(path)}", file=sys.stderr)
    if len(skipped) > shown:
        print(f"{PROG}: warning: skipped {len(skipped) - shown} more", file=sys.stderr)


class _Output:
    """The -o file: a temporary file next to it is created *before* hashing (so an unwritable
    destination fails at once, not after an hour of hashing) and renamed into place at the end
    (so a crash or Ctrl-C never leaves a truncated .torrent)."""

    def __init__(self, path: str, *, force: bool, source: str) -> None:
        self.path = path
        self.force = force
        if os.path.isdir(path):
            raise CliError(f"{path}: is a directory")
        if os.path.lexists(path):
            if not force:
                raise CliError(f"{path}: already exists (use --force to overwrite)")
            if _inside(path, source):
                raise CliError(f"{path}: refusing to overwrite a file being shared")
        directory, base = os.path.split(path)
        # Not tempfile.mkstemp: its 0600 is for secrets (a .torrent gets the umask's mode).
        self._temp = os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.part")
        try:
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as e:
            self._temp = ""
            raise CliError(f"{path}: cannot write: {e.strerror or e}") from None
        self._file = os.fdopen(fd, "wb")

    def commit(self, data: bytes) -> None:
        try:
            self._file.write(data)
            self._file.close()
            if not self.force and os.path.lexists(self.path):
                raise CliError(f"{self.path}: already exists (use --force to overwrite)")
            os.replace(self._temp, self.path)
        except OSError as e:
            raise CliError(f"{self.path}: cannot write: {e.strerror or e}") from None
        self._temp = ""

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._temp:
            try:
                os.unlink(self._temp)
            except OSError:
                pass
            self._temp = ""


def _inside(path: str, source: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(source)
    return real == top or real.startswith(top.rstrip("/") + "/")
