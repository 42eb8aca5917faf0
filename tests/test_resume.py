"""Resume state: save/load, invalidation by changed files, crash-safe ordering, recheck."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import fastbencode
import pytest
import trio
import trio.testing

from torrentfs.bitfield import Bitfield
from torrentfs.errors import StorageError
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.storage import (
    FileStore,
    MemoryStore,
    ResumeWriter,
    load_resume,
    recheck,
    resume_path,
)
from torrentfs.storage.resume import load_resume_state

PAD = "<pad>"


def build_torrent(
    files: list[tuple[str, int]], piece_length: int, *, seed: int = 1, zero_from: int = -1
) -> tuple[Metainfo, bytes]:
    """A real parsed multi-file torrent named ``t`` and its data; ``(PAD, n)`` = BEP 47 pad.

    Bytes from `zero_from` on are zeros (to get all-zero pieces)."""
    rng = random.Random(seed)
    data = bytearray()
    entries = []
    for path, length in files:
        if path == PAD:
            data += bytes(length)
            entries.append({b"length": length, b"path": [b".pad", b"%d" % length], b"attr": b"p"})
        else:
            data += rng.randbytes(length)
            entries.append({b"length": length, b"path": [p.encode() for p in path.split("/")]})
    if zero_from >= 0:
        data[zero_from:] = bytes(len(data) - zero_from)
    pieces = b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )
    info = {b"name": b"t", b"piece length": piece_length, b"pieces": pieces, b"files": entries}
    return parse_metainfo(fastbencode.bencode({b"info": info})), bytes(data)


def piece_data(m: Metainfo, data: bytes, i: int) -> bytes:
    return data[i * m.piece_length : i * m.piece_length + m.piece_size(i)]


def bits(m: Metainfo, pieces: Iterable[int]) -> Bitfield:
    bf = Bitfield(m.num_pieces)
    for i in pieces:
        bf.set(i)
    return bf


def claimed(path: Path, m: Metainfo) -> set[int]:
    """The pieces a state file claims, read straight from its JSON."""
    state = json.loads(path.read_bytes())
    return set(Bitfield.from_bytes(m.num_pieces, base64.b64decode(state["pieces"])).iter_set())


# a: pieces 0-1; b: piece 1 (spans a|b|c), c: pieces 1-3, pad, d: piece 4-5
LAYOUT = [("a", 1500), ("b", 100), ("sub/c", 2400), ("empty", 0), (PAD, 96), ("d", 1500)]
PIECE = 1024


async def download(
    tmp_path: Path, pieces: Iterable[int] | None = None
) -> tuple[Metainfo, bytes, FileStore]:
    m, data = build_torrent(LAYOUT, PIECE)
    store = FileStore(tmp_path / "dl", m)
    todo = range(m.num_pieces) if pieces is None else pieces
    for i in todo:
        await store.write_piece(i, piece_data(m, data, i))
    return m, data, store


async def test_save_load_round_trip(tmp_path: Path) -> None:
    m, _, store = await download(tmp_path, [0, 2, 3, 5])
    path = resume_path(tmp_path / "state", m.info_hash)
    assert path == tmp_path / "state" / "resume" / f"{m.info_hash.hex()}.resume"
    writer = ResumeWriter(path, m, tmp_path / "dl")
    for i in (0, 2, 3, 5):
        writer.mark_verified(i)
    await writer.flush(store)
    await store.aclose()
    assert load_resume(path, m, tmp_path / "dl") == bits(m, [0, 2, 3, 5])
    assert not list(path.parent.glob("*.tmp"))  # no temp file left behind


async def test_initial_pieces_are_written_and_later_marks_added(tmp_path: Path) -> None:
    m, _, store = await download(tmp_path)
    path = tmp_path / "r.resume"
    writer = ResumeWriter(path, m, tmp_path / "dl", bits(m, [1, 2]))
    await writer.flush(store)
    assert load_resume(path, m, tmp_path / "dl") == bits(m, [1, 2])
    writer.mark_verified(4)
    await writer.flush(store)
    assert load_resume(path, m, tmp_path / "dl") == bits(m, [1, 2, 4])
    await store.aclose()


async def test_truncated_file_invalidates_only_its_pieces(tmp_path: Path) -> None:
    m, _, store = await download(tmp_path)
    path = tmp_path / "r.resume"
    writer = ResumeWriter(path, m, tmp_path / "dl", bits(m, range(m.num_pieces)))
    await writer.flush(store)
    await store.aclose()
    os.truncate(tmp_path / "dl" / "t" / "sub" / "c", 1000)  # c: pieces 1, 2, 3
    assert load_resume(path, m, tmp_path / "dl") == bits(m, [0, 4, 5])


async def test_touched_or_missing_file_invalidates_its_pieces(tmp_path: Path) -> None:
    m, _, store = await download(tmp_path)
    path = tmp_path / "r.resume"
    writer = ResumeWriter(path, m, tmp_path / "dl", bits(m, range(m.num_pieces)))
    await writer.flush(store)
    await store.aclose()
    st = os.stat(tmp_path / "dl" / "t" / "d")
    os.utime(tmp_path / "dl" / "t" / "d", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert load_resume(path, m, tmp_path / "dl") == bits(m, [0, 1, 2, 3])
    (tmp_path / "dl" / "t" / "b").unlink()  # b: piece 1 only
    assert load_resume(path, m, tmp_path / "dl") == bits(m, [0, 2, 3])


async def test_corrupt_or_foreign_state_loads_empty(tmp_path: Path) -> None:
    m, _, store = await download(tmp_path)
    other, _ = build_torrent(LAYOUT, PIECE, seed=2)
    path = tmp_path / "r.resume"
    assert load_resume(path, m, tmp_path / "dl") == Bitfield(m.num_pieces)  # missing
    writer = ResumeWriter(path, m, tmp_path / "dl", bits(m, [0]))
    await writer.flush(store)
    await store.aclose()
    assert load_resume(path, other, tmp_path / "dl") == Bitfield(other.num_pieces)
    good = path.read_bytes()
    for bad in (b"", b"{", b"[]", good[:-5], good.replace(b'"version":1', b'"version":9')):
        path.write_bytes(bad)
        assert load_resume(path, m, tmp_path / "dl") == Bitfield(m.num_pieces)
    state = json.loads(good)
    state["files"][0] = ["x", 1]
    path.write_text(json.dumps(state))
    assert load_resume(path, m, tmp_path / "dl") == Bitfield(m.num_pieces)
    path.write_bytes(b" " * 10_000_000)  # implausibly large: not even parsed
    assert load_resume(path, m, tmp_path / "dl") == Bitfield(m.num_pieces)


# -- crash safety -----------------------------------------------------------------------------


class WatchedStore(MemoryStore):
    """A MemoryStore whose sync() pauses, so the test can act while the data is being synced,
    and which checks at every sync that the state file claims nothing that is not durable."""

    def __init__(self, m: Metainfo, state: Path) -> None:
        super().__init__(m.piece_length, m.total_size)
        self.m = m
        self.state = state
        self.entered = trio.Event()
        self.proceed = trio.Event()
        self.pause = False
        self.fail = False

    def check(self) -> None:
        if self.state.exists():
            assert claimed(self.state, self.m) <= self.durable

    async def sync(self) -> None:
        self.check()
        if self.pause:
            self.entered.set()
            await self.proceed.wait()
        if self.fail:
            raise StorageError("fdatasync: I/O error", errno=5)
        await super().sync()
        self.check()


async def test_state_never_claims_unsynced_pieces(tmp_path: Path) -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    path = tmp_path / "r.resume"
    store = WatchedStore(m, path)
    writer = ResumeWriter(path, m, tmp_path / "dl")

    await store.write_piece(0, piece_data(m, data, 0))
    writer.mark_verified(0)
    store.pause = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.flush, store)
        await store.entered.wait()
        # A piece written and marked while the sync runs is not covered by that sync.
        await store.write_piece(1, piece_data(m, data, 1))
        writer.mark_verified(1)
        store.proceed.set()
    assert claimed(path, m) == {0}
    assert writer.pending_count == 1

    # A failed sync writes nothing.
    store.pause = False
    store.fail = True
    with pytest.raises(StorageError):
        await writer.flush(store)
    assert claimed(path, m) == {0}
    store.fail = False
    await writer.flush(store)
    assert claimed(path, m) == {0, 1}


async def test_random_interleavings_with_crashes(tmp_path: Path) -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    rng = random.Random(7)
    for round_ in range(12):
        path = tmp_path / f"r{round_}.resume"
        store = WatchedStore(m, path)
        writer = ResumeWriter(path, m, tmp_path / "dl")
        for _ in range(20):
            action = rng.random()
            piece = rng.randrange(m.num_pieces)
            if action < 0.5:
                await store.write_piece(piece, piece_data(m, data, piece))
                writer.mark_verified(piece)
            elif action < 0.8:
                await writer.flush(store)
            elif action < 0.9:
                await writer.evict(store, piece)
            else:
                store.simulate_crash()
                if path.exists():
                    assert claimed(path, m) <= store.durable
                writer = ResumeWriter(path, m, tmp_path / "dl")
        store.check()


async def test_evict_persists_before_destroying(tmp_path: Path) -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    path = tmp_path / "r.resume"
    store = WatchedStore(m, path)
    writer = ResumeWriter(path, m, tmp_path / "dl")
    for i in range(m.num_pieces):
        await store.write_piece(i, piece_data(m, data, i))
        writer.mark_verified(i)
    await writer.flush(store)
    assert claimed(path, m) == set(range(m.num_pieces))
    events: list[str] = []
    real_evict = store.evict_piece

    async def evict(piece: int) -> None:
        events.append(f"evict {piece}: claimed={sorted(claimed(path, m))}")
        await real_evict(piece)

    store.evict_piece = evict  # type: ignore[method-assign]
    await writer.evict(store, 2)
    assert events == ["evict 2: claimed=[0, 1, 3, 4, 5]"]


class TimedStore(MemoryStore):
    """Records the (virtual) time of every sync(), i.e. of every flush's start."""

    def __init__(self, m: Metainfo) -> None:
        super().__init__(m.piece_length, m.total_size)
        self.syncs: list[float] = []

    async def sync(self) -> None:
        self.syncs.append(trio.current_time())
        await super().sync()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.25)


