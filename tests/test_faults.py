"""Faults injected into a real mount (issue 7): full disk, every peer vanishing mid-piece,
trackers down or answering garbage, SIGKILL at random points.

Everything is real: ``python -m torrentfs`` mounts, libtorrent seeders, opentracker, a tmpfs
mounted in the test's private mount namespace (``scripts/test`` runs in one). Each test checks
the three things the README's "Limits and failure behaviour" promises for its fault: the errno a
reader sees, the one log line, and how service comes back; and that every byte served equals
the source. ``TORRENTFS_LONG=1`` runs the long profile (more SIGKILL rounds).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import figures
import pytest
from swarm import (
    LibtorrentPeer,
    Opentracker,
    PeerFactory,
    free_port,
    make_payload,
    make_torrent,
    next_loopback,
)
from test_mount import TorrentfsMount, is_mounted, wait_for

from torrentfs.metainfo import Metainfo, parse_metainfo

pytestmark = [pytest.mark.mount, pytest.mark.interop]

MiB = 1 << 20
LONG = os.environ.get("TORRENTFS_LONG") == "1"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def mounts(isolated_network: None) -> Iterator[list[TorrentfsMount]]:
    """Mounts made by a test (started by it); always stopped and detached at teardown."""
    made: list[TorrentfsMount] = []
    try:
        yield made
    finally:
        for m in made:
            with contextlib.suppress(Exception):
                if m.proc is not None and m.proc.poll() is None:
                    m.stop()
            m.cleanup()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` in this (private) mount namespace; unmounted after."""
    if not private_mount_namespace():
        pytest.fail("needs a private mount namespace: run through scripts/test", pytrace=False)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def private_mount_namespace() -> bool:
    """True if mounts made here cannot propagate to the host (``/`` is not a shared mount)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                optional = fields[6 : fields.index("-")]
                return not any(o.startswith("shared:") for o in optional)
    return False


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte with one file; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (b"\xff" * 65536, b"\xff" * 512):
            with contextlib.suppress(OSError):
                while os.write(fd, chunk):
                    pass
    finally:
        os.close(fd)
    return filler


def pread_all(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def read_errno(path: Path, offset: int, size: int) -> int | None:
    """The errno a read fails with (None if it worked)."""
    try:
        pread_all(path, offset, size)
    except OSError as exc:
        return exc.errno
    return None


def resume_claims(state_dir: Path, metainfo: Metainfo) -> list[int]:
    """The pieces the saved resume state claims verified."""
    path = state_dir / "resume" / f"{metainfo.info_hash.hex()}.resume"
    if not path.exists():
        return []
    state = json.loads(path.read_bytes())
    bits = base64.b64decode(state["pieces"])
    return [i for i in range(metainfo.num_pieces) if bits[i // 8] & (0x80 >> (i % 8))]


def assert_claims_hold(state_dir: Path, download_dir: Path, metainfo: Metainfo) -> int:
    """Every piece the resume state claims is on disk and matches its SHA-1; returns the count.

    (Single-file torrents: the data file is ``download_dir/<name>``.)
    """
    claims = resume_claims(state_dir, metainfo)
    data_file = download_dir / metainfo.name
    with data_file.open("rb") if claims else contextlib.nullcontext() as f:
        for piece in claims:
            assert f is not None
            f.seek(piece * metainfo.piece_length)
            data = f.read(metainfo.piece_size(piece))
            assert hashlib.sha1(data).digest() == metainfo.piece_hash(piece), (
                f"resume state claims piece {piece}, but its data on disk does not verify"
            )
    return len(claims)


def seeded_file(
    tmp: Path,
    tracker: Opentracker,
    seeder_factory: PeerFactory,
    size: int,
    *,
    name: str,
    piece_length: int = 256 * 1024,
    extra_args: tuple[str, ...] = (),
) -> tuple[Path, Path, LibtorrentPeer]:
    """A single-file payload, its torrent (announced to ``tracker``) and a libtorrent seeder."""
    payload = make_payload(tmp / "src", size, name=name)
    torrent = make_torrent(
        payload.root, tmp / f"{name}.torrent", piece_length=piece_length,
        trackers=[tracker.http_url],
    )  # fmt: skip
    tracker.allow(torrent.info_hash)
    seeder = seeder_factory(torrent, payload.root.parent, extra_args=extra_args)
    tracker.wait_seeders(torrent.info_hash)
    return payload.root, torrent.path, seeder


def log_lines(m: TorrentfsMount, text: str) -> list[str]:
    return [line for line in m.log().splitlines() if text in line]


def reads_right(path: Path, source: Path, offset: int, size: int = 4096) -> bool:
    """The read works and gives the source's bytes (for polling until service is back)."""
    try:
        got = pread_all(path, offset, size)
    except OSError:
        return False
    with source.open("rb") as f:
        f.seek(offset)
        return got == f.read(size)


