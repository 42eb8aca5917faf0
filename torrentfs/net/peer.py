"""One TCP connection to a peer (L4): the only owner of its socket.

Guarantees (DESIGN.md §3 rule 2):
- exactly one reader (`receive_events`) and one writer (`run_writer`) per socket;
- everything sent goes through a bounded outbox: `queue()` never blocks the caller and raises
  `ProtocolError(remote=True)` when the peer does not drain what we send (so a slow or stalled peer
  loses its own connection and never stalls the engine);
- every wait is bounded: the handshake has a deadline, the owner bounds idle reads, and a send
  that makes no progress for `send_timeout` seconds (the peer stopped reading but keeps its
  connection open) aborts the connection;
- reads use large receive buffers (DESIGN.md §3 rule 10) and framing lives in the sans-IO
  `wire.protocol.PeerProtocol` (BEP 3), in its zero-copy mode: the blocks of the `Piece` events
  returned by `receive_events` are views of the receive buffer, valid until the next
  `receive_events` call (the owner copies each block once, into its piece buffer);
- what we receive is acknowledged at once (``TCP_QUICKACK`` after every receive, on Linux). We
  send requests on the same connection, so the kernel treats it as interactive and delays its
  ACKs (up to 40 ms) to piggyback them on our next message. A peer sending with Nagle's
  algorithm holds its last, short segment until everything before it is acknowledged; once all
  our requests are out we have nothing to send, so that tail -- the last block of the piece a
  read waits for -- came 40+ ms late (measured with the libtorrent 2.0 seeder: 8 of 20 random
  reads of one piece took ~50 ms instead of ~3; with the ACKs at once, none).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Sequence

import trio

from torrentfs.errors import ProtocolError
from torrentfs.types import PeerAddress
from torrentfs.wire.handshake import HANDSHAKE_LEN, Handshake
from torrentfs.wire.protocol import PeerProtocol

RECEIVE_SIZE = 256 * 1024
MAX_RECEIVE_SIZE = 1024 * 1024
"""A peer that keeps filling the receive buffer gets a larger one, up to this: fewer wake-ups
and receive calls per MiB (each costs more CPU than copying 256 KiB)."""
OUTBOX_LIMIT = 16 * 1024 * 1024
"""Bytes queued to one peer before we decide it does not read what we send."""
SEND_CHUNK = 256 * 1024
"""Largest single write: each must finish within `send_timeout` (a progress deadline)."""
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def tune_socket(stream: trio.SocketStream) -> None:
    """Large kernel buffers and no Nagle delay: requests must leave at once (BEP 3 pipelining)."""
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    except OSError:
        pass


class PeerConnection:
    """A handshaken (or handshaking) connection: framing, outbox and a writer task."""

    def __init__(self, stream: trio.SocketStream, address: PeerAddress, *, outgoing: bool) -> None:
        self.stream = stream
        self.address = address
        self.outgoing = outgoing
        self.protocol: PeerProtocol | None = None
        self.remote_handshake: Handshake | None = None
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._wake = trio.Event()
        self._closed = False
        self.failure: str | None = None
        self._pending = bytearray()
        # Reused receive buffer: a fresh 256 KiB bytes object per read would cost an mmap and
        # page faults each time. Small at first; grown for peers that fill it.
        self._rbuf = bytearray(RECEIVE_SIZE // 4)
        self.bytes_received = 0
        self.bytes_sent = 0
        self._quickack = _TCP_QUICKACK is not None
        self.send_timeout = math.inf
        """Seconds one write of at most `SEND_CHUNK` bytes may take before the peer is dropped."""
        tune_socket(stream)

    # -- handshake (BEP 3) -------------------------------------------------------------------

    async def send_handshake(self, handshake: Handshake) -> None:
        await self.stream.send_all(handshake.encode())

    async def receive_handshake(self) -> Handshake:
        """Read exactly one handshake; bytes after it are kept for the message parser."""
        while len(self._pending) < HANDSHAKE_LEN:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise ProtocolError("peer closed the connection during the handshake")
            self._pending += data
        hs = Handshake.decode(bytes(self._pending[:HANDSHAKE_LEN]))
        del self._pending[:HANDSHAKE_LEN]
        self.remote_handshake = hs
        return hs

    def start_protocol(
        self, num_pieces: int | None, piece_size: Callable[[int], int] | None
    ) -> None:
        """Switch to message framing once the handshake is done."""
        proto = PeerProtocol(
            num_pieces, piece_size, remote_handshake=self.remote_handshake, copy_blocks=False
        )
        if self._pending:
            proto.receive(bytes(self._pending))
            self._pending.clear()
        self.protocol = proto

    # -- receive -----------------------------------------------------------------------------

    async def receive_events(self) -> Sequence[object]:
        """Wait for data and return the messages it completes (maybe none). EOF -> ProtocolError.

        The caller must be done with the events (their `Piece` blocks are views of the receive
        buffer) before it calls this again.
        """
        assert self.protocol is not None
        events = self.protocol.next_events()
        if events:
            return events
        buf = self._rbuf
        n = await self.stream.socket.recv_into(buf)
        if not n:
            raise ProtocolError("peer closed the connection")
        self.bytes_received += n
        self._ack_now()
        self.protocol.receive(memoryview(buf)[:n])
        if n == len(buf) and n < MAX_RECEIVE_SIZE:
            # A fast peer: read in larger chunks (fewer wake-ups per MiB). A new buffer, not a
            # resized one: the events just parsed still point into the old one.
            self._rbuf = bytearray(min(4 * n, MAX_RECEIVE_SIZE))
        return self.protocol.next_events()

    def _ack_now(self) -> None:
        """Acknowledge what was just received at once (``TCP_QUICKACK``), not up to 40 ms
        later: see the module docstring. Linux clears the flag by itself, so it is set again
        after every receive."""
        if self._quickack and _TCP_QUICKACK is not None:
            try:
                self.stream.socket.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                self._quickack = False

    # -- send --------------------------------------------------------------------------------

    def queue(self, data: bytes) -> None:
        """Queue bytes for the writer task; never blocks, never raises.

        A peer that lets more than `OUTBOX_LIMIT` bytes pile up is aborted: its reader and
        writer then fail, and only this connection ends.
        """
        if self._closed:
            return
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        if self._outbox_bytes > OUTBOX_LIMIT:
            self.abort("peer does not read what we send")
            return
        self._wake.set()

    def abort(self, reason: str) -> None:
        """End the connection now (from any task): blocked reads and writes fail at once."""
        if self.failure is None:
            self.failure = reason
        self._closed = True
        self._outbox.clear()
        self._outbox_bytes = 0
        self.stream.socket.close()
        self._wake.set()

    @property
    def outbox_bytes(self) -> int:
        return self._outbox_bytes

    async def run_writer(self) -> None:
        """The single send path: drains the outbox, joining small messages into one write."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._closed:
                raise ProtocolError(self.failure or "connection closed")
            while self._outbox:
                chunk = self._outbox
                self._outbox = []
                size = self._outbox_bytes
                self._outbox_bytes = 0
                payload = b"".join(chunk) if len(chunk) > 1 else chunk[0]
                view = memoryview(payload)
                for start in range(0, len(view), SEND_CHUNK):
                    with trio.move_on_after(self.send_timeout) as scope:
                        await self.stream.send_all(view[start : start + SEND_CHUNK])
                    if scope.cancelled_caught:
                        self.abort("peer does not read what we send")
                        raise ProtocolError(self.failure or "send stalled")
                self.bytes_sent += size

    async def aclose(self) -> None:
        self._closed = True
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