async def test_run_flushes_by_count_and_by_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Virtual time: the assertions are about which deadline triggered each flush.
    m, data = build_torrent(LAYOUT, PIECE)
    path = tmp_path / "r.resume"
    store = TimedStore(m)
    writer = ResumeWriter(
        path, m, tmp_path / "dl", max_pending=3, max_interval=100.0, min_interval=1.0
    )
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(writer.run, store)
        await until(lambda: writer.flush_count == 1)
        assert 100 <= store.syncs[0] - start < 110  # the interval: writes the initial state

        marked = trio.current_time()
        for i in range(3):
            await store.write_piece(i, piece_data(m, data, i))
            writer.mark_verified(i)
        await until(lambda: writer.flush_count == 2)
        assert store.syncs[1] - marked < 50  # three pending pieces woke it early
        assert claimed(path, m) == {0, 1, 2}

        marked = trio.current_time()
        await store.write_piece(3, piece_data(m, data, 3))
        writer.mark_verified(3)
        await until(lambda: writer.flush_count == 3)
        assert store.syncs[2] - marked >= 50  # one piece waited for the interval
        assert claimed(path, m) == {0, 1, 2, 3}
        nursery.cancel_scope.cancel()


async def test_should_flush_policy(tmp_path: Path) -> None:
    m, _ = build_torrent(LAYOUT, PIECE)
    writer = ResumeWriter(
        tmp_path / "r", m, tmp_path, max_pending=2, max_interval=10.0, min_interval=1.0
    )
    assert writer.should_flush(0.0)  # never saved
    await writer.flush(MemoryStore(m.piece_length, m.total_size))
    now = trio.current_time()
    assert not writer.should_flush(now + 100)  # nothing new
    writer.mark_verified(0)
    assert not writer.should_flush(now + 5)
    assert writer.should_flush(now + 10)
    writer.mark_verified(1)
    assert not writer.should_flush(now + 0.5)  # rate limit
    assert writer.should_flush(now + 1)


