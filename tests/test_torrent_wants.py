"""The engine's want handling (torrent.py): what a moved, dropped or urgent want asks of peers.

A fake connection records what the torrent queues for a peer; no network. Checked: a seek
withdraws (BEP 3 ``cancel``) exactly the requests nobody wants any more, so an urgent read does
not queue behind them at the peer; wants that only move forward over what is still being read,
and a read's urgent want dropped once its pieces are here, cancel nothing; a second connection
to a peer already connected (same peer id) is refused.
"""

from __future__ import annotations

import struct
from functools import partial
from typing import Any

import trio
import trio.testing

from torrentfs.bencode import encode
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.picker import Priority
from torrentfs.storage.base import MemoryStore
from torrentfs.torrent import RUSH_KEEP, Peer, Torrent, TorrentConfig
from torrentfs.types import PeerAddress
from torrentfs.wire import messages as m
from torrentfs.wire.handshake import Handshake

PIECE = 32 * 1024
PIECES = 64
CANCEL = 8  # BEP 3 message id


def metainfo() -> Metainfo:
    info = {
        b"name": b"f.bin",
        b"piece length": PIECE,
        b"length": PIECE * PIECES,
        b"pieces": b"\0" * 20 * PIECES,
    }
    return parse_metainfo(encode({b"info": info}))


class FakeConn:
    """What `Torrent` uses of a `PeerConnection`: it queues bytes and may close it."""

    def __init__(self, host: str) -> None:
        self.address = PeerAddress(host, 6881)
        self.sent = bytearray()
        self.closed = False
        self.outbox_bytes = 0

    def queue(self, data: bytes) -> None:
        self.sent += data

    def abort(self, reason: str) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True

    def cancels(self) -> list[tuple[int, int, int]]:
        """The ``cancel`` messages queued so far, ``(index, begin, length)``; then forget all."""
        out = []
        data, pos = bytes(self.sent), 0
        while pos + 4 <= len(data):
            (n,) = struct.unpack_from(">I", data, pos)
            if n and data[pos + 4] == CANCEL:
                out.append(struct.unpack_from(">III", data, pos + 5))
            pos += 4 + n
        self.sent.clear()
        return out


def torrent_with_seed() -> tuple[Torrent, Peer, FakeConn]:
    config = TorrentConfig(min_pipeline=4096, max_pipeline=4096)
    store = MemoryStore(PIECE, PIECE * PIECES)
    t = Torrent(metainfo(), store, peer_id=b"-TF0100-ourselves000", listen_port=1, config=config)
    peer = add_seed(t)
    return t, peer, peer.conn  # type: ignore[return-value]


def add_seed(t: Torrent) -> Peer:
    """A seeder on a `FakeConn`, connected, unchoking us, taking up to 4096 requests."""
    peer = Peer(FakeConn("127.0.0.2"), t)  # type: ignore[arg-type]
    peer.peer_id = b"-LT2080-theseeder000"
    peer.peer_choking = False
    peer.reqq = 4096
    t.peers[peer] = None
    t.picker.peer_have_all(peer)
    return peer


def requested_pieces(t: Torrent, peer: Peer) -> set[int]:
    return {r[0] for r in t.picker.requests_of(peer)}


def want(t: Torrent, first: int, last: int, priority: Priority = Priority.HIGH) -> Any:
    """A want of pieces ``first..last`` (inclusive)."""
    return t.want_range(first * PIECE, (last - first + 1) * PIECE, priority=priority, deadline=None)


