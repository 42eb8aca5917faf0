"""The composition root of the mount (L6): ``torrentfs [options] METAINFO_DIR MOUNTPOINT``.

`main_mount(argv)` parses the options, then runs one trio nursery holding the engine session,
the metainfo folder watcher and the FUSE mount (DESIGN.md §1). Nothing else knows all the parts.

Shutdown (SIGINT, SIGTERM, or ``fusermount3 -u``/``-uz`` from outside) is ordered so that it
always ends within a few seconds, even with readers blocked on a silent swarm (DESIGN.md §3
rule 4):

1. stop accepting reads, and end every read in flight with ``EIO`` (`FsOperations.shutdown`);
2. end the FUSE loop (bounded: cancelled after a short grace);
3. detach the mount (lazily, so open files cannot block it);
4. stop the engine (its torrents, trackers' ``stopped`` announces, resume state) - bounded by
   the session itself.

The mount is detached before the engine stops because the engine's shutdown may wait up to
5 s for trackers, and the unmount must not; readers were already answered in step 1.

A plain ``fusermount3 -u`` fails with ``EBUSY`` (the kernel's answer) while any file is open,
e.g. by a blocked reader; ``fusermount3 -uz`` detaches at once but leaves the FUSE connection up
until the last file is closed. `_on_detach` notices the mount point leaving the mount table
(`wait_detached`) and runs the same shutdown, so blocked readers get ``EIO`` within a second.
"""

from __future__ import annotations

import argparse
import errno
import logging
import logging.handlers
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from torrentfs import config
from torrentfs.budget import DiskCache
from torrentfs.daemon import Readiness, daemonize, report_status
from torrentfs.engine_cli import dht_bootstrap, parse_dht_nodes
from torrentfs.errors import TorrentfsError, TorrentRemoved
from torrentfs.eviction import parse_pin_value, readahead_cap
from torrentfs.fs.drop_behind import PageDropper, drop_lag
from torrentfs.fs.mount import (
    DEFAULT_KERNEL_READAHEAD,
    Mount,
    fuse_options,
    lazy_unmount,
    wait_detached,
)
from torrentfs.fs.operations import FsOperations
from torrentfs.fs.tree import FsTree
from torrentfs.magnet_handle import MagnetHandle, supersede_magnet
from torrentfs.readahead import MiB, ReadaheadPolicy
from torrentfs.reader import DEFAULT_READ_TIMEOUT
from torrentfs.session import Session, SessionConfig, open_session
from torrentfs.status import MountStatus
from torrentfs.storage.files import DROP_LAG
from torrentfs.torrent import TorrentConfig
from torrentfs.watch import MetainfoItem, MetainfoWatcher

log = logging.getLogger("torrentfs")

_DEFAULT_POLICY = ReadaheadPolicy()
DEFAULT_PIECE_MEMORY = 32 * MiB
"""`--piece-memory`: twice the kernel's default readahead of the mount plus 16 MiB, so the
pieces a stream's in-flight reads are about to ask for stay held (`torrentfs.piece_memory`)."""

PROG = "torrentfs"
EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE, as the CLI
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


class UsageError(TorrentfsError):
    """A bad option value or path given to the mount command."""


def parse_size(text: str) -> int:
    """``4M``, ``512k``, ``1GiB``, ``1048576`` -> bytes (binary multiples)."""
    m = _SIZE.match(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4M, 512K, 1G)")
    value = float(m.group(1)) * (1 << (10 * " kmgt".index((m.group(2) or " ").lower())))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value)