# -- recheck ----------------------------------------------------------------------------------


async def test_recheck_finds_exactly_the_good_pieces(tmp_path: Path) -> None:
    m, data, store = await download(tmp_path, [0, 1, 2, 3, 5])  # piece 4 never written
    await store.aclose()
    top = tmp_path / "dl" / "t"
    with open(top / "a", "r+b") as f:  # corrupt piece 0
        f.seek(10)
        f.write(b"\xff" if data[10] != 0xFF else b"\x00")
    with open(top / "sub" / "c", "r+b") as f:  # corrupt piece 2 (c holds bytes 1600..4000)
        f.seek(2100 - 1600)
        f.write(bytes([data[2100] ^ 1]))
    store = FileStore(tmp_path / "dl", m)
    checked: list[int] = []
    found = await recheck(store, m, progress=checked.append)
    assert found == bits(m, [1, 3, 5])
    assert sorted(checked) == list(range(m.num_pieces))
    assert await recheck(store, m, skip=bits(m, [1])) == bits(m, [3, 5])
    assert await recheck(store, m, pieces=[0, 5]) == bits(m, [5])
    await store.aclose()
    (top / "b").unlink()  # piece 1 loses part of its data
    store = FileStore(tmp_path / "dl", m)
    assert await recheck(store, m) == bits(m, [3, 5])
    await store.aclose()


