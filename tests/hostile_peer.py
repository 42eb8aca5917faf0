"""A scriptable, deliberately misbehaving BitTorrent peer for the hostile-peer tests (issue 7).

`HostilePeer` listens on its own loopback address (the engine dials it) or dials the engine's
listener, and runs a *script* per connection: an ``async def script(conn: HostileConnection)``
that sends whatever it likes -- well-formed messages from our own encoders
(``torrentfs.wire.messages``) or hand-built bytes -- and reads what the engine sends back.

It deliberately does **not** use ``PeerProtocol`` to parse the engine's messages: frames are
split by hand (4-byte length, id, payload), so a bug in our parser cannot hide a bug in the
engine.

What a test can observe afterwards:

* ``connections`` (accepted or dialled), ``closed_by_remote`` (connections the engine ended:
  EOF or reset while the script read or wrote), ``refused`` (closed before the engine answered
  our handshake), ``strangers`` (connections from other addresses turned away);
* ``requests``: every ``request`` the engine sent (index, begin, length), in order;
* ``received``: counts of every message id the engine sent;
* ``engine_extensions``: the extensions the engine announced (BEP 10 ``m``).

Everything is bounded: reads take a timeout, and ``HostilePeer`` tasks live in the caller's
nursery (DESIGN.md §3 rule 1).
"""

from __future__ import annotations

import collections
import errno
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import fastbencode
import trio

from torrentfs.wire import handshake as hs
from torrentfs.wire import messages as m

HOSTILE_PEER_ID = b"-HO0001-" + b"hostile12345"
_LEN = struct.Struct(">I")


class EngineClosed(Exception):
    """The engine closed (or reset) the connection."""


@dataclass(frozen=True)
class Frame:
    """One message from the engine: ``msg_id`` is None for a keep-alive."""

    msg_id: int | None
    payload: bytes