def _size_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else parse_size(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _listen(text: str) -> tuple[str | None, int | None]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, None
    try:
        return host.strip("[]") or None, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not HOST[:PORT]: {text!r}") from None


def build_mount_parser() -> argparse.ArgumentParser:
    """The mount command's parser; its long options are also the config keys (`config`)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [options] METAINFO_DIR MOUNTPOINT | {PROG} CONFIG.toml [options]",
        description="Mount every .torrent/.magnet file of METAINFO_DIR at MOUNTPOINT, "
        "read-only, downloading only what is read. Every long option is also a key of the "
        "TOML config file and a -o key=value mount option (command line > -o > file).",
    )
    p.add_argument("metainfo_dir", metavar="METAINFO_DIR", type=Path, nargs="?")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path, nargs="?")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML settings (or: a config file as the only argument)")  # fmt: skip
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground (default: daemonise once mounted)")  # fmt: skip
    p.add_argument("--log-file", type=Path, metavar="FILE",
                   help="when daemonised, log here instead of syslog")  # fmt: skip
    p.add_argument("--system", action="store_true",
                   help="system instance: data in /var/cache/torrentfs, state in "
                   "/var/lib/torrentfs (the default when run as root)")  # fmt: skip
    p.add_argument("--clear-stale", action="store_true",
                   help="only detach a stale mount at MOUNTPOINT, then exit")  # fmt: skip
    p.add_argument("--download-dir", type=Path, default=None,
                   help="where data is kept (default: ~/.cache/torrentfs, or "
                   "/var/cache/torrentfs for a system instance)")  # fmt: skip
    p.add_argument("--state-dir", type=Path, default=None,
                   help="resume state (default: ~/.local/state/torrentfs, or "
                   "/var/lib/torrentfs for a system instance)")  # fmt: skip
    p.add_argument("--read-timeout", type=_positive_float, default=DEFAULT_READ_TIMEOUT,
                   metavar="SECONDS",
                   help="a read waits at most this long, then fails with EIO "
                   "(default: %(default)g)")  # fmt: skip
    p.add_argument("--readahead-min", type=parse_size, default=_DEFAULT_POLICY.min_bytes,
                   metavar="SIZE", help="smallest readahead window per open file (4M)")  # fmt: skip
    p.add_argument("--readahead-max", type=parse_size, default=_DEFAULT_POLICY.max_bytes,
                   metavar="SIZE", help="largest readahead window per file (128M)")  # fmt: skip
    p.add_argument("--readahead-seconds", type=_positive_float,
                   default=_DEFAULT_POLICY.seconds_ahead, metavar="SECONDS",
                   help="readahead: seconds of data ahead at the download rate "
                   "(default: %(default)g)")  # fmt: skip
    p.add_argument("--cache-size", type=parse_size, default=None, metavar="SIZE",
                   help="disk budget: keep the download dir within SIZE (e.g. 128M, 50G), "
                   "evicting the least recently read pieces nobody needs "
                   "(default: no limit)")  # fmt: skip
    p.add_argument("--pin", action="append", default=[], metavar="PATTERN",
                   help="keep a torrent or file whole (downloaded, never evicted): its path in "
                   "the mount (shell pattern) or info-hash; repeatable")  # fmt: skip
    p.add_argument("--kernel-readahead", type=_size_or_zero, default=DEFAULT_KERNEL_READAHEAD,
                   metavar="SIZE",
                   help="kernel readahead of the mount: larger FUSE reads, several in flight "
                   "(default 8M; needs root; 0 keeps the kernel's 128K)")  # fmt: skip
    p.add_argument("--piece-memory", type=_size_or_zero, default=DEFAULT_PIECE_MEMORY,
                   metavar="SIZE",
                   help="verified pieces kept in memory for reads: a waiting read is served "
                   "as soon as its piece is verified, without waiting for the write "
                   "(default 32M; 0: off)")  # fmt: skip
    p.add_argument("--keep-page-cache", action="store_true",
                   help="leave downloaded data in the page cache (default: write it behind and "
                   "drop it once every reader is past it; a file streamed while it downloads "
                   "keeps only its last pages in the mount's page cache)")  # fmt: skip
    p.add_argument("--direct-io", action="store_true",
                   help="files still downloading bypass the kernel's page cache (FUSE direct "
                   "I/O): less CPU per GiB for large sequential reads (dd bs=1M, players), "
                   "but every read of the app is one round trip (slow for 32K readers such as "
                   "sha256sum) and shared mmap of such a file fails with ENODEV; complete "
                   "files always use the page cache")  # fmt: skip
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="mount options, comma-separated: any setting as key=value, FUSE options "
                   "(allow_other, default_permissions, max_read=N...), generic mount options "
                   "(defaults, nofail, _netdev, x-systemd.*: ignored); always ro, "
                   "fsname=torrentfs, subtype=torrentfs")  # fmt: skip
    p.add_argument("--port", type=int, default=None, help="BitTorrent listen port (default 6881)")
    p.add_argument("--listen", type=_listen, default=None, metavar="HOST[:PORT]",
                   help="listen address (default: every interface)")  # fmt: skip
    p.add_argument("--no-upload", action="store_true", help="never upload (leech only)")
    p.add_argument("--no-dht", action="store_true", help="do not use the DHT")
    p.add_argument("--dht-port", type=int, default=None,
                   help="UDP port of the DHT node (default: the listen port)")  # fmt: skip
    p.add_argument("--dht-bootstrap", type=parse_dht_nodes, default=None, metavar="NODES",
                   help="DHT bootstrap nodes: HOST:PORT items separated by ';' or ',' "
                   "(';' inside -o), or none (default: the public routers)")  # fmt: skip
    p.add_argument("--dht-read-only", action="store_true",
                   help="answer no DHT query (BEP 43); lookups still work")  # fmt: skip
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv: debug)")
    return p


@dataclass
class MountSettings:
    """The merged settings of one mount (`resolve_settings`): argparse's namespace plus FUSE
    options; every path absolute (the daemon changes to ``/``)."""

    args: argparse.Namespace
    fuse: list[str] = field(default_factory=list)


def resolve_settings(argv: Sequence[str]) -> MountSettings:
    """Command line > ``-o`` > config file > defaults. Raises `ConfigError`/`UsageError`;
    argparse's own usage errors raise ``SystemExit(2)`` after printing."""
    parser = build_mount_parser()
    args = parser.parse_args(list(argv))
    cli = config.explicit_dests(build_mount_parser(), argv)
    if args.metainfo_dir is not None and args.mountpoint is None:
        if args.config is not None or args.metainfo_dir.expanduser().is_dir():
            raise UsageError(f"{args.metainfo_dir}: MOUNTPOINT missing")
        args.config, args.metainfo_dir = args.metainfo_dir, None
        cli.discard("metainfo_dir")
    specs = config.option_specs(parser)
    file_layer = None
    if args.config is not None:
        file_layer = config.load_file(args.config.expanduser(), specs)
    options_layer = config.from_options(config.split_options(args.options), specs)
    merged, fuse = config.merge(args, cli, options_layer, file_layer)
    if merged.metainfo_dir is None or merged.mountpoint is None:
        raise UsageError(
            "METAINFO_DIR and MOUNTPOINT are needed (as arguments, or metainfo_dir and "
            "mountpoint in the config file)"
        )
    download_dir, state_dir = config.default_dirs(
        system=config.is_system_instance(system_flag=merged.system)
    )
    merged.download_dir = merged.download_dir or download_dir
    merged.state_dir = merged.state_dir or state_dir
    for name in ("metainfo_dir", "mountpoint", "download_dir", "state_dir", "log_file"):
        value = getattr(merged, name)
        if value is not None:
            setattr(merged, name, Path(os.path.abspath(Path(value).expanduser())))
    return MountSettings(merged, fuse)


class Library:
    """Torrents come and go with the metainfo folder: engine first, then the tree.

    A magnet shows at once as a directory named after its ``dn`` (or info-hash), status
    "fetching metadata"; a task started in `nursery` fills it in when the session has the
    metadata (BEP 9). A ``.torrent`` with the same info-hash supersedes the magnet.
    """

    def __init__(self, session: Session, ops: FsOperations, nursery: trio.Nursery) -> None:
        self.session = session
        self.ops = ops
        self.nursery = nursery
        self.sources: dict[bytes, Path] = {}
        """info-hash -> the metainfo file it came from (where its pin is written)."""

    async def add(self, item: MetainfoItem) -> None:
        self.sources[item.key] = item.source
        if item.metainfo is not None:
            if item.key in self.session.magnets:  # the .torrent supersedes the magnet
                self.ops.remove_torrent(item.key)
                supersede_magnet(self.session, item.key)
            # Shown at once: data found on disk is hashed behind it (readers' pieces first).
            await self.session.add_torrent(item.metainfo, wait_checked=False)
            self.ops.add_torrent(item.metainfo)
            return
        assert item.magnet is not None
        self.ops.add_placeholder(item.key, item.name, item.uri or "")
        try:
            handle = await self.session.add_magnet(item.magnet)
        except TorrentfsError as exc:
            self.ops.magnet_failed(item.key, str(exc))
            raise
        if handle.torrent is not None:
            self.ops.fill_magnet(item.key, handle.torrent.metainfo)
        else:
            self.nursery.start_soon(self._fill_when_resolved, handle)

    async def _fill_when_resolved(self, handle: MagnetHandle) -> None:
        try:
            torrent = await handle.wait_torrent(timeout=None)  # ends on removal or shutdown
        except TorrentRemoved:
            return
        except TorrentfsError as exc:
            self.ops.magnet_failed(handle.info_hash, handle.error or str(exc))
            return
        if self.session.magnets.get(handle.info_hash) is handle:
            self.ops.fill_magnet(handle.info_hash, torrent.metainfo)

    async def remove(self, item: MetainfoItem) -> None:
        self.sources.pop(item.key, None)
        await self.ops.drop_torrent(item.key)  # entries vanish, open handles get EIO
        await self.session.remove_torrent(item.key)  # the data stays on disk


PIN_XATTR = "user.torrentfs.pin"
PIN_SCAN_INTERVAL = 2.0


async def watch_pins(library: Library, cache: DiskCache) -> None:
    """Pins written on metainfo files (``setfattr -n user.torrentfs.pin``) -> the disk cache.

    The mount is read-only, so a pin lives on the torrent's own file in the metainfo folder
    (it survives restarts with it); read every `PIN_SCAN_INTERVAL` seconds.
    """
    while True:
        sources = dict(library.sources)
        values = await trio.to_thread.run_sync(_read_pins, sources)
        for key, value in values.items():
            cache.set_source_pin(key, None if value is None else parse_pin_value(value))
        await trio.sleep(PIN_SCAN_INTERVAL)


def _read_pins(sources: dict[bytes, Path]) -> dict[bytes, bytes | None]:
    values: dict[bytes, bytes | None] = {}
    for key, path in sources.items():
        try:
            values[key] = os.getxattr(path, PIN_XATTR)
        except OSError:
            values[key] = None  # no pin (ENODATA), or the file is gone / has no xattrs
    return values


def _session_config(args: argparse.Namespace) -> SessionConfig:
    host: str | None = None
    port = 6881
    if args.listen is not None:
        host, listen_port = args.listen
        if listen_port is not None:
            port = listen_port
    if args.port is not None:
        port = args.port
    upload = not args.no_upload
    return SessionConfig(
        download_dir=args.download_dir.expanduser(),
        state_dir=args.state_dir.expanduser(),
        listen_host=host,
        listen_port=port,
        upload=upload,
        dht=not args.no_dht,
        dht_port=args.dht_port,
        dht_bootstrap=dht_bootstrap(args.dht_bootstrap),
        dht_read_only=args.dht_read_only,
        torrent=TorrentConfig(upload=upload),
        disk_cache=True,
        cache_size=args.cache_size,
        pins=tuple(args.pin),
        drop_written=not args.keep_page_cache,
        drop_lag=_drop_lag(args),
        piece_memory=args.piece_memory,
    )


def _drop_lag(args: argparse.Namespace) -> int:
    """Write-behind for the mount: a piece's pages leave the data file's page cache once this
    many bytes were written after it -- the download's lag (`storage.files.DROP_LAG`) plus the
    kernel's readahead, not the whole readahead window. A reader waiting for a piece, and one
    close behind the download, is served from `PieceMemory` (the piece's own buffer), not from
    the page cache; a reader further behind reads the piece back from disk (verified bytes all
    the same). A longer lag (it was the readahead window + slack + 40 MiB: 184 MiB by default)
    first-touched that much fresh page-cache memory per stream, and on this project's VMs every
    such frame costs a host-side fault inside ``pwrite``: in ``perf record -a`` of a cold 1 GiB
    ``dd`` the copy into the data file (``copy_folio_from_iter_atomic``) fell from ~870 samples
    to ~165 (the download: ~210)."""
    return args.kernel_readahead + DROP_LAG


async def run_mount(
    args: argparse.Namespace, fuse: Sequence[str] = (), readiness: Readiness | None = None
) -> int:
    """Everything of one mount, in one nursery; returns the exit status.

    ``readiness`` is told the mount is live once the kernel has it and the metainfo folder's
    first pass is in the tree: ``mount`` then returns with the torrents already visible.
    """
    ready = readiness if readiness is not None else Readiness()
    metainfo_dir: Path = args.metainfo_dir.expanduser()
    if not metainfo_dir.is_dir():
        raise UsageError(f"{metainfo_dir}: not a directory")
    options = list(fuse)
    allow_other = "allow_other" in options
    fuse_opts = fuse_options(
        allow_other=allow_other, extra=[o for o in options if o != "allow_other"]
    )
    readahead_max = args.readahead_max
    if args.cache_size is not None:  # windows must fit the budget (`eviction.readahead_cap`)
        readahead_max = min(readahead_max, readahead_cap(args.cache_size))
    readahead = ReadaheadPolicy(
        min_bytes=min(args.readahead_min, readahead_max),
        max_bytes=readahead_max,
        seconds_ahead=args.readahead_seconds,
        # The kernel's readahead requests arrive out of order by up to about twice its size.
        slack_bytes=max(_DEFAULT_POLICY.slack_bytes, 2 * args.kernel_readahead),
    )
    async with open_session(_session_config(args)) as session:
        session.prepare_http()  # the first read's announce must not wait for imports
        ops = FsOperations(
            FsTree(mount_time=int(time.time())),
            session,
            read_timeout=args.read_timeout,
            readahead=readahead,
            direct_io=args.direct_io,
        )
        mount = Mount(
            ops, args.mountpoint.expanduser(), fuse_opts, kernel_readahead=args.kernel_readahead
        )
        if not args.keep_page_cache:
            ops.page_dropper = PageDropper(
                mount.mountpoint,
                lambda: ops.mounted and not ops.closing,
                lag=drop_lag(args.kernel_readahead),
            )
        mount.mount()
        status = 0
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_on_signals, ops, mount, ready)
                nursery.start_soon(_on_detach, ops, mount, ready)

                async def serve() -> None:
                    nonlocal status
                    try:
                        await mount.serve()
                    except OSError as exc:
                        log.error("FUSE loop failed: %s", exc)
                        status = 1
                    nursery.cancel_scope.cancel()

                nursery.start_soon(serve)
                library = Library(session, ops, nursery)
                ops.status = MountStatus(session, ops)
                watcher = MetainfoWatcher(metainfo_dir, library)
                await nursery.start(watcher.run)  # the first pass is in the tree
                if session.cache is not None:
                    nursery.start_soon(watch_pins, library, session.cache)
                ready.ready(f"mounted at {mount.mountpoint}")
                nursery.start_soon(report_status, session, ready)
        finally:
            ready.stopping()
            started = time.monotonic()
            ops.shutdown()  # 1. no more reads; blocked readers get EIO
            mount.terminate()  # 2. (already ended unless we got here by an error)
            mount.unmount()  # 3. lazily: never blocked by open files
            log.info("unmounted in %.1f s; stopping the engine", time.monotonic() - started)
    return status  # 4. leaving open_session stopped the engine


