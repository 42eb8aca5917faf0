"""`torrentfs download` and `torrentfs seed` (L6): the engine as a plain BitTorrent client.

Both run one session with one torrent. `download` fetches every piece, verifies it, and exits 0
once the whole torrent is on disk; `seed` verifies local data and serves it until interrupted
(SIGINT/SIGTERM end it cleanly, announcing `stopped`).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import signal
import sys
import time
from pathlib import Path

import trio

from torrentfs.errors import ReadTimeout, TorrentfsError
from torrentfs.magnet import Magnet, parse_magnet
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.net.dht_node import DEFAULT_BOOTSTRAP
from torrentfs.session import (
    Session,
    SessionConfig,
    default_state_dir,
    open_session,
)
from torrentfs.torrent import Torrent, TorrentConfig
from torrentfs.types import PeerAddress
from torrentfs.watch import load_file

log = logging.getLogger("torrentfs")


def parse_host_port(text: str) -> PeerAddress:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return PeerAddress(host, int(port))


def parse_dht_nodes(text: str) -> tuple[PeerAddress, ...]:
    """``HOST:PORT`` items separated by commas, semicolons or spaces; ``none`` is no node."""
    items = text.replace(",", " ").replace(";", " ").split()
    if items == ["none"]:
        return ()
    nodes = []
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {item!r}")
        nodes.append(PeerAddress(host.strip("[]"), int(port)))
    return tuple(nodes)


def dht_bootstrap(value: tuple[PeerAddress, ...] | None) -> tuple[PeerAddress, ...]:
    """The ``--dht-bootstrap`` setting, or the public routers when none was given."""
    return DEFAULT_BOOTSTRAP if value is None else value


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the engine."""
    parser.add_argument(
        "--listen",
        type=parse_host_port,
        default=None,
        metavar="HOST:PORT",
        help="listen address and port (default: all interfaces, port 6881)",
    )
    parser.add_argument("--port", type=int, default=None, help="listen port (default 6881)")
    parser.add_argument("--no-dht", action="store_true", help="do not use the DHT")
    parser.add_argument(
        "--dht-port", type=int, default=None, help="UDP port of the DHT node (default: --port)"
    )
    parser.add_argument(
        "--dht-bootstrap",
        type=parse_dht_nodes,
        default=None,
        metavar="NODES",
        help="DHT bootstrap nodes, HOST:PORT[,HOST:PORT...], or none (default: the public routers)",
    )
    parser.add_argument("--dht-read-only", action="store_true", help="answer no DHT query (BEP 43)")
    parser.add_argument("--no-upload", action="store_true", help="never upload to peers")
    parser.add_argument("--no-trackers", action="store_true", help="do not announce to trackers")
    parser.add_argument(
        "--max-peers", type=int, default=50, help="connections per torrent (default 50)"
    )
    parser.add_argument(
        "--max-connections", type=int, default=200, help="connections in total (default 200)"
    )
    parser.add_argument(
        "--max-half-open", type=int, default=16, help="concurrent connection attempts (default 16)"
    )
    parser.add_argument(
        "--peer",
        action="append",
        type=parse_host_port,
        default=[],
        metavar="HOST:PORT",
        help="connect to this peer directly (repeatable)",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="resume and DHT state")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --log-level debug")


def session_config(args: argparse.Namespace, download_dir: Path) -> SessionConfig:
    host = None
    port = 6881
    if args.listen is not None:
        host = None if args.listen.host in ("0.0.0.0", "") else args.listen.host
        port = args.listen.port
    if args.port is not None:
        port = args.port
    return SessionConfig(
        download_dir=download_dir,
        state_dir=args.state_dir or default_state_dir(),
        listen_host=host,
        listen_port=port,
        upload=not args.no_upload,
        dht=not args.no_dht,
        dht_port=args.dht_port,
        dht_bootstrap=dht_bootstrap(args.dht_bootstrap),
        dht_read_only=args.dht_read_only,
        trackers=not args.no_trackers,
        max_connections=args.max_connections,
        max_half_open=args.max_half_open,
        torrent=TorrentConfig(max_peers=args.max_peers, upload=not args.no_upload),
        recheck=getattr(args, "recheck", False),
        drop_written=not getattr(args, "keep_page_cache", True),  # download only
    )


