"""The engine's verify-and-store path (torrent.py `_verifier`, `PieceStore.write_verified`).

A fake connection stands in for the peer; the store is a `MemoryStore`. Checked: a completed
piece is hashed and stored in one step, only when its SHA-1 matches (a bad piece is neither
stored nor marked, and its sender is banned); full-size piece buffers are reused for later
pieces once stored, and a reused buffer never leaks an earlier piece's bytes (even a failed
one's) into a later piece; a short last piece gets its own buffer.
"""

from __future__ import annotations

import hashlib
import random

import trio
import trio.testing

from torrentfs.bencode import encode
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.storage.base import MemoryStore
from torrentfs.torrent import Peer, Torrent, TorrentConfig
from torrentfs.types import PeerAddress

PIECE = 32 * 1024
BLOCK = 16 * 1024
PIECES = 6
TAIL = 20 * 1024  # the last piece is short
SIZE = PIECE * (PIECES - 1) + TAIL


class FakeConn:
    """What `Torrent` uses of a `PeerConnection` here: it queues bytes and may be aborted."""

    def __init__(self, host: str) -> None:
        self.address = PeerAddress(host, 6881)
        self.sent = bytearray()
        self.aborted: str | None = None
        self.outbox_bytes = 0

    def queue(self, data: bytes) -> None:
        self.sent += data

    def abort(self, reason: str) -> None:
        self.aborted = reason


def torrent_data() -> tuple[Metainfo, bytes]:
    data = random.Random(7).randbytes(SIZE)
    hashes = b"".join(hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, SIZE, PIECE))
    info = {b"name": b"f.bin", b"piece length": PIECE, b"length": SIZE, b"pieces": hashes}
    return parse_metainfo(encode({b"info": info})), data


def add_seed(t: Torrent, host: str) -> Peer:
    peer = Peer(FakeConn(host), t)  # type: ignore[arg-type]
    peer.peer_id = b"-LT2080-" + host.encode().ljust(12, b"0")[:12]
    peer.peer_choking = False
    peer.am_interested = True
    peer.reqq = 4096
    t.peers[peer] = None
    t.picker.peer_have_all(peer)
    return peer


async def deliver(t: Torrent, peer: Peer, piece: int, data: bytes) -> None:
    """Every block of `piece` from `peer` (as asked), then let the verifiers run."""
    size = t.geometry.piece_size(piece)
    for begin in range(0, size, BLOCK):
        block = data[begin : begin + BLOCK]
        await t._on_block(peer, piece, begin, memoryview(block), trio.current_time())
    await trio.testing.wait_all_tasks_blocked()


async def test_pieces_are_hashed_stored_and_their_buffers_reused() -> None:
    m, data = torrent_data()
    store = MemoryStore(PIECE, SIZE)
    config = TorrentConfig(min_pipeline=4096, max_pipeline=4096)
    t = Torrent(m, store, peer_id=b"-TF0100-ourselves000", listen_port=1, config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        liar = add_seed(t, "127.0.0.3")
        honest = add_seed(t, "127.0.0.2")
        t.set_download_all()
        asked = {(p, b) for p, b, _ in t.picker.requests_of(honest)}
        assert {(0, 0), (0, BLOCK)} <= asked

        def piece(i: int) -> bytes:
            return data[i * PIECE : i * PIECE + m.piece_size(i)]

        await deliver(t, honest, 0, piece(0))
        assert t.have[0] and await store.read_piece(0) == piece(0)
        (spare,) = t._spare_buffers  # piece 0's buffer, free again

        # The liar's piece 1 fails its hash: not stored, not marked, the liar banned; its
        # buffer (the recycled one) goes back to the spares all the same.
        t.picker.release_requests(honest)
        t.picker.pick(liar, 64, trio.current_time())
        await deliver(t, liar, 1, bytes(reversed(piece(1))))
        assert not t.have[1] and 1 not in store.written
        assert t.hash_failures == 1 and liar.conn.aborted  # type: ignore[attr-defined]
        assert t._spare_buffers == [spare]
        dirty = bytes(spare)

        # Piece 2 reuses that buffer, every byte overwritten: stored correct.
        t.picker.release_requests(liar)
        del t.peers[liar]
        t.picker.peer_gone(liar)
        t.picker.pick(honest, 4096, trio.current_time())
        await deliver(t, honest, 2, piece(2)[:BLOCK])
        assert t.buffers[2].data is spare and bytes(spare) != dirty
        await deliver(t, honest, 2, piece(2))
        assert t.have[2] and await store.read_piece(2) == piece(2)

        # The short last piece has a buffer of its own size, never kept as a spare.
        await deliver(t, honest, PIECES - 1, piece(PIECES - 1))
        assert t.have[PIECES - 1] and await store.read_piece(PIECES - 1) == piece(PIECES - 1)
        assert all(len(b) == PIECE for b in t._spare_buffers)
        for i in (1, 3, 4):
            t.picker.pick(honest, 4096, trio.current_time())
            await deliver(t, honest, i, piece(i))
        assert t.complete
        assert await store.read_range(0, SIZE) == data
        assert len(t._spare_buffers) <= t._max_spare_buffers
        nursery.cancel_scope.cancel()
