"""Interop: the trio engine against python3-libtorrent and opentracker (tier 4, real swarms).

Each test runs `torrentfs download` / `torrentfs seed` as a real subprocess against real
third-party peers on their own loopback addresses, inside the test network namespace.
"""

from __future__ import annotations

import base64
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


@pytest.mark.parametrize("data", ["missing", "empty"])
def test_seed_without_the_data_is_one_line_and_status_2(
    data: str, tmp_path: Path, multi_payload: Payload
) -> None:
    torrent = make_torrent(multi_payload.root, tmp_path / "t.torrent", piece_length=65536)
    empty = tmp_path / "data"
    if data == "empty":  # the directory is there, its files are not
        (empty / multi_payload.root.name).mkdir(parents=True)
    host = next_loopback()
    proc = _run_ours(
        ["seed", str(torrent.path), "--data", str(empty), "--listen", f"{host}:0",
         "--no-dht", "--no-trackers", "--state-dir", str(tmp_path / "state")],
        tmp_path / "seed.log",
    )  # fmt: skip
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        stop_process(proc)
    lines = (tmp_path / "seed.log").read_text().strip().splitlines()
    assert lines[-1].startswith("torrentfs: ") and str(empty) in lines[-1], lines
    assert "Traceback" not in "\n".join(lines)


def test_download_ends_with_one_line_on_a_storage_failure(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory
) -> None:
    payload = make_payload(tmp_path / "src", 2 * 1024 * 1024, seed=3)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent", trackers=[tracker.http_url])
    tracker.allow(torrent.info_hash)
    lt_seeder_factory(torrent, payload.root.parent)
    tracker.wait_seeders(torrent.info_hash, 1)
    out = tmp_path / "out"
    (out / payload.root.name).mkdir(parents=True)  # where the file goes: cannot be written
    host = next_loopback()
    proc = _run_ours(
        ["download", str(torrent.path), "-o", str(out), "--listen", f"{host}:0", "--no-dht",
         "--state-dir", str(tmp_path / "state")],
        tmp_path / "dl.log",
    )  # fmt: skip
    try:
        assert proc.wait(timeout=120) == 1, _tail(tmp_path / "dl.log")
    finally:
        stop_process(proc)
    log = (tmp_path / "dl.log").read_text()
    said = [line for line in log.splitlines() if line.startswith("torrentfs: ")]
    assert len(said) == 1 and said[0].startswith(f"torrentfs: {payload.root.name}: "), log
    assert "Traceback" not in log


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


def _claimed_pieces(state: Path, torrent: TorrentFile) -> int:
    """How many pieces the resume state file claims (0 while there is none)."""
    path = state / "resume" / f"{torrent.info_hash.hex()}.resume"
    try:
        pieces = base64.b64decode(json.loads(path.read_bytes())["pieces"])
    except (OSError, ValueError):
        return 0
    return sum(bin(b).count("1") for b in pieces)


def test_sigkill_mid_download_resumes_without_refetching(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory
) -> None:
    """SIGKILL after a resume save and after more pieces were verified: the restart trusts
    nothing blindly (the file changed since the save), hashes what is on disk in the
    background, and downloads none of the verified pieces again."""
    plen = 65536
    payload = make_payload(tmp_path / "src", 32 * 1024 * 1024, seed=5)
    torrent = make_torrent(
        payload.root, tmp_path / "t.torrent", trackers=[tracker.http_url], piece_length=plen
    )
    tracker.allow(torrent.info_hash)
    # Limited for real (--limit-local): unlimited on loopback, the whole download can end
    # between two polls, before the kill.
    lt_seeder_factory(
        torrent, payload.root.parent, extra_args=["--upload-limit", "4000000", "--limit-local"]
    )
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

    def saved_then_more() -> bool:  # a resume save, then 1 MiB more verified data on disk
        claimed = _claimed_pieces(state, torrent)
        return claimed > 0 and os.stat(target).st_blocks * 512 >= (claimed + 16) * plen

    deadline = time.monotonic() + 120
    while not saved_then_more():
        assert time.monotonic() < deadline, _tail(tmp_path / "first.log")
        assert proc.poll() is None, _tail(tmp_path / "first.log")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    claimed = _claimed_pieces(state, torrent)
    verified_before = _verified_bytes_on_disk(torrent, payload, out)
    assert claimed * plen < verified_before < payload.total_size
    stats = _download(torrent, out, state, tmp_path / "second.log")
    assert_same_tree(payload, out)
    downloaded = int(stats["downloaded"])  # type: ignore[call-overload]
    resumed = int(stats["pieces_resumed"])  # type: ignore[call-overload]
    found = int(stats["pieces_found_at_start"])  # type: ignore[call-overload]
    hashed = int(stats["pieces_hashed_at_start"])  # type: ignore[call-overload]
    print(
        f"killed with {claimed} pieces saved, {verified_before // plen} verified on disk; "
        f"restart: {resumed} trusted from resume, {hashed} hashed, {found} found, "
        f"{downloaded / plen:.0f} pieces downloaded"
    )
    assert downloaded <= payload.total_size - verified_before, (
        f"re-downloaded verified data: {downloaded} > {payload.total_size} - {verified_before}"
    )
    assert (resumed + found) * plen >= verified_before  # every verified piece reused
    assert hashed <= torrent.num_pieces - resumed  # never re-hashed what resume vouched for


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