def setup_logging(args: argparse.Namespace) -> None:
    level = "debug" if args.verbose else (args.log_level or "info")
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_torrent_file(path: Path) -> Metainfo:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TorrentfsError(f"{path}: {exc.strerror or exc}")
    try:
        return parse_metainfo(data)
    except TorrentfsError as exc:
        raise TorrentfsError(f"{path}: invalid torrent: {exc}")


def _human_rate(rate: float) -> str:
    return f"{rate / 1e6:.1f} MB/s"


def _progress_line(torrent: Torrent, started: float) -> str:
    s = torrent.statistics()
    rate = s.download_rate
    left = s.total_size - s.verified_bytes
    eta = f"{left / rate:.0f}s" if rate > 0 else "?"
    return (
        f"{s.name}: {s.progress * 100:5.1f}%  {_human_rate(rate)} down  "
        f"{_human_rate(s.upload_rate)} up  {s.peers} peers  ETA {eta}"
    )


async def _report_progress(torrent: Torrent, interval: float) -> None:
    tty = sys.stderr.isatty()
    started = time.monotonic()
    while True:
        await trio.sleep(0.5 if tty else interval)
        line = _progress_line(torrent, started)
        if tty:
            print(f"\r\x1b[K{line}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def _check_stats(session: Session, torrent: Torrent) -> dict[str, int]:
    """How the start found verified data: resume state, then hashing what else was on disk."""
    check = session.checks.get(torrent.info_hash)
    if check is None:
        return {}
    return {
        "pieces_resumed": check.trusted,
        "pieces_hashed_at_start": check.hashed,
        "pieces_found_at_start": check.found,
    }


async def _until_error(torrent: Torrent, scope: trio.CancelScope) -> None:
    """A storage (or internal) error ends the download (disk full, data dir unwritable...)."""
    while torrent.error is None:
        await trio.sleep(0.25)
    scope.cancel()


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def load_download_source(text: str) -> Metainfo | Magnet:
    """A magnet URI, a ``.magnet`` file (its first magnet) or a ``.torrent`` file."""
    if text.startswith("magnet:"):
        try:
            return parse_magnet(text)
        except TorrentfsError as exc:
            raise TorrentfsError(f"invalid magnet URI: {exc}") from None
    path = Path(text)
    if path.name.lower().endswith(".magnet"):
        try:
            items = load_file(path)
        except OSError as exc:
            raise TorrentfsError(f"{path}: {exc.strerror or exc}") from None
        except TorrentfsError as exc:
            raise TorrentfsError(f"{path}: {exc}") from None
        magnet = items[0].magnet
        assert magnet is not None
        return magnet
    return load_torrent_file(path)


async def _wait_metadata(
    session: Session, magnet: Magnet, args: argparse.Namespace, out: Path
) -> Torrent | None:
    """Resolve a magnet (BEP 9) until its torrent exists; None if interrupted."""
    handle = await session.add_magnet(magnet, data_dir=out, download_all=True)
    if handle.fetcher is not None:
        handle.fetcher.add_peers(list(args.peer), "command line")
    torrent: Torrent | None = None
    async with trio.open_nursery() as nursery:

        async def interrupted() -> None:
            await _wait_for_signal()
            nursery.cancel_scope.cancel()

        nursery.start_soon(interrupted)
        while True:
            try:
                torrent = await handle.wait_torrent(timeout=args.progress_interval)
                break
            except ReadTimeout:
                log.info("%s: fetching metadata (%s)", handle.name, handle.summary())
        nursery.cancel_scope.cancel()
    return torrent


async def run_download(args: argparse.Namespace) -> int:
    source = load_download_source(args.torrent)
    out: Path = args.output
    config = session_config(args, out)
    wall0 = time.monotonic()
    metadata_seconds: float | None = None
    async with open_session(config) as session:
        clock0 = trio.current_time()
        if isinstance(source, Magnet):
            found = await _wait_metadata(session, source, args, out)
            if found is None:
                print("torrentfs: download interrupted", file=sys.stderr)
                return 130
            torrent = found
            metadata_seconds = trio.current_time() - clock0
        else:
            torrent = await session.add_torrent(source, data_dir=out, download_all=True)
        metainfo = torrent.metainfo
        torrent.add_peers(list(args.peer), "command line")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_report_progress, torrent, args.progress_interval)

            async def interrupted() -> None:
                await _wait_for_signal()
                nursery.cancel_scope.cancel()

            nursery.start_soon(interrupted)
            nursery.start_soon(_until_error, torrent, nursery.cancel_scope)
            await torrent.wait_complete()
            nursery.cancel_scope.cancel()
        if sys.stderr.isatty():
            print(file=sys.stderr)
        if not torrent.complete:
            if torrent.error is not None:
                print(f"torrentfs: {metainfo.name}: {torrent.error}", file=sys.stderr)
                return 1
            print("torrentfs: download interrupted", file=sys.stderr)
            return 130
        elapsed = time.monotonic() - wall0
        stats = torrent.statistics()
        first = (
            torrent.first_piece_at - torrent.started_at
            if torrent.first_piece_at is not None
            else None
        )
        first_at = (
            time.time() - (trio.current_time() - torrent.first_piece_at)
            if torrent.first_piece_at is not None
            else None
        )
        print(
            f"{metainfo.name}: complete, {stats.total_size / 1e6:.1f} MB in {elapsed:.1f} s "
            f"({stats.total_size / max(elapsed, 1e-9) / 1e6:.1f} MB/s), "
            f"{stats.hash_failures} hash failures",
            file=sys.stderr,
        )
        if args.json_stats:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(
                json.dumps(
                    {
                        "seconds": elapsed,
                        "first_piece_seconds": first,
                        "first_piece_at": first_at,
                        "metadata_seconds": metadata_seconds,
                        "metadata_at": (
                            None
                            if metadata_seconds is None
                            else time.time() - (trio.current_time() - clock0 - metadata_seconds)
                        ),
                        "first_piece_since_start": (
                            None
                            if torrent.first_piece_at is None
                            else torrent.first_piece_at - clock0
                        ),
                        "bytes": stats.total_size,
                        "downloaded": stats.downloaded,
                        "hash_failures": stats.hash_failures,
                        **_check_stats(session, torrent),
                        "cpu_seconds": usage.ru_utime + usage.ru_stime,
                        "peak_rss_bytes": usage.ru_maxrss * 1024,
                    }
                ),
                flush=True,
            )
    return 0