def kill_peer(peer: LibtorrentPeer) -> None:
    """SIGKILL a libtorrent peer (no goodbye to anyone), then reap it."""
    proc = peer._proc
    assert proc is not None
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    peer.stop()


# --------------------------------------------------------------------------- full disk


def test_full_download_dir_fails_reads_with_enospc_then_recovers(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    source, torrent, _ = seeded_file(tmp_path, tracker, lt_seeder_factory, 6 * MiB, name="full")
    m = TorrentfsMount(tmp_path / "m", "--read-timeout", "20", "--readahead-max", "1M")
    with tmpfs(m.download_dir, "16m"):
        filler = fill(m.download_dir)  # not one byte left
        figures.record("faults injected")
        mounts.append(m)
        m.start()
        m.add(torrent)
        path = m.wait_entry("full.bin")
        codes = [read_errno(path, 3 * MiB, 4096) for _ in range(3)]
        codes.append(read_errno(path, 0, 65536))
        assert codes == [errno.ENOSPC] * 4, (codes, m.log())
        # One line for the fault, however many reads and pieces ran into it.
        assert len(log_lines(m, "cannot store piece")) == 1, m.log()
        assert "Traceback" not in m.log()
        assert sorted(os.listdir(m.mountpoint)) == ["full.bin"]  # the mount stays usable
        # Space comes back: service resumes by itself (after the retry interval).
        filler.unlink()

        def works() -> bool:
            try:
                return (
                    pread_all(path, 3 * MiB, 4096) == source.read_bytes()[3 * MiB : 3 * MiB + 4096]
                )
            except OSError:
                return False

        wait_for("reads to work again", works, 60)
        assert path.read_bytes() == source.read_bytes()
        figures.record("bytes verified", source.stat().st_size)
        assert "storing pieces works again" in m.log()
        m.stop()
        # Nothing corrupt is kept: every piece the resume state claims verifies on disk.
        metainfo = parse_metainfo(torrent.read_bytes())
        assert assert_claims_hold(m.state_dir, m.download_dir, metainfo) == metainfo.num_pieces


def test_full_disk_during_download_never_claims_unwritten_pieces(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    """The disk fills up half-way through a piece-by-piece download: pieces that did not fit
    are never claimed by the resume state, and a restart serves only verified bytes."""
    source, torrent, _ = seeded_file(tmp_path, tracker, lt_seeder_factory, 8 * MiB, name="half")
    m = TorrentfsMount(tmp_path / "m", "--read-timeout", "20", "--readahead-max", "1M")
    with tmpfs(m.download_dir, "3m"):  # about a third of the file fits
        figures.record("faults injected")
        mounts.append(m)
        m.start()
        m.add(torrent)
        path = m.wait_entry("half.bin")
        data = source.read_bytes()
        outcomes: dict[int | None, int] = {}
        for offset in range(0, len(data), 512 * 1024):
            try:
                got = pread_all(path, offset, 4096)
            except OSError as exc:
                outcomes[exc.errno] = outcomes.get(exc.errno, 0) + 1
                continue
            assert got == data[offset : offset + 4096]
            figures.record("bytes verified", len(got))
            outcomes[None] = outcomes.get(None, 0) + 1
        assert set(outcomes) <= {None, errno.ENOSPC} and errno.ENOSPC in outcomes, outcomes
        m.stop()
        metainfo = parse_metainfo(torrent.read_bytes())
        claimed = assert_claims_hold(m.state_dir, m.download_dir, metainfo)
        assert claimed < metainfo.num_pieces
        # Restarted on the still-full disk: what it serves is right, the rest fails cleanly.
        m.start()
        path = m.wait_entry("half.bin")
        for offset in range(0, len(data), 512 * 1024):
            with contextlib.suppress(OSError):
                assert pread_all(path, offset, 4096) == data[offset : offset + 4096]
        print(f"outcomes by errno: {outcomes}; {claimed} of {metainfo.num_pieces} pieces kept")


# --------------------------------------------------------------------------- peers vanish


def test_every_peer_vanishing_mid_piece_gives_eio_then_service_resumes(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    # 1 MiB pieces at 256 KiB/s: a piece takes ~4 s, so the kill lands inside one.
    source, torrent, seeder = seeded_file(
        tmp_path, tracker, lt_seeder_factory, 16 * MiB, name="vanish", piece_length=MiB,
        extra_args=("--upload-limit", str(256 * 1024), "--limit-local"),
    )  # fmt: skip
    m = TorrentfsMount(tmp_path / "m", "--read-timeout", "6", "--readahead-max", "1M")
    mounts.append(m)
    m.start()
    m.add(torrent)
    path = m.wait_entry("vanish.bin")
    result: dict[str, Any] = {}

    def reader() -> None:
        started = time.monotonic()
        result["errno"] = read_errno(path, 8 * MiB, 4096)
        result["waited"] = time.monotonic() - started

    thread = threading.Thread(target=reader)
    thread.start()
    # Wait until the piece is on its way (the seeder uploads), then kill every peer.
    wait_for("the seeder to upload", lambda: _uploading(m), 30)
    host, port = seeder.address
    kill_peer(seeder)
    figures.record("faults injected")
    thread.join(60)
    assert not thread.is_alive()
    assert result["errno"] == errno.EIO, (result, m.log())
    print(f"EIO after {result['waited']:.1f} s (read timeout 6 s)")
    assert log_lines(m, "failed after 6 s"), m.log()
    assert sorted(os.listdir(m.mountpoint)) == ["vanish.bin"]
    # A seeder comes back (same address): the same read now works.
    back = LibtorrentPeer("seed", torrent, source.parent, host=host, port=port,
                          log_dir=tmp_path / "logs")  # fmt: skip
    with back:

        def works() -> bool:
            try:
                return (
                    pread_all(path, 8 * MiB, 4096) == source.read_bytes()[8 * MiB : 8 * MiB + 4096]
                )
            except OSError:
                return False

        wait_for("reads to work again", works, 120)
    m.stop()
    assert "Traceback" not in m.log()


def _uploading(m: TorrentfsMount) -> bool:
    """Some data arrived at the mount for the file (its download rate xattr is non-zero)."""
    try:
        return int(os.getxattr(m.mountpoint / "vanish.bin", "user.torrentfs.download_rate")) > 0
    except OSError:
        return False


# --------------------------------------------------------------------------- trackers


class GarbageHttpTracker:
    """An HTTP server on loopback that answers every request with junk (status 200)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}/announce"
        self.requests = 0
        self._rng = random.Random(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                conn.recv(65536)
                self.requests += 1
                junk = [
                    b"d8:intervali-5e5:peers3:abce",  # truncated compact peers
                    b"\x00\xff" * 100,
                    b"d14:failure reason" + b"9" * 30,  # bad length prefix
                    b"l" * 10000,  # deep nesting
                ][self.requests % 4]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(junk) + junk)

    def close(self) -> None:
        self.sock.close()


class GarbageUdpTracker:
    """A BEP 15 tracker gone mad: a valid ``connect`` answer, then garbage for everything else
    (truncated announce answers, error packets with invalid text, random bytes)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.url = f"udp://{host}:{self.sock.getsockname()[1]}/announce"
        self.packets = 0
        self._rng = random.Random(2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                packet, addr = self.sock.recvfrom(2048)
            except OSError:
                return
            self.packets += 1
            if len(packet) < 16:
                continue
            action, tid = packet[8:12], packet[12:16]
            if action == b"\0\0\0\0":  # connect: answer properly, with a connection id
                reply = action + tid + self._rng.randbytes(8)
            else:
                reply = [
                    b"\0\0\0\x01" + tid + self._rng.randbytes(5),  # truncated announce
                    b"\0\0\0\x03" + tid + b"\xff\xfe bad \x80",  # error, not UTF-8
                    self._rng.randbytes(self._rng.randrange(0, 100)),  # noise (wrong tid)
                ][self.packets % 3]
            with contextlib.suppress(OSError):
                self.sock.sendto(reply, addr)

    def close(self) -> None:
        self.sock.close()


def test_dead_and_garbage_trackers_are_survived(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    """Tiers (BEP 12): a closed port, an HTTP tracker answering junk, a UDP tracker answering
    random packets, then the real one: the file is served exactly, the junk is logged."""
    http_junk = GarbageHttpTracker(next_loopback())
    udp_junk = GarbageUdpTracker(next_loopback())
    dead = f"http://{next_loopback()}:{free_port()}/announce"
    dead_udp = f"udp://{next_loopback()}:{free_port()}/announce"
    try:
        payload = make_payload(tmp_path / "src", 3 * MiB, name="tiers")
        torrent = make_torrent(
            payload.root, tmp_path / "tiers.torrent",
            trackers=[dead, http_junk.url, udp_junk.url, dead_udp, tracker.http_url],
        )  # fmt: skip
        tracker.allow(torrent.info_hash)
        lt_seeder_factory(torrent, payload.root.parent)
        tracker.wait_seeders(torrent.info_hash, timeout=120)
        m = TorrentfsMount(tmp_path / "m", "--read-timeout", "120")
        mounts.append(m)
        m.start()
        m.add(torrent.path)
        path = m.wait_entry("tiers.bin")
        wait_for("the junk trackers to be asked", lambda: http_junk.requests and udp_junk.packets)
        assert m.proc is not None and m.proc.poll() is None
        assert sorted(os.listdir(m.mountpoint)) == ["tiers.bin"]
        assert path.read_bytes() == payload.root.read_bytes()
        figures.record("faults injected", 4)  # two dead trackers, two answering garbage
        figures.record("bytes verified", payload.root.stat().st_size)
    finally:
        http_junk.close()
        udp_junk.close()
    m.stop()
    assert "Traceback" not in m.log()
    failed = log_lines(m, "failed (")
    assert any(http_junk.url.split("/announce")[0] in line for line in failed), m.log()


def test_tracker_down_then_back(
    tmp_path: Path, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    """The only tracker is down: reads fail with EIO after the read timeout, one line per
    attempt; once it is back (and a seeder announced), reads work without a restart."""
    host = next_loopback()
    port = free_port(host)
    later = Opentracker(tmp_path / "tracker", host=host, port=port)
    payload = make_payload(tmp_path / "src", 2 * MiB, name="down")
    torrent = make_torrent(
        payload.root, tmp_path / "down.torrent", trackers=[f"udp://{host}:{port}/announce"]
    )
    m = TorrentfsMount(tmp_path / "m", "--read-timeout", "3")
    mounts.append(m)
    m.start()
    m.add(torrent.path)
    path = m.wait_entry("down.bin")
    assert read_errno(path, MiB, 4096) == errno.EIO
    figures.record("faults injected")
    assert log_lines(m, "no tracker answered"), m.log()
    with later:
        later.allow(torrent.info_hash)
        lt_seeder_factory(torrent, payload.root.parent)
        later.wait_seeders(torrent.info_hash)
        # Our tracker backoff starts at 15 s and doubles: a few retries at most.
        wait_for("reads to work again", lambda: reads_right(path, payload.root, MiB), 150)
    m.stop()
    assert "Traceback" not in m.log()


# --------------------------------------------------------------------------- SIGKILL loop


class RoundReader(threading.Thread):
    """Random preads through the mount until one fails (the mount is SIGKILLed meanwhile).

    A read that ends short is allowed only once ``killed`` is set (the kernel ends a read cut
    by the dead mount with what it had); every byte returned must equal the source.
    """

    def __init__(self, path: Path, data: bytes, seed: float, killed: threading.Event) -> None:
        super().__init__()
        self.path, self.data, self.killed = path, data, killed
        self.rng = random.Random(seed)
        self.bytes = 0
        self.short = 0
        self.errno: int | None = None
        self.wrong: list[str] = []

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self.errno = exc.errno
            return
        try:
            while True:
                off = self.rng.randrange(0, len(self.data))
                size = self.rng.choice([4096, 65536, 300_000, MiB])
                try:
                    got = os.pread(fd, size, off)
                except OSError as exc:
                    self.errno = exc.errno  # ENOTCONN once the process is killed
                    return
                expected = self.data[off : off + size]
                if got != expected[: len(got)]:
                    self.wrong.append(f"pread({off}, {size}) differs")
                    return
                self.bytes += len(got)
                if len(got) < len(expected):
                    if not self.killed.is_set():
                        self.wrong.append(f"pread({off}, {size}) short before the kill")
                    self.short += 1
                    return
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


def test_sigkill_at_random_points_then_every_byte_served_verifies(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    """20 rounds (200 with TORRENTFS_LONG=1): mount, read at random, SIGKILL the mount at a
    random moment (mid-download: the seeder is rate-limited), restart. Every byte served at
    every round equals the source; the resume state never claims a piece that fails its hash."""
    rounds = 200 if LONG else 20
    seed = int(os.environ.get("TORRENTFS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    source, torrent, _ = seeded_file(
        tmp_path, tracker, lt_seeder_factory, 32 * MiB, name="killed",
        extra_args=("--upload-limit", str(MiB), "--limit-local"),
    )  # fmt: skip
    data = source.read_bytes()
    metainfo = parse_metainfo(torrent.read_bytes())
    m = TorrentfsMount(tmp_path / "m", "--read-timeout", "10", "--readahead-max", "4M")
    mounts.append(m)
    m.add(torrent)
    verified = 0
    short_reads = 0
    read_errors: dict[int, int] = {}
    for round_ in range(rounds):
        m.start()
        path = m.wait_entry("killed.bin")
        assert_claims_hold(m.state_dir, m.download_dir, metainfo)
        killed = threading.Event()
        readers = [RoundReader(path, data, rng.random(), killed) for _ in range(2)]
        for r in readers:
            r.start()
        time.sleep(rng.uniform(0.0, 3.0))  # the random kill point (not a verdict)
        assert m.proc is not None
        killed.set()
        m.proc.send_signal(signal.SIGKILL)
        figures.record("faults injected")
        m.proc.wait()
        m.cleanup()  # detach the dead mount, so blocked readers get ENOTCONN at once
        for r in readers:
            r.join(30)
            assert not r.is_alive()
            assert not r.wrong, f"round {round_}: {r.wrong}"
            verified += r.bytes
            short_reads += r.short
            if r.errno is not None:
                read_errors[r.errno] = read_errors.get(r.errno, 0) + 1
    # A last, clean run: the whole file through the mount, and the resume claims.
    m.start()
    path = m.wait_entry("killed.bin")
    assert path.read_bytes() == data
    verified += len(data)
    m.stop()
    claimed = assert_claims_hold(m.state_dir, m.download_dir, metainfo)
    figures.record("bytes verified", verified)
    assert not is_mounted(m.mountpoint)
    print(
        f"seed {seed}: {rounds} SIGKILLs; {verified / MiB:.0f} MiB read and verified; "
        f"{claimed}/{metainfo.num_pieces} pieces claimed at the end, all verify; "
        f"reads ended by the kill: {short_reads} short, errors {read_errors}"
    )
