#!/usr/bin/python3
"""A third-party BitTorrent peer for interop tests and benchmarks: python3-libtorrent 2.0.

Run it with Debian's ``/usr/bin/python3`` (where ``python3-libtorrent`` lives), never with the
project's venv.  It is deliberately *not* our engine: tests prove torrentfs interoperates with a
widely used implementation of BEP 3 (peer wire), BEP 6 (fast extension), BEP 10/9 (extension
protocol, metadata exchange), BEP 15 (UDP tracker) and BEP 5 (DHT).

Modes::

    lt_peer.py seed  TORRENT --data DIR  [--listen 127.0.0.2:0] [--check | --trust | --corrupt]
    lt_peer.py leech TORRENT|MAGNET --out DIR [--listen 127.0.0.3:0] [--sequential] [--no-recheck]
    lt_peer.py dht [--listen 127.0.0.4:0] [--dht-bootstrap HOST:PORT]... [--announce HEX]...
                   [--get-peers HEX]... [--interval SECONDS]

Common options: ``--tracker-less`` (drop every tracker from the torrent), ``--peer HOST:PORT``
(repeatable; connect to that peer directly), ``--upload-limit``/``--download-limit`` (bytes/s;
they spare loopback peers, as libtorrent does, unless ``--limit-local`` is given),
``--dht`` / ``--dht-bootstrap HOST:PORT`` (BEP 5 on the listen port; off by default),
``--timeout SECONDS``, ``--no-pex`` (BEP 11 off for this torrent), ``--report-peers`` (a
``{"event": "peer", "ip", "port", "source", "pex"}`` line per connected peer, ``pex`` when it was
learned through BEP 11).

Guarantees (what the fixtures rely on):

* stdout carries JSON lines only.  The first is ``{"event": "ready", "host": H, "port": P, ...}``,
  printed once the listen socket is open, so callers wait on it instead of sleeping.
* ``leech`` prints ``{"event": "done", "seconds": ..., "bytes": ..., "first_piece_seconds": ...,
  "first_piece_at": <unix time>, "started_at": <unix time>, "peak_rss": <bytes>, "recheck": ...}``
  and exits 0 only when every piece is downloaded *and* (unless ``--no-recheck``) a full recheck
  of the written files passes; exit 1 on failure or timeout (with a ``{"event": "error"}`` line).
* ``dht`` is a pure DHT node (no torrent) on the listen port, set up for a loopback network
  (no IP restrictions, no BEP 42 enforcement, 8-node buckets, no rate limits worth the name).
  Every ``--interval`` seconds (default 2) it announces itself (its listen port) for each
  ``--announce`` info-hash (through a metadata-less torrent) and looks up each ``--get-peers``
  one; it prints
  ``{"event": "get_peers", "info_hash": HEX, "peers": [[host, port], ...]}`` for every lookup
  answered and ``{"event": "announce_in", "info_hash": HEX, "ip": H, "port": P}`` for every
  announce_peer it accepted from another node.  Runs until SIGTERM/SIGINT.
* ``seed`` runs until SIGTERM/SIGINT and exits 0 after removing its session cleanly.
  ``--check`` hashes the data first and fails (exit 1) unless it is complete.  Plain seeding uses
  ``seed_mode`` (libtorrent then verifies each piece lazily on its first request).  ``--trust``
  also marks every piece verified, so no hashing at all (benchmarks: the seeder's CPU is not what
  is measured).  ``--corrupt`` implies ``--trust``: data with flipped bytes is sent as is, a
  deliberately bad peer.
* Isolation per ``LOOPBACK-SWARMS.md``: no DHT (unless asked), LSD, UPnP, NAT-PMP; uTP off both
  ways; no public DHT bootstrap; several connections per IP allowed.  Incoming and outgoing
  connections (and tracker announces) use the ``--listen`` address, so a tracker records the
  address the peer really listens on.

Stderr carries human-readable log lines (errors, tracker replies, hash failures) for test failure
messages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
from typing import Any

import libtorrent as lt  # type: ignore[import-not-found,unused-ignore]

_STOP = False


def _on_signal(signum: int, frame: object) -> None:
    global _STOP
    _STOP = True


def emit(obj: dict[str, Any]) -> None:
    """One JSON object per stdout line, flushed at once (the parent reads line by line)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"lt_peer[{os.getpid()}]: {msg}\n")
    sys.stderr.flush()


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def peak_rss_bytes() -> int:
    """VmHWM of this process (the kernel's high-water mark of resident memory)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_session(args: argparse.Namespace) -> Any:
    host, port = args.listen
    dht = bool(args.dht or args.dht_bootstrap)
    mask = (
        lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.storage_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.piece_progress_notification
        | lt.alert.category_t.peer_notification
    )
    if dht:
        mask |= lt.alert.category_t.dht_notification
        mask |= lt.alert.category_t.dht_operation_notification  # get_peers replies
    settings: dict[str, Any] = {
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": host,
        "enable_dht": dht,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "dht_bootstrap_nodes": ",".join(f"{h}:{p}" for h, p in args.dht_bootstrap),
        # Every DHT node of a loopback swarm sits in 127.0.0.0/24 and has no BEP 42 node id.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        "dht_extended_routing_table": False,
        "dht_block_ratelimit": 1000,
        "dht_upload_rate_limit": 1 << 20,
        # Announce torrents to the DHT every few seconds, not every 15 minutes.
        "dht_announce_interval": 5,
        "alert_mask": int(mask),
        "upload_rate_limit": args.upload_limit,
        "download_rate_limit": args.download_limit,
        # Loopback swarms: retry quickly, and never wait for peers that went away.
        "min_reconnect_time": 1,
        "peer_connect_timeout": 5,
        # Shutting down must be quick: do not wait long for the "stopped" announce.
        "stop_tracker_timeout": 1,
        "user_agent": "lt_peer/libtorrent-" + lt.__version__,
    }
    if args.high_performance:
        # libtorrent's preset for a fast seeder (deep send buffers, more queued disk bytes),
        # under our isolation settings.
        settings = {**lt.high_performance_seed(), **settings}
    ses = lt.session(settings)
    if args.limit_local and (args.upload_limit or args.download_limit):
        # Peers on a local network (all of 127.0.0.0/8) are in libtorrent's "local" peer class,
        # which the session-wide rate limits do not cover: without this the limits do nothing
        # on loopback (tests written before --limit-local rely on that; it is opt-in).
        local = ses.get_peer_class(ses.local_peer_class_id)
        local["upload_limit"] = args.upload_limit
        local["download_limit"] = args.download_limit
        ses.set_peer_class(ses.local_peer_class_id, local)
    return ses


def wait_listening(ses: Any, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_failed_alert):
                raise SystemExit(f"listen failed: {a.message()}")
        port = ses.listen_port()
        if port:
            return int(port)
        time.sleep(0.01)
    raise SystemExit("listen socket did not open")


def load_params(source: str, save_path: str, tracker_less: bool) -> Any:
    if source.startswith("magnet:"):
        atp = lt.parse_magnet_uri(source)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(source)
    atp.save_path = save_path
    if tracker_less:
        atp.trackers = []
        atp.flags |= lt.torrent_flags.override_trackers
    # Never let a stray ephemeral state make libtorrent start paused/queued.
    atp.flags &= ~lt.torrent_flags.auto_managed
    atp.flags &= ~lt.torrent_flags.paused
    return atp


def report_alerts(ses: Any, state: dict[str, Any]) -> None:
    """Log what matters for a failing test; remember the first finished piece."""
    for a in ses.pop_alerts():
        if isinstance(a, lt.metadata_received_alert):
            state.setdefault("metadata_at", time.time())
        elif isinstance(a, lt.piece_finished_alert):
            if state.get("first_piece_at") is None:
                state["first_piece_at"] = time.time()
                state["first_piece_mono"] = time.monotonic()
        elif isinstance(a, lt.hash_failed_alert):
            state["hash_failures"] = state.get("hash_failures", 0) + 1
            log(a.message())
        elif isinstance(a, lt.tracker_reply_alert):
            log(a.message())
            emit({"event": "announced", "url": a.tracker_url(), "peers": int(a.num_peers)})
        elif isinstance(
            a,
            lt.tracker_error_alert
            | lt.tracker_warning_alert
            | lt.torrent_error_alert
            | lt.file_error_alert
            | lt.peer_error_alert
            | lt.listen_failed_alert
            | lt.dht_reply_alert,
        ):
            log(a.message())


def wait_checked(ses: Any, state: dict[str, Any], timeout: float) -> bool:
    """Wait for libtorrent's torrent_checked_alert (the end of a full hash check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _STOP:
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                return True
            if isinstance(a, lt.torrent_error_alert | lt.file_error_alert | lt.hash_failed_alert):
                log(a.message())
        ses.wait_for_alert(50)
    return False


