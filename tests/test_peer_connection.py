"""PeerConnection (net/peer.py) on a real socket pair: zero-copy framing out of its reused,
growing receive buffer stays correct whatever the sender's chunking and pacing (BEP 3)."""

from __future__ import annotations

import hashlib
import random
import socket

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.net.peer import MAX_RECEIVE_SIZE, RECEIVE_SIZE, PeerConnection
from torrentfs.types import PeerAddress
from torrentfs.wire import handshake as hs
from torrentfs.wire import messages as m

INFO_HASH = hashlib.sha1(b"peer connection").digest()
NUM_PIECES = 9
PIECE_LENGTH = 4 * 16384
LAST_PIECE = 20000


def piece_size(index: int) -> int:
    return LAST_PIECE if index == NUM_PIECES - 1 else PIECE_LENGTH


def stream_of_messages(seed: int, count: int) -> tuple[bytes, list[m.Message]]:
    rng = random.Random(seed)
    messages: list[m.Message] = [m.Unchoke()]
    for _ in range(count):
        index = rng.randrange(NUM_PIECES)
        if rng.random() < 0.1:
            messages.append(m.Have(index))
            continue
        begin = rng.randrange(0, piece_size(index), 16384)
        length = min(16384, piece_size(index) - begin)
        messages.append(m.Piece(index, begin, rng.randbytes(length)))
    return b"".join(m.encode(msg) for msg in messages), messages


async def deliver(data: bytes, count: int, sizes: list[int], pauses: list[bool]) -> list[object]:
    """Send `data` in chunks of `sizes` (with a pause where `pauses` says) and return the
    `count` events a PeerConnection makes of them, each piece block copied out at once."""
    ours, theirs = trio.socket.socketpair()
    sender = trio.SocketStream(theirs)
    conn = PeerConnection(trio.SocketStream(ours), PeerAddress("127.0.0.1", 1), outgoing=True)
    handshake = hs.Handshake(INFO_HASH, b"-XX0001-" + b"p" * 12, hs.DEFAULT_RESERVED)
    stream = hs.encode(handshake) + data
    events: list[object] = []

    async def send() -> None:
        pos = 0
        turn = 0
        while pos < len(stream):
            size = sizes[turn % len(sizes)]
            await sender.send_all(stream[pos : pos + size])
            if pauses[turn % len(pauses)]:
                await trio.sleep(0.001)  # let the reader drain: small receives
            pos += size
            turn += 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            assert await conn.receive_handshake() == handshake
            conn.start_protocol(NUM_PIECES, piece_size)
            while len(events) < count:
                for e in await conn.receive_events():
                    if isinstance(e, m.Piece):
                        assert isinstance(e.block, memoryview)  # zero copy
                        e = m.Piece(e.index, e.begin, bytes(e.block))
                    events.append(e)
    await conn.aclose()
    await sender.aclose()
    return events


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**32),
    # Byte-sized chunks are the sans-IO tests' job (tests/test_wire_protocol.py); here the
    # chunks straddle frames in every way and the pacing varies what each receive returns.
    st.lists(st.integers(500, 300_000), min_size=1, max_size=20),
    st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_any_chunking_and_pacing_gives_the_blocks_sent(
    seed: int, sizes: list[int], pauses: list[bool]
) -> None:
    data, expected = stream_of_messages(seed, 40)
    assert trio.run(deliver, data, len(expected), sizes, pauses) == expected


def test_receive_buffer_grows_for_a_fast_peer() -> None:
    data, expected = stream_of_messages(7, 400)  # ~6 MiB in large writes

    async def main() -> None:
        ours, theirs = trio.socket.socketpair()
        conn = PeerConnection(trio.SocketStream(ours), PeerAddress("127.0.0.1", 1), outgoing=True)
        sender = trio.SocketStream(theirs)
        handshake = hs.Handshake(INFO_HASH, b"-XX0001-" + b"q" * 12, hs.DEFAULT_RESERVED)
        got: list[object] = []
        sizes = set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send_all, hs.encode(handshake) + data)
            await conn.receive_handshake()
            conn.start_protocol(NUM_PIECES, piece_size)
            while len(got) < len(expected):
                sizes.add(len(conn._rbuf))
                for e in await conn.receive_events():
                    if isinstance(e, m.Piece):
                        e = m.Piece(e.index, e.begin, bytes(e.block))
                    got.append(e)
        assert got == expected
        assert min(sizes) <= RECEIVE_SIZE and max(sizes) <= MAX_RECEIVE_SIZE
        await conn.aclose()
        await sender.aclose()

    trio.run(main)


def copied(event: object) -> object:
    """A `Piece` event with its block copied out of the receive buffer; others as they are."""
    return (
        m.Piece(event.index, event.begin, bytes(event.block))
        if isinstance(event, m.Piece)
        else event
    )


def test_what_is_received_over_tcp_is_acknowledged_at_once() -> None:
    """After every receive the connection is out of delayed-ACK ("pingpong") mode: a peer
    sending with Nagle's algorithm gets the ACK it waits for before the tail of a piece at
    once, not 40 ms later (Linux: ``getsockopt(TCP_QUICKACK)`` is 1 outside that mode)."""
    quickack = socket.TCP_QUICKACK

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        ours = await trio.open_tcp_stream("127.0.0.1", port)
        theirs = await listeners[0].accept()
        conn = PeerConnection(ours, PeerAddress("127.0.0.1", port), outgoing=True)
        handshake = hs.Handshake(INFO_HASH, b"-XX0001-" + b"r" * 12, hs.DEFAULT_RESERVED)
        await theirs.send_all(hs.encode(handshake))
        await conn.receive_handshake()
        conn.start_protocol(NUM_PIECES, piece_size)
        sock = ours.socket
        for n in range(3):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 0)  # as after sending requests
            assert sock.getsockopt(socket.IPPROTO_TCP, quickack) == 0
            await theirs.send_all(m.encode(m.Piece(n, 0, bytes(16384))))
            events: list[object] = []
            with trio.fail_after(10):
                while not events:
                    events = [copied(e) for e in await conn.receive_events()]
            assert events == [m.Piece(n, 0, bytes(16384))]
            assert sock.getsockopt(socket.IPPROTO_TCP, quickack) == 1
        await conn.aclose()
        await theirs.aclose()
        for listener in listeners:
            await listener.aclose()

    trio.run(main)
