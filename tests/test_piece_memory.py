"""Verified pieces held in memory (piece_memory.py, and its use by torrent.py and session.py).

Pure checks of `PieceMemory` (bounded bytes over every owner, least recently used out first,
reads are copies), then the engine with a fake peer (no network): a read waiting for a piece
is served from memory as soon as the piece's hash matched, before its write ends; a piece that
fails its hash is never held nor served; a piece pushed out of memory before its reader ran is
read from disk once written; the disk budget's eviction and the torrent's close drop what they
must. Last, a real session pair on loopback: a stream is served from memory within the bound
and removing the torrent empties it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from test_torrent_wants import add_seed

from torrentfs.bencode import encode
from torrentfs.errors import ReadTimeout
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.picker import Priority
from torrentfs.piece_memory import PieceMemory
from torrentfs.session import SessionConfig, open_session
from torrentfs.storage.base import MemoryStore
from torrentfs.torrent import Peer, PieceBuffer, Torrent, TorrentConfig
from torrentfs.types import BLOCK_SIZE, PeerAddress

PIECE = 2 * BLOCK_SIZE
PIECES = 16
KiB = 1024


# --------------------------------------------------------------------------- PieceMemory


def buf(n: int, fill: int = 0) -> bytearray:
    return bytearray([fill]) * n


def test_memory_is_bounded_and_least_recently_used_goes_first() -> None:
    mem = PieceMemory(3 * 100)
    a, b, c, d = (buf(100, i) for i in range(4))
    assert mem.put("t", 0, a) == [] and mem.put("t", 1, b) == [] and mem.put("u", 0, c) == []
    assert mem.used == 300 and len(mem) == 3
    assert mem.read("t", 0, 0, 10) == bytes(10)  # piece 0 of t is now the most recent
    assert mem.put("u", 1, d) == [("t", 1, b)]  # so piece 1 of t goes, its buffer handed back
    assert not mem.holds("t", 1) and mem.holds("t", 0) and mem.used == 300
    big = buf(301)
    assert mem.put("t", 9, big) == [("t", 9, big)] and not mem.holds("t", 9)  # too large
    assert mem.used <= mem.limit
    off = PieceMemory(0)
    assert off.put("t", 0, buf(1)) != [] and len(off) == 0


def test_reads_are_copies_of_exact_ranges() -> None:
    mem = PieceMemory(1000)
    data = bytearray(range(100))
    mem.put("t", 4, data)
    got = mem.read("t", 4, 10, 5)
    assert got == bytes(range(10, 15)) and isinstance(got, bytes)
    data[10] = 99  # a later reuse of the buffer cannot change what a read returned
    assert got[0] == 10
    assert mem.read("t", 4, 95, 10) is None  # beyond the piece
    assert mem.read("t", 5, 0, 1) is None and mem.read("u", 4, 0, 1) is None
    st = mem.statistics()
    assert (st.hits, st.misses, st.pieces, st.used) == (1, 3, 1, 100)


def test_discard_and_drop_owner() -> None:
    mem = PieceMemory(1000)
    for i in range(3):
        mem.put("t", i, buf(100))
        mem.put("u", i, buf(100))
    assert mem.discard("t", 1) is not None and mem.discard("t", 1) is None
    assert mem.drop_owner("t") == 2
    assert mem.used == 300 and all(mem.holds("u", i) for i in range(3))
    with pytest.raises(ValueError):
        PieceMemory(-1)


# --------------------------------------------------------------------------- the engine


DATA = random.Random(7).randbytes(PIECE * PIECES)


def metainfo(name: bytes = b"f.bin") -> Metainfo:
    hashes = b"".join(
        hashlib.sha1(DATA[i * PIECE : (i + 1) * PIECE]).digest() for i in range(PIECES)
    )
    info = {b"name": name, b"piece length": PIECE, b"length": len(DATA), b"pieces": hashes}
    return parse_metainfo(encode({b"info": info}))


class GatedStore(MemoryStore):
    """Writes wait until `gate` is set: a piece can be caught verified but not yet written."""

    def __init__(self) -> None:
        super().__init__(PIECE, len(DATA))
        self.gate = trio.Event()

    async def write_piece(self, piece: int, data: bytes | bytearray) -> None:
        await self.gate.wait()
        await super().write_piece(piece, bytes(data))


def engine(memory: PieceMemory, name: bytes = b"f.bin") -> tuple[Torrent, GatedStore, Peer]:
    store = GatedStore()
    config = TorrentConfig(min_pipeline=4096, max_pipeline=4096)
    us = b"-TF0100-ourselves000"
    t = Torrent(metainfo(name), store, peer_id=us, listen_port=1, config=config)
    t.memory = memory
    t._storage_works()  # as after a first write: pieces may be served before their write
    return t, store, add_seed(t)


async def deliver(
    t: Torrent, peer: Peer, piece: int, corrupt: bool = False, reverse: bool = False
) -> None:
    """The peer sends every block of `piece` (requested before; last block first if
    `reverse`); returns once the verifier is done with it (hashing runs in a thread: not seen
    by `wait_all_tasks_blocked`)."""
    failures = t.hash_failures
    begins = range(0, PIECE, BLOCK_SIZE)
    for begin in reversed(begins) if reverse else begins:
        block = bytearray(DATA[piece * PIECE + begin : piece * PIECE + begin + BLOCK_SIZE])
        if corrupt:
            block[0] ^= 1
        await t._on_block(peer, piece, begin, bytes(block), trio.current_time())
    with trio.fail_after(10):
        while not (t.have[piece] or t.memory.holds(t, piece) or t.hash_failures > failures):
            await trio.sleep(0.001)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_waiting_read_is_served_from_memory_before_the_write_ends() -> None:
    mem = PieceMemory(4 * PIECE)
    t, store, peer = engine(mem)
    got: list[bytes] = []

    async def read() -> None:
        got.append(await t.read(3 * PIECE + 100, 5000, timeout=30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(t._verifier)
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await deliver(t, peer, 3)
        assert got == [DATA[3 * PIECE + 100 : 3 * PIECE + 5100]]
        assert not t.have[3] and store.written == frozenset()  # the write is still waiting
        assert mem.holds(t, 3)
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert t.have[3] and store.written == {3} and mem.holds(t, 3)
        nursery.cancel_scope.cancel()


def count_hashing_hops(monkeypatch: pytest.MonkeyPatch, store: MemoryStore) -> list[int]:
    """One entry per piece hashed in a worker-thread hop that serves its readers on a match
    (`PieceStore.write_verified` with ``on_match``), not hashed as its blocks came."""
    hops: list[int] = []
    real = store.write_verified

    async def counting(
        piece: int,
        data: bytes | bytearray,
        expected: bytes,
        on_match: Callable[[], None] | None = None,
    ) -> bool:
        if on_match is not None:
            hops.append(1)
        return await real(piece, data, expected, on_match)

    monkeypatch.setattr(store, "write_verified", counting)
    return hops


@pytest.mark.parametrize("corrupt", [False, True])
@pytest.mark.parametrize("order", ["in order", "reversed"])
async def test_the_only_piece_a_read_waits_for_is_hashed_as_its_blocks_come(
    monkeypatch: pytest.MonkeyPatch, corrupt: bool, order: str
) -> None:
    mem = PieceMemory(4 * PIECE)
    t, store, peer = engine(mem)
    hops = count_hashing_hops(monkeypatch, store)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(t._verifier)
        nursery.start_soon(partial(_append, got, t.read(7 * PIECE + 5, 100, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        # A seeder reading its disk with several threads sends blocks out of order.
        await deliver(t, peer, 7, corrupt=corrupt, reverse=order == "reversed")
        await trio.testing.wait_all_tasks_blocked()
        assert hops == []  # no hashing hop: the digest came with the last block
        if corrupt:
            assert got == [] and t.hash_failures == 1 and not mem.holds(t, 7)
        else:
            assert got == [DATA[7 * PIECE + 5 : 7 * PIECE + 105]] and mem.holds(t, 7)
            assert store.written == frozenset()  # served before the write
        nursery.cancel_scope.cancel()


async def test_a_piece_hashed_on_arrival_is_served_without_waiting_for_the_verifiers() -> None:
    """The verifiers may be busy hashing and writing other pieces (a stream's, the head and
    tail wanted at open): the read is served as the last block arrives, not after them."""
    mem = PieceMemory(4 * PIECE)
    t, store, peer = engine(mem)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:  # no verifier runs
        nursery.start_soon(partial(_append, got, t.read(4 * PIECE + 7, 300, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        await deliver(t, peer, 4)
        assert got == [DATA[4 * PIECE + 7 : 4 * PIECE + 307]]
        assert mem.holds(t, 4) and not t.have[4] and 4 in t._writing
        nursery.start_soon(t._verifier)  # the write still happens, once
        store.gate.set()
        with trio.fail_after(5):
            while not t.have[4]:
                await trio.sleep(0.001)
        assert store.written == {4} and mem.holds(t, 4) and 4 not in t._writing
        assert t.hash_failures == 0
        nursery.cancel_scope.cancel()


async def test_readahead_on_its_way_does_not_stop_hashing_on_arrival_a_stream_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mem = PieceMemory(8 * PIECE)
    t, store, peer = engine(mem)
    hops = count_hashing_hops(monkeypatch, store)
    store.gate.set()
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(t._verifier)
        t.want_range(2 * PIECE, PIECE, priority=Priority.HIGH, deadline=None)  # readahead
        await t._on_block(peer, 2, 0, DATA[2 * PIECE : 2 * PIECE + BLOCK_SIZE], 0.0)
        nursery.start_soon(partial(_append, got, t.read(7 * PIECE, 10, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        await deliver(t, peer, 7)
        assert hops == [] and got == [DATA[7 * PIECE : 7 * PIECE + 10]]
        # Two reads waiting (a stream): a piece whose first block comes while another piece
        # a read waits for is on its way is hashed in a worker thread.
        nursery.start_soon(partial(_append, got, t.read(9 * PIECE, 10, timeout=30)))
        nursery.start_soon(partial(_append, got, t.read(10 * PIECE, 10, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        await t._on_block(peer, 9, 0, DATA[9 * PIECE : 9 * PIECE + BLOCK_SIZE], 0.0)
        await deliver(t, peer, 10)
        assert hops == [1] and got[1:] == [DATA[10 * PIECE :][:10]]
        await deliver(t, peer, 9)  # its first block came alone: hashed on arrival
        assert hops == [1] and got[2:] == [DATA[9 * PIECE :][:10]]
        # A piece a handle's window covers is a stream's: hashed in a worker thread.
        t.want_range(12 * PIECE, 4 * PIECE, priority=Priority.HIGH, deadline=None)
        nursery.start_soon(partial(_append, got, t.read(12 * PIECE, 10, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        await deliver(t, peer, 12)
        assert hops == [1, 1] and got[3:] == [DATA[12 * PIECE :][:10]]
        nursery.cancel_scope.cancel()


@settings(max_examples=50, deadline=None)
@given(st.permutations(range(6)))
def test_hashing_on_arrival_in_any_order_is_the_piece_sha1(order: list[int]) -> None:
    size = 5 * BLOCK_SIZE + 123  # a short last block, as in a torrent's last piece
    data = random.Random(3).randbytes(size)
    buf = PieceBuffer(size)
    buf.hasher = hashlib.sha1()
    for b in order:
        begin = b * BLOCK_SIZE
        block = data[begin : begin + BLOCK_SIZE]
        buf.data[begin : begin + len(block)] = block
        buf.hash_arrived(begin, len(block))
    assert buf.hashed == size and not buf.early
    assert buf.hasher.digest() == hashlib.sha1(data).digest()


async def test_nothing_is_served_before_its_write_until_a_write_worked() -> None:
    mem = PieceMemory(4 * PIECE)
    t, store, peer = engine(mem)
    t._written_one = False  # a fresh torrent: the disk may be full
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(t._verifier)
        nursery.start_soon(partial(_append, got, t.read(3 * PIECE, 100, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        for begin in range(0, PIECE, BLOCK_SIZE):
            block = DATA[3 * PIECE + begin : 3 * PIECE + begin + BLOCK_SIZE]
            await t._on_block(peer, 3, begin, block, trio.current_time())
        await trio.sleep(0.2)  # hashed (in a thread), now waiting for its write
        assert got == [] and not mem.holds(t, 3)
        store.gate.set()
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.001)
        assert got == [DATA[3 * PIECE : 3 * PIECE + 100]] and t.have[3]
        assert t._written_one  # from now on, waiting reads are served before the write
        nursery.cancel_scope.cancel()


async def test_a_piece_failing_its_hash_is_never_held_nor_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mem = PieceMemory(4 * PIECE)
    t, store, peer = engine(mem)
    store.gate.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(t._verifier)
        nursery.start_soon(t._verifier)
        reading = trio.Event()
        outcome: list[BaseException] = []

        async def read() -> None:
            reading.set()
            try:
                await t.read(5 * PIECE, PIECE, timeout=5)
            except ReadTimeout as exc:
                outcome.append(exc)

        nursery.start_soon(read)
        await reading.wait()
        await trio.testing.wait_all_tasks_blocked()
        await deliver(t, peer, 5, corrupt=True)
        assert t.hash_failures == 1 and not mem.holds(t, 5) and len(mem) == 0
        await trio.sleep(6)
        assert len(outcome) == 1 and not t.have[5] and store.written == frozenset()
        nursery.cancel_scope.cancel()


async def test_pieces_verified_without_a_reader_are_held_once_written_within_the_bound() -> None:
    mem = PieceMemory(4 * PIECE)
    t, store, peer = engine(mem)
    store.gate.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(t._verifier)
        t.want_range(0, len(DATA), priority=Priority.HIGH, deadline=None)
        for p in range(PIECES):
            await deliver(t, peer, p)
            assert mem.used <= mem.limit
        assert t.have.all()
        assert [p for p in range(PIECES) if mem.holds(t, p)] == [12, 13, 14, 15]
        # Reads of held pieces come from memory, others from the store: the same bytes.
        hits, misses = mem.hits, mem.misses
        span = DATA[13 * PIECE - 10 : 13 * PIECE + 10]  # across pieces 12 and 13
        assert await t.read(13 * PIECE - 10, 20, timeout=1) == span
        assert await t.read(14 * PIECE, 2 * PIECE, timeout=1) == DATA[14 * PIECE :]
        assert (mem.hits, mem.misses) == (hits + 4, misses)
        assert await t.read(0, 100, timeout=1) == DATA[:100]  # from the store
        assert mem.misses == misses + 1
        nursery.cancel_scope.cancel()


async def test_a_piece_pushed_out_before_its_reader_ran_is_read_once_written() -> None:
    mem = PieceMemory(PIECE)  # room for one piece
    t, store, _peer = engine(mem)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(_append, got, t.read(2 * PIECE, 100, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        # Piece 2 is verified and its reader woken; before the reader runs, piece 9 pushes it
        # out of memory (no checkpoint in between).
        t._hold(2, bytearray(DATA[2 * PIECE : 3 * PIECE]))
        t._wake(2)
        mem.put(t, 9, bytearray(DATA[9 * PIECE : 10 * PIECE]))
        await trio.testing.wait_all_tasks_blocked()
        assert got == [] and not mem.holds(t, 2)  # it waits for the write: no zeros served
        store.gate.set()
        await store.write_piece(2, DATA[2 * PIECE : 3 * PIECE])
        t._piece_verified(2)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [DATA[2 * PIECE : 2 * PIECE + 100]]
        nursery.cancel_scope.cancel()


async def test_a_range_over_a_piece_held_unwritten_and_pieces_on_disk() -> None:
    mem = PieceMemory(4 * PIECE)
    t, store, _peer = engine(mem)
    store.gate.set()
    for p in (4, 6):  # on disk, not held
        await store.write_piece(p, DATA[p * PIECE : (p + 1) * PIECE])
        t._piece_verified(p)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(_append, got, t.read(4 * PIECE + 100, 2 * PIECE, timeout=30)))
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # waits for piece 5
        store.gate = trio.Event()  # piece 5's write will wait
        t._hold(5, bytearray(DATA[5 * PIECE : 6 * PIECE]))
        t._wake(5)
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.001)
        assert got == [DATA[4 * PIECE + 100 : 6 * PIECE + 100]] and not t.have[5]
        nursery.cancel_scope.cancel()


def test_a_buffer_pushed_out_while_its_piece_is_written_is_not_reused() -> None:
    mem = PieceMemory(PIECE)
    t, _store, _peer = engine(mem)
    a, b, c = (bytearray(PIECE) for _ in range(3))
    t._writing.add(3)  # piece 3 was served before its write, which still reads `a`
    t._hold(3, a)
    t._hold(4, b)  # pushes 3 out: `a` must not become the buffer of the next piece
    assert not any(x is a for x in t._spare_buffers)
    t._hold(5, c)  # pushes 4 out: written already, so `b` is reused
    assert any(x is b for x in t._spare_buffers)


async def _append(out: list[bytes], read: object) -> None:
    out.append(await read)  # type: ignore[misc]


async def test_eviction_and_close_drop_only_their_pieces() -> None:
    mem = PieceMemory(8 * PIECE)
    a, store_a, peer_a = engine(mem, b"a.bin")
    b, store_b, peer_b = engine(mem, b"b.bin")
    store_a.gate.set()
    store_b.gate.set()
    async with trio.open_nursery() as nursery:
        for t, peer in ((a, peer_a), (b, peer_b)):
            nursery.start_soon(t._verifier)
            t.want_range(0, 2 * PIECE, priority=Priority.HIGH, deadline=None)
            await deliver(t, peer, 0)
            await deliver(t, peer, 1)
        assert len(mem) == 4
        a.piece_evicted(1)  # the disk budget took it: memory must not serve it any more
        assert not mem.holds(a, 1) and mem.holds(a, 0)
        a.close()
        assert not mem.holds(a, 0) and mem.holds(b, 0) and mem.holds(b, 1)
        assert mem.used == 2 * PIECE
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- a real session


async def test_a_stream_through_a_session_is_served_from_bounded_memory(tmp_path: Path) -> None:
    piece, size, limit = 32 * KiB, 2 * 1024 * KiB, 128 * KiB
    data = random.Random(3).randbytes(size)
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "movie.bin").write_bytes(data)
    hashes = b"".join(hashlib.sha1(data[i : i + piece]).digest() for i in range(0, size, piece))
    info = {b"name": b"movie.bin", b"piece length": piece, b"length": size, b"pieces": hashes}
    m = parse_metainfo(encode({b"info": info}))

    def config(data_dir: str, state: str, **kw: object) -> SessionConfig:
        return SessionConfig(
            download_dir=tmp_path / data_dir, state_dir=tmp_path / state,
            listen_host="127.0.0.1", listen_port=0, trackers=False, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    async with (
        open_session(config("seed", "seed-state")) as seeder,
        open_session(config("cache", "state", piece_memory=limit)) as leecher,
    ):
        assert (await seeder.add_torrent(m)).complete
        torrent = await leecher.add_torrent(m)
        torrent.add_peers([PeerAddress("127.0.0.1", seeder.listen_port)])
        want = torrent.new_want()
        chunk = 16 * KiB
        for offset in range(0, size, chunk):
            want.update(offset, 8 * chunk, priority=Priority.HIGH, deadline=None)
            assert await torrent.read(offset, chunk, timeout=60) == data[offset : offset + chunk]
            assert leecher.memory.used <= limit
        want.drop()
        assert leecher.memory.hits > 0
        await leecher.remove_torrent(m.info_hash)
        assert leecher.memory.used == 0 and len(leecher.memory) == 0
