"""Readers (reader.py) against a fake engine: exact bytes, wants, readahead, timeouts, release."""

from __future__ import annotations

import logging

import pytest
import trio

from torrentfs.errors import ReadTimeout, TorrentRemoved
from torrentfs.picker import Priority
from torrentfs.readahead import MiB, ReadaheadPolicy
from torrentfs.reader import SEQUENTIAL_CHUNK, Reader, ReaderClosed


class FakeWant:
    def __init__(self, engine: FakeTorrent) -> None:
        self.engine = engine
        self.range: tuple[int, int] | None = None
        self.priority: Priority | None = None

    def update(
        self, offset: int, length: int, *, priority: Priority, deadline: float | None
    ) -> None:
        self.range = (offset, offset + length)
        self.priority = priority
        self.engine.wants.add(self)

    def drop(self) -> None:
        self.range = None
        self.engine.wants.discard(self)


class FakeTorrent:
    """Serves ``data``; ``missing`` byte ranges make reads wait until their timeout."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.wants: set[FakeWant] = set()
        self.open_handles = 0
        self.missing: list[tuple[int, int]] = []
        self.removed = False
        self.reads: list[tuple[int, int]] = []

    def new_want(self) -> FakeWant:
        return FakeWant(self)

    def open_handle(self) -> None:
        self.open_handles += 1

    def close_handle(self) -> None:
        self.open_handles -= 1

    def have_range(self, offset: int, length: int) -> bool:
        return not any(a < offset + length and offset < b for a, b in self.missing)

    async def read(self, offset: int, length: int, *, timeout: float) -> bytes:
        self.reads.append((offset, length))
        if self.removed:
            raise TorrentRemoved("gone")
        if not self.have_range(offset, length):
            await trio.sleep(timeout)
            raise ReadTimeout(f"piece {offset // 16384} not available (0 peers)")
        return self.data[offset : offset + length]

    def ranges(self) -> set[tuple[int, int]]:
        return {w.range for w in self.wants if w.range is not None}


DATA = bytes(range(256)) * 4096 * 8  # 8 MiB
POLICY = ReadaheadPolicy(min_bytes=64 * 1024, max_bytes=2 * MiB, slack_bytes=256 * 1024)


def make_reader(engine: FakeTorrent, offset: int, length: int, **kw: object) -> Reader:
    cfg = kw.pop("readahead", POLICY)
    rate = kw.pop("rate", 0.0)
    return Reader(
        engine, offset, length, name="t/f", readahead=cfg,  # type: ignore[arg-type]
        rate=lambda: rate, clock=lambda: 100.0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_reads_are_exact_and_short_only_at_eof() -> None:
    engine = FakeTorrent(DATA)
    r = make_reader(engine, 1000, 5000)
    assert await r.read(0, 100) == DATA[1000:1100]
    assert await r.read(4990, 100) == DATA[5990:6000]
    assert await r.read(5000, 10) == b""
    assert await r.read(7000, 10) == b""
    assert await r.read(10, 0) == b""
    assert engine.reads == [(1000, 100), (5990, 10)]


async def test_head_and_tail_wanted_on_open_and_all_wants_dropped_on_release() -> None:
    engine = FakeTorrent(DATA)
    engine.missing = [(0, len(DATA))]
    r = make_reader(engine, 4096, 7 * MiB)
    r.start()
    assert engine.ranges() == {(4096, 4096 + 2 * MiB), (4096 + 5 * MiB, 4096 + 7 * MiB)}
    r.release()
    r.release()
    assert engine.wants == set()
    with pytest.raises(ReaderClosed):
        await r.read(0, 1)


async def test_nothing_wanted_on_open_when_head_and_tail_are_here() -> None:
    engine = FakeTorrent(DATA)
    r = make_reader(engine, 0, 5 * MiB)
    r.start()
    assert engine.wants == set()


async def test_small_file_has_no_separate_tail() -> None:
    engine = FakeTorrent(DATA)
    engine.missing = [(0, len(DATA))]
    r = make_reader(engine, 0, 100)
    r.start()
    assert engine.ranges() == {(0, 100)}


async def test_sequential_reads_move_and_grow_the_ahead_want() -> None:
    engine = FakeTorrent(DATA)
    r = make_reader(engine, 1000, len(DATA) - 1000)
    sizes = []
    for i in range(8):
        await r.read(i * 65536, 65536)
        if i == 0:
            assert engine.ranges() == set()  # nothing ahead until the stream goes on
            continue
        (want,) = engine.ranges()
        front = (i + 1) * 65536
        # from the slack behind what was read (earlier reads may still wait there) ...
        assert want[0] == 1000 + max(0, front - POLICY.slack_bytes)
        sizes.append(want[1] - (1000 + front))  # ... to the window ahead of it
    assert sizes == sorted(sizes) and sizes[-1] == 2 * MiB and sizes[0] < sizes[-1]


async def test_a_seek_moves_the_window_at_once_and_resets_its_size() -> None:
    engine = FakeTorrent(DATA)
    r = make_reader(engine, 0, len(DATA))
    for i in range(16):
        await r.read(i * 65536, 65536)
    (before,) = engine.ranges()
    assert before[0] == 16 * 65536 - POLICY.slack_bytes and before[1] > 17 * 65536
    await r.read(6 * MiB, 4096)
    assert engine.ranges() == set()  # the old range is gone at once, nothing ahead yet
    await r.read(6 * MiB + 4096, 4096)
    (after,) = engine.ranges()  # the stream goes on: the window opens from the minimum
    assert after == (6 * MiB, 6 * MiB + 8192 + 2 * 64 * 1024)  # never before the seek


async def test_handles_are_independent() -> None:
    engine = FakeTorrent(DATA)
    a = make_reader(engine, 0, len(DATA))
    b = make_reader(engine, 0, len(DATA))
    for i in range(2):
        await a.read(i * 65536, 65536)
        await b.read(4 * MiB + i * 65536, 65536)
    assert len(engine.ranges()) == 2
    a.release()
    (left,) = engine.ranges()
    assert left[0] == 4 * MiB


async def test_timeout_is_logged_with_file_and_swarm_state(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FakeTorrent(DATA)
    engine.missing = [(0, 16384)]
    r = Reader(engine, 0, len(DATA), name="t/f", read_timeout=7.0, readahead=POLICY)
    with caplog.at_level(logging.WARNING), pytest.raises(ReadTimeout):
        await r.read(100, 10)
    assert trio.current_time() == pytest.approx(7.0)
    (line,) = [rec.getMessage() for rec in caplog.records]
    assert "t/f" in line and "offset 100" in line and "piece 0" in line and "0 peers" in line


async def test_removed_torrent_propagates() -> None:
    engine = FakeTorrent(DATA)
    engine.removed = True
    r = make_reader(engine, 0, 10)
    with pytest.raises(TorrentRemoved):
        await r.read(0, 10)


async def test_the_kernels_immediate_retry_of_a_timed_out_range_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeTorrent(DATA)
    engine.missing = [(0, 16384)]
    r = Reader(engine, 0, len(DATA), name="t/f", read_timeout=7.0, readahead=POLICY)
    with pytest.raises(ReadTimeout):
        await r.read(0, 65536)
    calls = len(engine.reads)
    with pytest.raises(ReadTimeout):
        await r.read(4096, 4096)  # the page-sized retry: no second 7 s wait
    assert len(engine.reads) == calls and trio.current_time() == pytest.approx(7.0)
    await trio.sleep(2)
    with pytest.raises(ReadTimeout):
        await r.read(4096, 4096)  # later: a real new attempt
    assert len(engine.reads) == calls + 1


async def test_small_sequential_reads_take_a_verified_chunk_at_once() -> None:
    engine = FakeTorrent(DATA)
    r = make_reader(engine, 1000, 3 * MiB)
    got = bytearray()
    for off in range(0, 2 * MiB, 32 * 1024):
        got += await r.read(off, 32 * 1024)
    assert got == DATA[1000 : 1000 + 2 * MiB]
    # The first read is exact (no run yet); each later chunk serves 32 reads.
    assert engine.reads[0] == (1000, 32 * 1024)
    assert all(n == SEQUENTIAL_CHUNK for _, n in engine.reads[1:])
    assert len(engine.reads) == 1 + -(-(2 * MiB - 32 * 1024) // SEQUENTIAL_CHUNK)
    # A seek ends the run: the read is exact again, even inside the chunk held.
    assert await r.read(100, 10) == DATA[1100:1110]
    assert engine.reads[-1] == (1100, 10)


async def test_small_sequential_reads_never_wait_for_bytes_not_asked() -> None:
    engine = FakeTorrent(DATA)
    engine.missing = [(1000 + 200 * 1024, 1000 + 300 * 1024)]
    r = make_reader(engine, 1000, 3 * MiB)
    assert await r.read(0, 4096) == DATA[1000:5096]
    with trio.fail_after(1):  # a chunk would reach the missing bytes: the read stays exact
        assert await r.read(4096, 4096) == DATA[5096:9192]
    assert engine.reads == [(1000, 4096), (5096, 4096)]
    r.release()
    with pytest.raises(ReaderClosed):
        await r.read(8192, 4096)
