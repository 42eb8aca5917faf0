"""Drop-behind of the mount's page cache (`torrentfs.fs.drop_behind`): which ranges a handle's
reads let go (pure), the worker thread on a plain file, and a real mount streaming a file from a
libtorrent seeder: every byte equal to the source, the pages far behind the reader gone from the
kernel's cache, and a complete file's pages kept.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from swarm import Opentracker, PeerFactory, sha256_file
from test_mount import mount_factory, seeded

from torrentfs.fs.drop_behind import DROP_SLACK, Behind, PageDropper, drop_lag

MiB = 1 << 20
__all__ = ["mount_factory"]  # the fixture, from test_mount


class Recorder(PageDropper):
    """A dropper that records what it is asked to drop (no thread, no file)."""

    def __init__(self, lag: int) -> None:
        super().__init__(Path("/nonexistent"), lambda: True, lag=lag)
        self.asked: list[tuple[str, int, int]] = []

    def submit(self, behind: Behind, start: int, end: int) -> None:
        self.asked.append((behind.path, start, end))


def stream(behind: Behind, start: int, end: int, size: int = MiB) -> None:
    for offset in range(start, end, size):
        behind.on_read(offset, min(size, end - offset))


def test_a_sequential_run_drops_only_what_is_lag_behind_in_chunks() -> None:
    d = Recorder(lag=8 * MiB)
    assert d.chunk == 2 * MiB
    b = d.follow("t/f.bin")
    stream(b, 0, 9 * MiB)
    assert d.asked == []  # 9 MiB read: only 1 MiB is 8 MiB behind, less than a chunk
    stream(b, 9 * MiB, 40 * MiB)
    assert d.asked[0] == ("t/f.bin", 0, 2 * MiB)
    # Contiguous, in order, never within `lag` of the furthest read.
    assert all(a[2] == b_[1] for a, b_ in zip(d.asked, d.asked[1:], strict=False))
    assert d.asked[-1][2] <= 40 * MiB - 8 * MiB
    assert d.asked[-1][2] > 40 * MiB - 8 * MiB - d.chunk


def test_out_of_order_readahead_is_tolerated() -> None:
    d = Recorder(lag=8 * MiB)
    b = d.follow("f")
    # The kernel's readahead answers 1 MiB reads up to a few MiB out of order.
    order = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 17, 18, 19, 20]
    for i in order:
        b.on_read(i * MiB, MiB)
    assert d.asked[0][1] == 0
    assert d.asked[-1][2] <= 21 * MiB - 8 * MiB


def test_a_rewind_or_a_jump_starts_a_new_run_and_drops_nothing_ahead() -> None:
    d = Recorder(lag=8 * MiB)
    b = d.follow("f")
    stream(b, 0, 30 * MiB)
    done = list(d.asked)
    # Rewind to 5 MiB (a player seeking back): nothing around or after it is dropped.
    stream(b, 5 * MiB, 12 * MiB)
    assert d.asked == done
    stream(b, 12 * MiB, 30 * MiB)
    assert all(start >= 5 * MiB for _, start, _ in d.asked[len(done) :])
    # A jump far ahead: the new run starts there.
    n = len(d.asked)
    stream(b, 500 * MiB, 505 * MiB)
    assert d.asked[n:] == []
    stream(b, 505 * MiB, 520 * MiB)
    assert all(start >= 500 * MiB for _, start, _ in d.asked[n:])
    assert all(end <= 520 * MiB - 8 * MiB for _, _, end in d.asked)


def test_drop_lag_scales_with_the_kernel_readahead() -> None:
    assert drop_lag(0) == DROP_SLACK
    assert drop_lag(8 * MiB) == 32 * MiB + DROP_SLACK


def test_the_worker_drops_pages_of_a_file_and_knows_its_own_thread(tmp_path: Path) -> None:
    data = tmp_path / "f.bin"
    data.write_bytes(os.urandom(4 * MiB))
    (tmp_path / "g.bin").write_bytes(os.urandom(MiB))
    d = PageDropper(tmp_path, lambda: True, lag=MiB)
    assert not d.is_own(os.getpid())
    closed = d.follow("g.bin")
    closed.close()  # a released handle: its drops not yet done are skipped
    d.submit(closed, 0, MiB)
    d.submit(d.follow("f.bin"), 0, 2 * MiB)
    d.submit(d.follow("missing.bin"), 0, MiB)  # an open that fails is logged and skipped
    d.close()
    assert d._thread is not None
    d._thread.join(10)
    assert not d._thread.is_alive()
    assert d.dropped == 2 * MiB
    assert d._tid is not None and d.is_own(d._tid)
    assert not d.is_own(threading.get_native_id())


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the kernel's page cache (util-linux ``fincore``)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.split()[0])


@pytest.mark.mount
@pytest.mark.interop
def test_a_streamed_file_leaves_only_its_tail_cached_and_a_complete_one_stays_cached(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mount_factory: Any
) -> None:
    size = 64 * MiB + 12345
    payload, torrent, _ = seeded(
        tmp_path, tracker, lt_seeder_factory, size, piece_length=256 * 1024
    )
    m = mount_factory("--read-timeout", "30", "--kernel-readahead", "1M")
    m.add(torrent)
    path = m.wait_entry("payload.bin")
    lag = drop_lag(MiB)
    # A cold stream, every byte checked.
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == sha256_file(payload.root)
    # Pages far behind the reader were dropped (by a worker thread, shortly after the reads):
    # what stays is about the last `lag` bytes plus one chunk and the kernel's readahead.
    deadline = time.monotonic() + 20
    while resident_bytes(path) > lag + lag // 4 + 2 * MiB and time.monotonic() < deadline:
        time.sleep(0.1)
    assert resident_bytes(path) <= lag + lag // 4 + 2 * MiB < size // 2
    # Until the worker is idle (what it is dropping now may be what the next handle reads):
    # the cache stays the same size for three polls in a row.
    seen = [resident_bytes(path)]
    while len(seen) < 4 or len(set(seen[-3:])) > 1:
        assert time.monotonic() < deadline + 10, seen
        time.sleep(0.2)
        seen.append(resident_bytes(path))
    # The file is complete now: a new handle keeps every page it reads.
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, check=True)
    assert out.stdout.split()[0].decode() == sha256_file(payload.root)
    # Page cache is advice, not a promise (the kernel may evict a few pages, and a drop that
    # was already under way when this handle opened may land): far more than the ~25 MiB a
    # streamed handle leaves must stay - here nearly the whole file.
    assert resident_bytes(path) >= size - 4 * MiB > lag + lag // 4 + 2 * MiB