async def _on_signals(ops: FsOperations, mount: Mount, ready: Readiness) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            await _stop_serving(ops, mount, ready)


async def _on_detach(ops: FsOperations, mount: Mount, ready: Readiness) -> None:
    await wait_detached(mount.mountpoint)
    if mount.terminated:
        return
    log.info("%s was detached from outside: shutting down", mount.mountpoint)
    await _stop_serving(ops, mount, ready)


async def _stop_serving(ops: FsOperations, mount: Mount, ready: Readiness) -> None:
    """Blocked readers get ``EIO`` (and the kernel's retries of them), then the loop ends."""
    ready.stopping()
    ops.shutdown()
    await ops.wait_drained()
    mount.terminate()


def _setup_logging(verbose: int, *, syslog: bool = False) -> None:
    level = logging.INFO if verbose <= 1 else logging.DEBUG
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    )
    if syslog and os.path.exists("/dev/log"):
        # Daemonised without a log file: the journal (or syslog) keeps the story.
        try:
            handler = logging.handlers.SysLogHandler(
                "/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
            handler.setFormatter(logging.Formatter(f"{PROG}[{os.getpid()}]: %(name)s: %(message)s"))
        except OSError:
            pass
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if verbose == 0:
        # One line per event: the engine's per-peer chatter only with -v.
        for noisy in ("torrentfs.torrent", "torrentfs.net", "torrentfs.session", "pyfuse3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


def clear_stale(mountpoint: Path) -> int:
    """``--clear-stale``: detach a dead mount left at ``mountpoint`` (a crashed instance)."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            return 0  # missing or unreadable: the mount itself will say so
        if not lazy_unmount(mountpoint):
            print(f"{PROG}: {mountpoint}: stale mount could not be detached", file=sys.stderr)
            return 1
        print(f"{PROG}: {mountpoint}: stale mount detached", file=sys.stderr)
    return 0


def main_mount(argv: Sequence[str]) -> int:
    """``torrentfs [options] METAINFO_DIR MOUNTPOINT``; returns the exit status.

    Without ``-f`` the process daemonises and the calling process exits only once the mount
    is live (0), or failed (its status and one line of reason) - what ``mount`` expects.
    """
    try:
        settings = resolve_settings(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except TorrentfsError as exc:
        print(f"{PROG}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    args = settings.args
    if args.clear_stale:
        return clear_stale(args.mountpoint)
    if not args.metainfo_dir.is_dir():
        print(f"{PROG}: {args.metainfo_dir}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    readiness = Readiness()
    if not args.foreground:
        readiness = daemonize(log_file=args.log_file)  # only the child returns
    _setup_logging(args.verbose, syslog=not args.foreground and args.log_file is None)
    try:
        status = trio.run(run_mount, args, settings.fuse, readiness)
    except BaseException as exc:
        user_error = _user_error(exc)
        if user_error is None:
            readiness.failed(EXIT_BUG, f"internal error: {exc!r}")
            raise
        message = " ".join(str(user_error).split())
        readiness.failed(EXIT_USAGE, message)
        print(f"{PROG}: {message}", file=sys.stderr)
        return EXIT_USAGE
    readiness.failed(status or 1, "the mount ended before it was ready")
    return status


def _user_error(exc: BaseException) -> BaseException | None:
    """The user error (bad path, busy mount point...) inside nursery exception groups, if any."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TorrentfsError | OSError):
        return exc
    return None


__all__ = [
    "Library",
    "MountSettings",
    "build_mount_parser",
    "clear_stale",
    "main_mount",
    "parse_size",
    "resolve_settings",
    "run_mount",
]