async def test_recheck_of_nothing_on_disk(tmp_path: Path) -> None:
    m, _ = build_torrent(LAYOUT, PIECE)
    store = FileStore(tmp_path / "dl", m)
    assert await recheck(store, m) == Bitfield(m.num_pieces)
    await store.aclose()
    assert not (tmp_path / "dl").exists()


async def test_recheck_skips_holes_but_accepts_all_zero_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    piece = 64 * 1024
    # one file of 8 pieces whose last 4 are all zeros
    m, data = build_torrent([("f", 8 * piece)], piece, zero_from=4 * piece)
    store = FileStore(tmp_path, m)
    await store.write_piece(1, piece_data(m, data, 1))  # only piece 1 written: the rest is hole
    reads: list[int] = []
    real_read = store.read_piece

    async def counting_read(i: int) -> bytes:
        reads.append(i)
        return await real_read(i)

    monkeypatch.setattr(store, "read_piece", counting_read)
    found = await recheck(store, m)
    # pieces 4..7 are zeros and read as zeros from the holes: verified without reading them
    assert found == bits(m, [1, 4, 5, 6, 7])
    assert reads == [1]
    await store.aclose()


async def test_recheck_with_memory_store() -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    store = MemoryStore(m.piece_length, m.total_size)
    await store.write_piece(2, piece_data(m, data, 2))
    await store.write_piece(3, piece_data(m, data, 2)[:PIECE])  # wrong data for piece 3
    assert await recheck(store, m, concurrency=1) == bits(m, [2])


async def test_load_resume_state_says_when_nothing_needs_rewriting(tmp_path: Path) -> None:
    m, _, store = await download(tmp_path)
    path = tmp_path / "r.resume"
    missing = load_resume_state(path, m, tmp_path / "dl")
    assert missing.clean and not missing.verified.any()  # no file: nothing to write either
    writer = ResumeWriter(path, m, tmp_path / "dl", bits(m, range(m.num_pieces)))
    await writer.flush(store)
    await store.aclose()
    same = load_resume_state(path, m, tmp_path / "dl")
    assert same.clean and same.verified.all() and same.saved_stats() == same.stats
    d = tmp_path / "dl" / "t" / "d"
    os.utime(d, ns=(os.stat(d).st_atime_ns, os.stat(d).st_mtime_ns + 1))
    moved = load_resume_state(path, m, tmp_path / "dl")
    assert not moved.clean and moved.saved_stats() is None
    assert moved.verified == bits(m, [0, 1, 2, 3])
    path.write_text("garbage")
    assert not load_resume_state(path, m, tmp_path / "dl").clean


async def test_a_writer_started_from_a_clean_state_writes_nothing_until_a_change(
    tmp_path: Path,
) -> None:
    m, _, store = await download(tmp_path, [0, 4])
    path = tmp_path / "r.resume"
    first = ResumeWriter(path, m, tmp_path / "dl", bits(m, [0]))
    await first.flush(store)
    before = os.stat(path).st_mtime_ns, path.read_bytes()
    state = load_resume_state(path, m, tmp_path / "dl")
    idle = ResumeWriter(path, m, tmp_path / "dl", state.verified, saved=state.saved_stats())
    assert not idle.should_flush(1e9)
    await idle.flush(store)  # an idle torrent: no write, no fsync
    assert idle.flush_count == 0 and (os.stat(path).st_mtime_ns, path.read_bytes()) == before
    idle.mark_verified(4)
    await idle.flush(store)
    assert load_resume(path, m, tmp_path / "dl") == bits(m, [0, 4])
    await store.aclose()