async def run_seed(args: argparse.Namespace) -> int:
    metainfo = load_torrent_file(args.torrent)
    data: Path = args.data
    config = session_config(args, data)
    content = data / metainfo.name
    if not content.exists():
        raise TorrentfsError(f"{content}: no such file or directory (seed needs the data)")
    async with open_session(config) as session:
        torrent = await session.add_torrent(metainfo, data_dir=data, recheck=True)
        s = torrent.statistics()
        if s.pieces_verified == 0:
            print(f"torrentfs: {content}: none of the torrent's data is there", file=sys.stderr)
            return 2
        if s.pieces_verified < s.num_pieces:
            log.warning(
                "%s: only %d of %d pieces verified in %s; seeding what is there",
                metainfo.name,
                s.pieces_verified,
                s.num_pieces,
                data,
            )
        log.info(
            "%s: seeding on port %d (%d/%d pieces)",
            metainfo.name,
            session.listen_port,
            s.pieces_verified,
            s.num_pieces,
        )
        if args.ready_file:
            args.ready_file.write_text(f"{session.listen_port}\n")
        torrent.add_peers(list(args.peer), "command line")
        await _wait_for_signal()
    return 0


def build_download_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download a whole torrent (or a magnet) to a directory")
    p.add_argument("torrent", metavar="TORRENT", help=".torrent file, .magnet file or magnet URI")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="directory to save into (default: .)"
    )
    p.add_argument("--recheck", action="store_true", help="hash all existing data first")
    p.add_argument("--json-stats", action="store_true", help="print a JSON stats line at the end")
    p.add_argument(
        "--keep-page-cache",
        action="store_true",
        help="leave downloaded data in the page cache (default: write it behind and drop it)",
    )
    p.add_argument("--progress-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    add_engine_options(p)
    p.set_defaults(func=cmd_download)


def build_seed_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seed", help="verify local data and seed it until interrupted")
    p.add_argument("torrent", type=Path, metavar="TORRENT")
    p.add_argument(
        "--data", type=Path, required=True, help="directory holding the torrent's content"
    )
    p.add_argument("--ready-file", type=Path, default=None, help=argparse.SUPPRESS)
    add_engine_options(p)
    p.set_defaults(func=cmd_seed)


def cmd_download(args: argparse.Namespace) -> int:
    setup_logging(args)
    if args.output is None:
        args.output = Path.cwd()
    return trio.run(run_download, args)


def cmd_seed(args: argparse.Namespace) -> int:
    setup_logging(args)
    return trio.run(run_seed, args)