def report_peers(handle: Any, seen: set[tuple[str, int, int]]) -> None:
    """``{"event": "peer", "ip", "port", "source", "pex"}`` once per connected peer and source set
    (``source`` is libtorrent's peer_info.source bit mask; ``pex``: learned from BEP 11)."""
    for p in handle.get_peer_info():
        ip, port = p.ip
        key = (str(ip), int(port), int(p.source))
        if key not in seen:
            seen.add(key)
            emit({"event": "peer", "ip": key[0], "port": key[1], "source": key[2],
                  "pex": bool(key[2] & lt.peer_info.pex)})  # fmt: skip


def add_peers(handle: Any, peers: list[tuple[str, int]]) -> None:
    for p in peers:
        handle.connect_peer(p)


def seed(args: argparse.Namespace) -> int:
    ses = make_session(args)
    port = wait_listening(ses, 10)
    atp = load_params(args.torrent, args.data, args.tracker_less)
    if args.no_pex:
        atp.flags |= lt.torrent_flags.disable_pex
    ti = atp.ti
    if not args.check:
        atp.flags |= lt.torrent_flags.seed_mode
        if args.trust or args.corrupt:
            atp.verified_pieces = [True] * ti.num_pieces()
    handle = ses.add_torrent(atp)
    state: dict[str, Any] = {}
    if args.check:
        if not wait_checked(ses, state, args.timeout):
            emit({"event": "error", "error": "timeout while checking"})
            return 1
        st = handle.status()
        if not st.is_seeding:
            log(f"--check: only {st.num_pieces}/{ti.num_pieces()} pieces present")
            emit({"event": "error", "error": "data incomplete", "have": st.num_pieces})
            return 1
    emit(
        {
            "event": "ready",
            "mode": "seed",
            "host": args.listen[0],
            "port": port,
            "info_hash": str(handle.info_hash()),
        }
    )
    add_peers(handle, args.peer)
    seen: set[tuple[str, int, int]] = set()
    while not _STOP:
        report_alerts(ses, state)
        if args.report_peers:
            report_peers(handle, seen)
        time.sleep(0.05)
    st = handle.status()
    emit({"event": "stopped", "uploaded": int(st.total_payload_upload)})
    ses.remove_torrent(handle)
    return 0