async def test_a_seek_cancels_only_the_requests_nobody_wants_any_more() -> None:
    t, peer, conn = torrent_with_seed()
    window = want(t, 0, 9)
    other = want(t, 8, 12)  # another handle's window overlaps the first one
    assert requested_pieces(t, peer) == set(range(13))
    conn.cancels()
    window.update(40 * PIECE, 10 * PIECE, priority=Priority.HIGH, deadline=None)  # a seek
    cancelled = conn.cancels()
    assert {c[0] for c in cancelled} == set(range(8))  # 8..12 are still wanted by the other
    assert len(cancelled) == 8 * (PIECE // 16384)
    assert requested_pieces(t, peer) == set(range(8, 13)) | set(range(40, 50))
    other.drop()  # a release cancels what only it wanted
    assert {c[0] for c in conn.cancels()} == set(range(8, 13))
    assert requested_pieces(t, peer) == set(range(40, 50))


async def test_moving_over_pieces_still_read_and_dropping_a_served_read_cancel_nothing() -> None:
    t, peer, conn = torrent_with_seed()
    window = want(t, 10, 20)
    reads = [want(t, p, p, Priority.NOW) for p in (10, 11)]  # two reads wait for 10 and 11
    conn.cancels()
    window.update(12 * PIECE, 12 * PIECE, priority=Priority.HIGH, deadline=None)
    assert conn.cancels() == []  # 10 and 11 are still wanted by their reads
    assert {10, 11} <= requested_pieces(t, peer)
    # piece 10 arrives and is verified; its read's urgent want goes: nothing to cancel
    for begin in range(0, PIECE, 16384):
        t.picker.block_received(10, begin, peer, 16384)
    t._piece_verified(10)
    conn.cancels()
    reads[0].drop()
    assert conn.cancels() == []


async def test_a_second_connection_to_a_connected_peer_is_refused() -> None:
    t, peer, _conn = torrent_with_seed()
    again = FakeConn("127.0.0.2")
    hs = Handshake.ours(t.info_hash, peer.peer_id)
    await t._run_peer(again, hs)  # type: ignore[arg-type]
    assert again.closed and list(t.peers) == [peer]


def test_cancel_message_layout() -> None:
    conn = FakeConn("127.0.0.9")
    conn.queue(m.encode(m.Cancel(3, 16384, 16384)))
    assert conn.cancels() == [(3, 16384, 16384)]


def peer_queue(conn: FakeConn) -> list[tuple[int, int]]:
    """The requests a FIFO peer (libtorrent) would still have queued after what was sent:
    ``request`` appends, ``cancel`` removes; ``(piece, begin)`` in serving order."""
    queue: list[tuple[int, int]] = []
    data, pos = bytes(conn.sent), 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if n and data[pos + 4] in (m.REQUEST, CANCEL):
            piece, begin, _length = struct.unpack_from(">III", data, pos + 5)
            if data[pos + 4] == m.REQUEST:
                queue.append((piece, begin))
            else:
                queue.remove((piece, begin))
        pos += 4 + n
    return queue


def interest_sent(conn: FakeConn) -> list[bool]:
    """The ``interested`` (True) / ``not interested`` (False) messages queued, in order."""
    out = []
    data, pos = bytes(conn.sent), 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if n == 1 and data[pos + 4] in (m.INTERESTED, m.NOT_INTERESTED):
            out.append(data[pos + 4] == m.INTERESTED)
        pos += 4 + n
    return out


def piece_arrives(t: Torrent, peer: Peer, piece: int) -> None:
    for begin in range(0, PIECE, 16384):
        t.picker.block_received(piece, begin, peer, 16384)
    t._piece_verified(piece)


async def test_interest_is_kept_while_a_handle_is_open_and_dropped_with_the_last() -> None:
    t, peer, conn = torrent_with_seed()
    # No handle open: interest follows the wants (an idle torrent says it wants nothing).
    read = want(t, 3, 3, Priority.NOW)
    piece_arrives(t, peer, 3)
    read.drop()
    assert interest_sent(conn) == [True, False] and not peer.am_interested
    conn.sent.clear()
    t.open_handle()
    t.open_handle()  # two handles
    read = want(t, 5, 5, Priority.NOW)
    piece_arrives(t, peer, 5)
    read.drop()
    # Between reads: still interested (no unchoke to wait for on the next read), and interest
    # asks for nothing -- no piece nobody reads is requested.
    assert interest_sent(conn) == [True] and peer.am_interested
    assert t.picker.requests_of(peer) == []
    t.close_handle()
    assert interest_sent(conn) == [True] and peer.am_interested
    t.close_handle()  # the last handle: not interested any more
    assert interest_sent(conn) == [True, False] and not peer.am_interested
    assert t.picker.requests_of(peer) == []


async def test_a_read_goes_out_ahead_of_queued_readahead_and_all_at_once() -> None:
    t, _peer, conn = torrent_with_seed()
    window = want(t, 0, 39)  # readahead: 80 blocks queued at the peer
    assert len(peer_queue(conn)) == 80
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.read, 50 * PIECE + 100, 1000, timeout=30))
        await trio.testing.wait_all_tasks_blocked()
        queue = peer_queue(conn)
        # The read's piece comes right after the oldest RUSH_KEEP requests; the readahead
        # cancelled behind it is asked again after it (nothing lost, nothing asked twice).
        assert queue[RUSH_KEEP : RUSH_KEEP + 2] == [(50, 0), (50, 16384)]
        assert sorted(queue) == sorted([(p, b) for p in [*range(40), 50] for b in (0, 16384)])
        nursery.cancel_scope.cancel()
    window.drop()