class HostileConnection:
    """One TCP connection of the hostile peer, with a hand-written frame reader."""

    def __init__(self, peer: HostilePeer, stream: trio.SocketStream) -> None:
        self.peer = peer
        self.stream = stream
        self._buf = bytearray()
        self.remote_handshake: hs.Handshake | None = None

    # -- sending ------------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise EngineClosed(str(exc)) from None

    async def send(self, *msgs: m.Message) -> None:
        await self.send_raw(b"".join(m.encode(msg) for msg in msgs))

    def handshake_bytes(self, *, reserved: bytes | None = None) -> bytes:
        reserved = hs.make_reserved(extensions=True, fast=True) if reserved is None else reserved
        return hs.encode(hs.Handshake(self.peer.info_hash, HOSTILE_PEER_ID, reserved))

    # -- receiving ----------------------------------------------------------------------------

    async def _fill(self, need: int, timeout: float) -> None:
        with trio.fail_after(timeout):
            while len(self._buf) < need:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise EngineClosed(str(exc)) from None
                if not data:
                    raise EngineClosed("EOF")
                self._buf += data

    async def receive_handshake(self, timeout: float = 10.0) -> hs.Handshake:
        await self._fill(hs.HANDSHAKE_LEN, timeout)
        handshake = hs.Handshake.decode(bytes(self._buf[: hs.HANDSHAKE_LEN]))
        del self._buf[: hs.HANDSHAKE_LEN]
        self.remote_handshake = handshake
        return handshake

    async def receive_frame(self, timeout: float = 10.0) -> Frame:
        await self._fill(4, timeout)
        (length,) = _LEN.unpack_from(self._buf)
        await self._fill(4 + length, timeout)
        body = bytes(self._buf[4 : 4 + length])
        del self._buf[: 4 + length]
        if length == 0:
            self.peer.received["keepalive"] += 1
            return Frame(None, b"")
        frame = Frame(body[0], body[1:])
        self.peer.received[frame.msg_id] += 1
        if frame.msg_id == m.REQUEST:
            self.peer.requests.append(struct.unpack(">III", frame.payload))
        elif frame.msg_id == m.EXTENDED and frame.payload[:1] == b"\0":
            announced = fastbencode.bdecode(frame.payload[1:]).get(b"m", {})
            self.peer.engine_extensions = {k.decode(): v for k, v in announced.items() if v}
        return frame

    async def receive_until(self, msg_id: int, timeout: float = 10.0) -> Frame:
        """Read frames until one with `msg_id` arrives (the others are recorded and skipped)."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.receive_frame(timeout)
                if frame.msg_id == msg_id:
                    return frame

    async def wait_closed(self, timeout: float = 60.0) -> None:
        """Read (and record) everything until the engine closes the connection.

        Ends with `EngineClosed` (counted by `HostilePeer`); TooSlowError after `timeout`.
        """
        with trio.fail_after(timeout):
            while True:
                await self.receive_frame(timeout)

    # -- the usual opening --------------------------------------------------------------------

    async def open_as_listener(self, *, reserved: bytes | None = None) -> hs.Handshake:
        """The engine dialled us: read its handshake, answer with ours."""
        theirs = await self.receive_handshake()
        await self.send_raw(self.handshake_bytes(reserved=reserved))
        return theirs

    async def open_as_dialer(self, *, reserved: bytes | None = None) -> hs.Handshake:
        """We dialled the engine: send our handshake first, then read its answer."""
        await self.send_raw(self.handshake_bytes(reserved=reserved))
        return await self.receive_handshake()


Script = Callable[[HostileConnection], Awaitable[None]]


class HostilePeer:
    """A misbehaving peer for one torrent. Run `serve` in a nursery, or call `dial`."""

    def __init__(self, info_hash: bytes, num_pieces: int, host: str) -> None:
        self.info_hash = info_hash
        self.num_pieces = num_pieces
        self.host = host
        self.port = 0
        self.connections = 0
        self.closed_by_remote = 0
        self.refused = 0
        self.strangers = 0
        self.requests: list[tuple[int, int, int]] = []
        self.engine_extensions: dict[str, int] = {}
        """The ``m`` dict of the engine's extended handshake (BEP 10): what it decodes."""
        self.received: collections.Counter[int | str | None] = collections.Counter()
        self.script_errors: list[BaseException] = []
        self._closed_event = trio.Event()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def full_bitfield(self) -> bytes:
        """A correct "I have everything" bitfield (spare bits clear)."""
        data = bytearray(b"\xff" * ((self.num_pieces + 7) // 8))
        spare = len(data) * 8 - self.num_pieces
        if spare:
            data[-1] &= (0xFF << spare) & 0xFF
        return bytes(data)

    async def wait_closed_by_remote(self, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until the engine has ended at least `count` of our connections."""
        with trio.fail_after(timeout):
            while self.closed_by_remote < count:
                await self._closed_event.wait()
                self._closed_event = trio.Event()

    async def _run(self, stream: trio.SocketStream, script: Script) -> None:
        self.connections += 1
        conn = HostileConnection(self, stream)
        try:
            async with stream:
                await script(conn)
        except EngineClosed:
            self.closed_by_remote += 1
            if conn.remote_handshake is None:
                self.refused += 1
            self._closed_event.set()
        except (trio.TooSlowError, trio.Cancelled):
            raise
        except Exception as exc:  # a broken script must fail the test, not vanish
            self.script_errors.append(exc)
            raise

    async def serve(
        self,
        script: Script,
        only_from: str | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on `host` (port 0) and run `script` for every connection the engine makes.

        With `only_from`, connections from any other address are closed at once and counted in
        `strangers` (the honest seeder may learn our address through the engine's PEX).
        """
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]

        async def handle(stream: trio.SocketStream) -> None:
            if only_from is not None and stream.socket.getpeername()[0] != only_from:
                self.strangers += 1
                await stream.aclose()
                return
            await self._run(stream, script)

        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(handle, listeners, handler_nursery=nursery)

    async def dial(self, host: str, port: int, script: Script) -> None:
        """Connect to the engine from our own address and run `script`."""
        try:
            stream = await trio.open_tcp_stream(host, port, local_address=self.host)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET):
                self.refused += 1
                return
            raise
        await self._run(stream, script)


# --------------------------------------------------------------------------- common scripts


async def idle_forever(conn: HostileConnection, keepalive: float = 1.0) -> None:
    """Stay connected sending keep-alives, recording whatever the engine sends."""
    while True:
        with trio.move_on_after(keepalive):
            await conn.receive_frame(timeout=keepalive * 10)
        await conn.send(m.KeepAlive())