def leech(args: argparse.Namespace) -> int:
    ses = make_session(args)
    port = wait_listening(ses, 10)
    atp = load_params(args.torrent, args.out, args.tracker_less)
    if args.no_pex:
        atp.flags |= lt.torrent_flags.disable_pex
    if args.sequential:
        atp.flags |= lt.torrent_flags.sequential_download
    emit({"event": "ready", "mode": "leech", "host": args.listen[0], "port": port})
    started_at = time.time()
    start = time.monotonic()
    handle = ses.add_torrent(atp)
    add_peers(handle, args.peer)
    state: dict[str, Any] = {"first_piece_at": None}
    deadline = start + args.timeout
    last_peer_kick = start
    seen: set[tuple[str, int, int]] = set()
    while True:
        report_alerts(ses, state)
        if args.report_peers:
            report_peers(handle, seen)
        st = handle.status()
        if st.errc.value():
            emit({"event": "error", "error": st.errc.message()})
            log(f"error: {st.errc.message()}")
            return 1
        if st.has_metadata and st.is_seeding:
            break
        now = time.monotonic()
        if now > deadline or _STOP:
            emit(
                {
                    "event": "error",
                    "error": "timeout" if not _STOP else "stopped",
                    "progress": st.progress,
                }
            )
            log(f"gave up at progress {st.progress:.3f} with {st.num_peers} peers")
            return 1
        if args.peer and st.num_peers == 0 and now - last_peer_kick > 2:
            add_peers(handle, args.peer)
            last_peer_kick = now
        time.sleep(0.005)
    end = time.monotonic()
    ended_at = time.time()
    ti = handle.torrent_file()
    total = int(ti.total_size())
    recheck: bool | None = None
    if not args.no_recheck:
        handle.force_recheck()
        if not wait_checked(ses, state, args.timeout):
            emit({"event": "error", "error": "timeout while rechecking"})
            return 1
        st = handle.status()
        recheck = st.num_pieces == ti.num_pieces()
    first_mono = state.get("first_piece_mono")
    emit(
        {
            "event": "done",
            "seconds": end - start,
            "bytes": total,
            "first_piece_seconds": None if first_mono is None else first_mono - start,
            "first_piece_at": state.get("first_piece_at"),
            "metadata_at": state.get("metadata_at"),
            "started_at": started_at,
            "ended_at": ended_at,
            "peak_rss": peak_rss_bytes(),
            "hash_failures": state.get("hash_failures", 0),
            "recheck": recheck,
        }
    )
    if recheck is False:
        log("recheck failed: the written data does not match the torrent")
        return 1
    if args.keep_seeding:
        while not _STOP:
            report_alerts(ses, state)
            if args.report_peers:
                report_peers(handle, seen)
            time.sleep(0.05)
    ses.remove_torrent(handle)
    return 0


