"""Integrity under churn (issue 7): 8 concurrent readers on a real mount over several torrents
while libtorrent seeders are killed and restarted and metainfo files are removed and re-added.

Verdicts: every byte read equals the source (a read may fail with ``EIO`` - no peer, or its
torrent removed under an open handle - or ``ENOENT`` for a removed torrent, never give wrong
bytes); no read waits much past the read timeout (bounded waits, DESIGN.md rule 4: the bound
is generous, timing itself is not what is judged); the mount process's memory stays bounded;
once the churn stops and everything is back, every file reads whole and right.

CI-sized by default (40 s of churn); ``TORRENTFS_LONG=1`` churns for 10 minutes. The figures
(bytes verified, reads, errors by errno, longest wait, peak RSS) are printed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import figures
import pytest
from swarm import LibtorrentPeer, Opentracker, make_payload, make_torrent
from test_faults import kill_peer, mounts
from test_mount import TorrentfsMount, wait_for

pytestmark = [pytest.mark.mount, pytest.mark.interop]
__all__ = ["mounts"]  # the fixture, shared with test_faults

MiB = 1 << 20
LONG = os.environ.get("TORRENTFS_LONG") == "1"
CHURN_SECONDS = 600.0 if LONG else 40.0
READ_TIMEOUT = 5.0
WAIT_BOUND = 2 * READ_TIMEOUT + 10.0
"""A read may wait its timeout, plus the kernel's retry of the same range (answered at once),
plus scheduling noise on a loaded 2-core machine."""
RSS_BOUND = 512 * MiB
LAYOUTS: list[tuple[str, Any]] = [
    ("film", 32 * MiB),
    ("album", [("01.flac", 5_500_000), ("02.flac", 7_200_000), ("cover.jpg", 70_000)]),
    ("tiny", 300_000),
]
SEED_ARGS = ["--upload-limit", str(MiB), "--limit-local"]
"""Slow seeders: much of the data is still in flight when a seeder dies or a torrent goes."""


@dataclass
class SwarmTorrent:
    name: str
    top: str  # its entry in the mount's root
    torrent: Path
    data_dir: Path
    files: dict[str, bytes]  # path inside the mount -> source bytes
    seeder: LibtorrentPeer
    seeding: bool = True
    shown: bool = True


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes: int = 0
    reads: int = 0
    short: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    longest: float = 0.0

    def read(self, got: int, expected: int, waited: float) -> None:
        with self.lock:
            self.bytes += got
            self.reads += 1
            self.short += got < expected
            self.longest = max(self.longest, waited)

    def error(self, code: int, waited: float) -> None:
        with self.lock:
            self.errors[code] = self.errors.get(code, 0) + 1
            self.longest = max(self.longest, waited)


def reader(mnt: Path, torrents: list[SwarmTorrent], seed: int, until: float, tally: Tally) -> None:
    """Sequential runs and random preads over random files until ``until``."""
    rng = random.Random(seed)
    files = [(path, data) for t in torrents for path, data in t.files.items()]
    while time.monotonic() < until and not tally.wrong:
        path, data = rng.choice(files)
        started = time.monotonic()
        try:
            fd = os.open(mnt / path, os.O_RDONLY)
        except OSError as exc:
            tally.error(exc.errno or 0, time.monotonic() - started)
            time.sleep(0.2)
            continue
        try:
            sequential = rng.random() < 0.5
            offset = rng.randrange(0, len(data))
            for _ in range(rng.randrange(1, 40)):
                size = 65536 if sequential else rng.choice([1, 4096, 65536, 200_000, 512 * 1024])
                if not sequential:
                    offset = rng.randrange(0, len(data) + 100)
                started = time.monotonic()
                try:
                    got = os.pread(fd, size, offset)
                except OSError as exc:
                    tally.error(exc.errno or 0, time.monotonic() - started)
                    break
                expected = data[offset : offset + size]
                if got != expected[: len(got)]:
                    tally.wrong.append(f"{path}: pread({offset}, {size}) gave wrong bytes")
                    return
                tally.read(len(got), len(expected), time.monotonic() - started)
                offset += len(got)
                if offset >= len(data) or len(got) < len(expected):
                    break
        finally:
            os.close(fd)


def rss_sampler(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.wait(0.2):
        with contextlib.suppress(OSError, ValueError, StopIteration):
            with open(f"/proc/{pid}/status") as f:
                line = next(x for x in f if x.startswith("VmRSS:"))
            peak[0] = max(peak[0], int(line.split()[1]) * 1024)


def churn(
    m: TorrentfsMount, torrents: list[SwarmTorrent], rng: random.Random, log_dir: Path
) -> str:
    """One random change to the swarm or the metainfo folder; returns what it did."""
    t = rng.choice(torrents)
    action = rng.choice(["seeder", "seeder", "metainfo"])
    if action == "seeder":
        if t.seeding:
            kill_peer(t.seeder)
            t.seeding = False
            return f"killed the seeder of {t.name}"
        restore_seeder(t, log_dir)
        return f"restarted the seeder of {t.name}"
    placed = m.metainfo_dir / t.torrent.name
    if t.shown:
        placed.unlink()
        t.shown = False
        return f"removed {t.torrent.name}"
    m.add(t.torrent)
    t.shown = True
    return f"re-added {t.torrent.name}"


def test_eight_readers_under_churn_read_only_right_bytes(
    tmp_path: Path, tracker: Opentracker, mounts: Any
) -> None:
    torrents: list[SwarmTorrent] = []
    try:
        for name, layout in LAYOUTS:
            payload = make_payload(tmp_path / "src" / name, layout, name=name)
            torrent = make_torrent(
                payload.root, tmp_path / f"{name}.torrent", piece_length=256 * 1024,
                trackers=[tracker.http_url],
            )  # fmt: skip
            tracker.allow(torrent.info_hash)
            seeder = LibtorrentPeer("seed", torrent.path, payload.root.parent,
                                    extra_args=SEED_ARGS, log_dir=tmp_path / "logs")  # fmt: skip
            seeder.start()
            top = payload.root.name
            files = {
                (f"{top}/{rel}" if payload.multi_file else top): payload.path_of(rel).read_bytes()
                for rel, _ in payload.files
            }
            torrents.append(
                SwarmTorrent(name, top, torrent.path, payload.root.parent, files, seeder)
            )
        for t in torrents:
            tracker.wait_seeders(read_info_hash(t.torrent))
        m = TorrentfsMount(tmp_path / "m", "--read-timeout", f"{READ_TIMEOUT:g}",
                           "--readahead-max", "2M")  # fmt: skip
        mounts.append(m)
        m.start()
        for t in torrents:
            m.add(t.torrent)
        for t in torrents:
            m.wait_entry(t.top)
        assert m.proc is not None
        tally = Tally()
        peak = [0]
        stop = threading.Event()
        sampler = threading.Thread(target=rss_sampler, args=(m.proc.pid, stop, peak))
        sampler.start()
        until = time.monotonic() + CHURN_SECONDS
        readers = [
            threading.Thread(target=reader, args=(m.mountpoint, torrents, i, until, tally))
            for i in range(8)
        ]
        for r in readers:
            r.start()
        rng = random.Random(int(os.environ.get("TORRENTFS_SEED", "7")))
        actions: list[str] = []
        while time.monotonic() < until and not tally.wrong:
            time.sleep(rng.uniform(0.5, 2.5))  # pacing of the churn, not a verdict
            actions.append(churn(m, torrents, rng, tmp_path / "logs"))
        for r in readers:
            r.join(WAIT_BOUND + 60)
            assert not r.is_alive(), "a reader is stuck"
        assert not tally.wrong, tally.wrong
        # Everything back: every file reads whole and right, through the same mount.
        for t in torrents:
            if not t.seeding:
                restore_seeder(t, tmp_path / "logs")
            if not t.shown:
                m.add(t.torrent)
                t.shown = True
        final = 0
        for t in torrents:
            for path, data in t.files.items():
                wait_for(f"{path} to read whole", lambda p=path, d=data: reads_whole(m, p, d), 240)
                final += len(data)
        stop.set()
        sampler.join()
        assert m.proc.poll() is None, m.log()
        m.stop()
        assert "Traceback" not in m.log()
        print(
            f"churn {CHURN_SECONDS:g} s, {len(actions)} changes "
            f"({sum('killed' in a for a in actions)} seeder kills, "
            f"{sum('removed' in a for a in actions)} metainfo removals); "
            f"{tally.reads} reads, {tally.bytes / MiB:.1f} MiB read and compared during churn + "
            f"{final / MiB:.1f} MiB after; errors {tally.errors}; {tally.short} short at EOF or "
            f"removal; longest wait {tally.longest:.1f} s (read timeout {READ_TIMEOUT:g} s); "
            f"peak RSS {peak[0] / MiB:.0f} MiB"
        )
        assert set(tally.errors) <= {errno.EIO, errno.ENOENT}, tally.errors
        assert tally.longest <= WAIT_BOUND, tally.longest
        figures.record("faults injected", len(actions))
        figures.record("bytes verified", tally.bytes + final)
        figures.peak("peak RSS of the mount under churn, bytes", peak[0])
        assert 0 < peak[0] <= RSS_BOUND, peak[0]
        assert tally.bytes > 0
    finally:
        for t in torrents:
            t.seeder.stop()


def restore_seeder(t: SwarmTorrent, log_dir: Path) -> None:
    host, port = t.seeder.address
    t.seeder = LibtorrentPeer(
        "seed", t.torrent, t.data_dir, host=host, port=port, extra_args=SEED_ARGS, log_dir=log_dir
    )
    t.seeder.start()
    t.seeding = True


def reads_whole(m: TorrentfsMount, path: str, data: bytes) -> bool:
    try:
        return (m.mountpoint / path).read_bytes() == data
    except OSError:
        return False


def read_info_hash(torrent: Path) -> bytes:
    from swarm import read_torrent

    return read_torrent(torrent).info_hash
