"""Interop: the trio engine against python3-libtorrent and opentracker (tier 4, real swarms).

Each test runs `torrentfs download` / `torrentfs seed` as a real subprocess against real
third-party peers on their own loopback addresses, inside the test network namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from swarm import (
    LibtorrentPeer,
    Opentracker,
    Payload,
    TorrentFile,
    assert_same_tree,
    free_port,
    make_payload,
    make_torrent,
    next_loopback,
    stop_process,
)

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]
TORRENTFS = [sys.executable, "-m", "torrentfs"]


def _run_ours(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    err = log.open("wb")
    return subprocess.Popen(
        [*TORRENTFS, *args], stdout=subprocess.PIPE, stderr=err, cwd=ROOT, stdin=subprocess.DEVNULL
    )


def _download(
    torrent: TorrentFile,
    out: Path,
    state: Path,
    log: Path,
    *extra: str,
    timeout: float = 180.0,
) -> dict[str, object]:
    host = next_loopback()
    proc = _run_ours(
        [
            "download", str(torrent.path), "-o", str(out), "--listen", f"{host}:0",
            "--no-dht", "--state-dir", str(state), "--json-stats", "-v", *extra,
        ],
        log,
    )  # fmt: skip
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        pytest.fail(f"download did not finish in {timeout} s; log:\n{_tail(log)}")
    assert proc.returncode == 0, f"exit {proc.returncode}; log:\n{_tail(log)}"
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    assert lines, f"no stats line; log:\n{_tail(log)}"
    stats: dict[str, object] = json.loads(lines[-1])
    return stats


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture
def multi_payload(tmp_path: Path) -> Payload:
    return make_payload(tmp_path / "src", "multi", seed=7)


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_download_from_libtorrent_via_tracker(
    scheme: str,
    tmp_path: Path,
    tracker: Opentracker,
    multi_payload: Payload,
    lt_seeder_factory,
) -> None:
    url = tracker.http_url if scheme == "http" else tracker.udp_url
    torrent = make_torrent(multi_payload.root, tmp_path / "t.torrent", trackers=[url])
    tracker.allow(torrent.info_hash)
    lt_seeder_factory(torrent, multi_payload.root.parent)
    tracker.wait_seeders(torrent.info_hash, 1)
    out = tmp_path / "out"
    stats = _download(torrent, out, tmp_path / "state", tmp_path / "ours.log")
    assert_same_tree(multi_payload, out)
    assert stats["bytes"] == multi_payload.total_size
    assert stats["hash_failures"] == 0


def test_seed_to_libtorrent_leecher(
    tmp_path: Path, multi_payload: Payload, lt_leecher_factory
) -> None:
    torrent = make_torrent(multi_payload.root, tmp_path / "t.torrent", piece_length=65536)
    host = next_loopback()
    port = free_port(host)
    ready = tmp_path / "ready"
    proc = _run_ours(
        [
            "seed", str(torrent.path), "--data", str(multi_payload.root.parent),
            "--listen", f"{host}:{port}", "--no-dht", "--state-dir", str(tmp_path / "state"),
            "--ready-file", str(ready), "-v",
        ],
        tmp_path / "seed.log",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, _tail(tmp_path / "seed.log")
            assert time.monotonic() < deadline, "seeder never became ready"
            time.sleep(0.05)
        leecher = lt_leecher_factory(torrent, tmp_path / "lt-out", peers=[(host, port)])
        result = leecher.wait_done(timeout=120)
        assert result.get("ok", True), result
        assert_same_tree(multi_payload, tmp_path / "lt-out")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            pytest.fail("seeder did not stop within 15 s of SIGINT")
    assert proc.returncode == 0, _tail(tmp_path / "seed.log")


def _corrupt_copy(payload: Payload, dest: Path) -> Path:
    """A copy of the payload with every 4th 32 KiB block flipped (a lying seeder's data)."""
    target = dest / payload.root.name
    for rel, size in payload.files:
        src = payload.path_of(rel)
        dst = target / rel if payload.multi_file else target
        dst.parent.mkdir(parents=True, exist_ok=True)
        data = bytearray(src.read_bytes())
        for off in range(0, size, 4 * 32768):
            data[off] ^= 0xFF
        dst.write_bytes(bytes(data))
    return dest


def test_swarm_of_three_with_a_lying_peer(
    tmp_path: Path,
    tracker: Opentracker,
    lt_seeder_factory,
) -> None:
    payload = make_payload(tmp_path / "src", 6 * 1024 * 1024 + 12345, seed=3)
    torrent = make_torrent(
        payload.root, tmp_path / "t.torrent", trackers=[tracker.http_url], piece_length=32768
    )
    tracker.allow(torrent.info_hash)
    lt_seeder_factory(torrent, payload.root.parent)
    lt_seeder_factory(torrent, payload.root.parent)
    # A torrentfs seeder as the third honest member.
    host = next_loopback()
    ready = tmp_path / "ready"
    ours = _run_ours(
        [
            "seed", str(torrent.path), "--data", str(payload.root.parent),
            "--listen", f"{host}:0", "--no-dht", "--state-dir", str(tmp_path / "s1"),
            "--ready-file", str(ready),
        ],
        tmp_path / "seed.log",
    )  # fmt: skip
    liar = lt_seeder_factory(
        torrent, _corrupt_copy(payload, tmp_path / "bad"), corrupt=True, tracker_less=True
    )
    try:
        tracker.wait_seeders(torrent.info_hash, 3, timeout=60)
        out = tmp_path / "out"
        log = tmp_path / "leech.log"
        stats = _download(
            torrent, out, tmp_path / "s2", log, "--peer", liar.address_text, timeout=240
        )
        assert_same_tree(payload, out)
        text = log.read_text()
        assert stats["hash_failures"], "the lying peer was never asked for a corrupted piece"
        assert f"banning {liar.host}" in text, _tail(log)
    finally:
        ours.send_signal(signal.SIGINT)
        try:
            ours.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(ours)


def _verified_bytes_on_disk(torrent: TorrentFile, payload: Payload, out: Path) -> int:
    """How many bytes of whole, correct pieces a partial single-file download holds."""
    path = out / payload.root.name
    if not path.exists():
        return 0
    src = payload.root.read_bytes()
    got = path.read_bytes()
    plen = torrent.piece_length
    good = 0
    for i in range(torrent.num_pieces):
        a, b = i * plen, min((i + 1) * plen, len(src))
        if got[a:b] == src[a:b]:
            good += b - a
    return good


def test_sigkill_mid_download_resumes_without_refetching(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory
) -> None:
    payload = make_payload(tmp_path / "src", 24 * 1024 * 1024, seed=5)
    torrent = make_torrent(
        payload.root, tmp_path / "t.torrent", trackers=[tracker.http_url], piece_length=65536
    )
    tracker.allow(torrent.info_hash)
    lt_seeder_factory(torrent, payload.root.parent, extra_args=["--upload-limit", "4000000"])
    tracker.wait_seeders(torrent.info_hash, 1)
    out = tmp_path / "out"
    state = tmp_path / "state"
    host = next_loopback()
    proc = _run_ours(
        [
            "download", str(torrent.path), "-o", str(out), "--listen", f"{host}:0",
            "--no-dht", "--state-dir", str(state),
        ],
        tmp_path / "first.log",
    )  # fmt: skip
    target = out / payload.root.name
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if target.exists() and os.stat(target).st_blocks * 512 >= 6 * 1024 * 1024:
            break
        assert proc.poll() is None, _tail(tmp_path / "first.log")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    verified_before = _verified_bytes_on_disk(torrent, payload, out)
    assert 0 < verified_before < payload.total_size
    stats = _download(torrent, out, state, tmp_path / "second.log")
    assert_same_tree(payload, out)
    downloaded = int(stats["downloaded"])  # type: ignore[call-overload]
    assert downloaded <= payload.total_size - verified_before, (
        f"re-downloaded verified data: {downloaded} > {payload.total_size} - {verified_before}"
    )


# --------------------------------------------------------------------------- a rude peer


class _RudePeer:
    """A TCP peer that completes the handshake, then breaks the protocol in one chosen way."""

    def __init__(self, host: str, info_hash: bytes, mode: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.info_hash = info_hash
        self.mode = mode
        self.connections = 0
        self.closed_by_peer = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            conn.recv(68)
            reserved = bytes(8)
            conn.sendall(b"\x13BitTorrent protocol" + reserved + self.info_hash + b"R" * 20)
            if self.mode == "garbage":
                conn.sendall(os.urandom(4096))
            elif self.mode == "oversized":
                conn.sendall(struct.pack(">I", 0x7FFFFFFF) + b"\x07")
            elif self.mode == "truncated":
                conn.sendall(struct.pack(">IB", 13, 6) + b"\x00\x00")
                conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
            self.closed_by_peer += 1
        except OSError:
            self.closed_by_peer += 1
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rude_peers(tmp_path: Path) -> Iterator[list[_RudePeer]]:
    peers: list[_RudePeer] = []
    yield peers
    for p in peers:
        p.close()


def test_rude_peers_lose_their_connection_and_the_download_continues(
    tmp_path: Path, lt_seeder_factory, rude_peers: list[_RudePeer]
) -> None:
    payload = make_payload(tmp_path / "src", 3 * 1024 * 1024, seed=9)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent", piece_length=32768)
    seeder: LibtorrentPeer = lt_seeder_factory(torrent, payload.root.parent, tracker_less=True)
    for mode in ("garbage", "oversized", "truncated"):
        rude_peers.append(_RudePeer(next_loopback(), torrent.info_hash, mode))
    extra: list[str] = []
    for p in rude_peers:
        extra += ["--peer", p.address]
    extra += ["--peer", seeder.address_text, "--no-trackers"]
    log = tmp_path / "ours.log"
    _download(torrent, tmp_path / "out", tmp_path / "state", log, *extra)
    assert_same_tree(payload, tmp_path / "out")
    for p in rude_peers:
        assert p.connections >= 1, f"{p.mode} peer was never contacted"
        assert p.closed_by_peer >= 1, f"{p.mode} peer was not disconnected"
    text = log.read_text()
    assert "gone:" in text


def test_piece_hashes_match_source(tmp_path: Path) -> None:
    """Sanity for the fixtures above: mktorrent's piece hashes are SHA-1 of the payload."""
    payload = make_payload(tmp_path / "src", 100_000, seed=1)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent")
    from torrentfs.metainfo import parse_metainfo

    m = parse_metainfo(torrent.path.read_bytes())
    data = payload.root.read_bytes()
    for i in range(m.num_pieces):
        chunk = data[i * m.piece_length : (i + 1) * m.piece_length]
        assert hashlib.sha1(chunk).digest() == m.piece_hash(i)