def dht_node(args: argparse.Namespace) -> int:
    ses = make_session(args)
    ses.apply_settings({"dht_announce_interval": max(1, int(args.interval))})
    port = wait_listening(ses, 10)
    deadline = time.monotonic() + 10
    while not ses.is_dht_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    emit({"event": "ready", "mode": "dht", "host": args.listen[0], "port": port})
    # session.dht_announce is not callable from Debian's 2.0.8 binding (its flags type is not
    # exported): a metadata-less torrent makes libtorrent announce itself for the hash instead.
    for h in args.announce:
        atp = lt.add_torrent_params()
        atp.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(h)))
        atp.save_path = tempfile.mkdtemp(prefix="lt-dht-")
        atp.flags &= ~lt.torrent_flags.auto_managed
        atp.flags &= ~lt.torrent_flags.paused
        ses.add_torrent(atp)
    lookup = [lt.sha1_hash(bytes.fromhex(h)) for h in args.get_peers]
    next_round = 0.0
    while not _STOP:
        now = time.monotonic()
        if now >= next_round:
            next_round = now + args.interval
            for ih in lookup:
                ses.dht_get_peers(ih)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_get_peers_reply_alert):
                peers = [[str(h), int(p)] for h, p in a.peers()]
                emit({"event": "get_peers", "info_hash": str(a.info_hash), "peers": peers})
            elif isinstance(a, lt.dht_announce_alert):
                emit(
                    {
                        "event": "announce_in",
                        "info_hash": str(a.info_hash),
                        "ip": str(a.ip),
                        "port": int(a.port),
                    }
                )
        ses.wait_for_alert(100)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("torrent", help=".torrent file (leech also takes a magnet URI)")
    common.add_argument("--listen", type=parse_hostport, default=("127.0.0.2", 0))
    common.add_argument("--tracker-less", action="store_true", help="ignore the torrent's trackers")
    common.add_argument("--peer", type=parse_hostport, action="append", default=[])
    common.add_argument("--upload-limit", type=int, default=0, help="bytes/s, 0 = unlimited")
    common.add_argument("--download-limit", type=int, default=0, help="bytes/s, 0 = unlimited")
    common.add_argument(
        "--limit-local",
        action="store_true",
        help="apply the limits to loopback/LAN peers too (libtorrent exempts them by default)",
    )
    common.add_argument("--dht", action="store_true", help="run a DHT node on the listen port")
    common.add_argument(
        "--dht-bootstrap", type=parse_hostport, action="append", default=[], help="implies --dht"
    )
    common.add_argument("--timeout", type=float, default=300.0)
    common.add_argument("--no-pex", action="store_true", help="ignore and send no BEP 11 PEX")
    common.add_argument(
        "--report-peers", action="store_true", help='print {"event": "peer"} per connected peer'
    )
    common.add_argument(
        "--high-performance", action="store_true", help="start from lt.high_performance_seed()"
    )
    s = sub.add_parser("seed", parents=[common])
    s.add_argument("--data", required=True, help="directory holding the torrent's content")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="hash the data first; fail if incomplete")
    g.add_argument("--trust", action="store_true", help="seed without ever hashing")
    g.add_argument("--corrupt", action="store_true", help="serve the data even if it is wrong")
    le = sub.add_parser("leech", parents=[common])
    le.add_argument("--out", required=True, help="directory to download into")
    le.add_argument("--sequential", action="store_true")
    le.add_argument("--no-recheck", action="store_true")
    le.add_argument("--keep-seeding", action="store_true", help="seed on after done until SIGTERM")
    d = sub.add_parser("dht")
    d.add_argument("--listen", type=parse_hostport, default=("127.0.0.4", 0))
    d.add_argument("--dht-bootstrap", type=parse_hostport, action="append", default=[])
    d.add_argument("--announce", action="append", default=[], metavar="HEX")
    d.add_argument("--get-peers", action="append", default=[], metavar="HEX")
    d.add_argument("--interval", type=float, default=2.0)
    d.set_defaults(
        dht=True, upload_limit=0, download_limit=0, limit_local=False, high_performance=False
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.mode == "seed":
        return seed(args)
    if args.mode == "dht":
        return dht_node(args)
    return leech(args)


if __name__ == "__main__":
    sys.exit(main())