async def test_a_read_asks_all_its_blocks_even_when_the_pipeline_is_full() -> None:
    t, _peer, conn = torrent_with_seed()
    t.config.min_pipeline = t.config.max_pipeline = 4
    want(t, 0, 39)
    assert len(peer_queue(conn)) == 4
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.read, 50 * PIECE, PIECE, timeout=30))
        await trio.testing.wait_all_tasks_blocked()
        assert peer_queue(conn)[4:] == [(50, 0), (50, 16384)]
        nursery.cancel_scope.cancel()


async def test_a_stream_is_not_reordered_by_its_own_reads() -> None:
    t, _peer, conn = torrent_with_seed()
    want(t, 0, 39)
    before = peer_queue(conn)
    async with trio.open_nursery() as nursery:
        for p in (0, 1, 20):  # the kernel's concurrent reads of a stream
            nursery.start_soon(partial(t.read, p * PIECE, PIECE, timeout=30))
            await trio.testing.wait_all_tasks_blocked()
        # pieces 0..19 are queued ahead of piece 20, but reads wait on 0 and 1 only: the
        # other 36 blocks ahead of 20 exceed RUSH_KEEP, so 4 of them move behind it
        queue = peer_queue(conn)
        assert sorted(queue) == sorted(before)
        assert queue.index((20, 0)) == 4 + RUSH_KEEP
        nursery.cancel_scope.cancel()


async def test_a_read_of_a_piece_being_verified_reorders_nothing() -> None:
    t, peer, conn = torrent_with_seed()
    want(t, 0, 39)
    for begin in (0, 16384):  # piece 30 is complete, on its way to the hash check
        t.picker.block_received(30, begin, peer, 16384)
    before = peer_queue(conn)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.read, 30 * PIECE, PIECE, timeout=30))
        await trio.testing.wait_all_tasks_blocked()
        assert peer_queue(conn) == before and conn.cancels() == []
        nursery.cancel_scope.cancel()


async def test_a_read_waiting_for_an_unchoke_asks_all_its_blocks_once_unchoked() -> None:
    """The first read of a torrent just activated waits for the peer's unchoke; then its
    pieces go out whole at once (as `read` rushes them), not a pipeline's depth at a time."""
    t, peer, conn = torrent_with_seed()
    t.config.min_pipeline = t.config.max_pipeline = 1  # a peer whose rate is not known yet
    peer.peer_choking = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.read, 50 * PIECE, PIECE, timeout=30))
        await trio.testing.wait_all_tasks_blocked()
        assert peer_queue(conn) == []  # choked: nothing may be asked yet
        await t._handle(peer, m.Unchoke(), trio.current_time())
        t._fill_requests(peer)  # as the peer's reader does after each receive
        assert peer_queue(conn) == [(50, 0), (50, 16384)]
        nursery.cancel_scope.cancel()
