"""A scripted BEP 9 metadata peer for tests: serves an info dict over ut_metadata, honestly or not.

It is deliberately tiny and independent of the engine's connection code: a trio TCP listener
that answers the BEP 3 handshake for one info-hash, sends a BEP 10 extended handshake with
``ut_metadata`` and a ``metadata_size``, and answers every metadata request from ``served``
(which a bad peer sets to bytes that do not hash to the info-hash). It never sends pieces of
the torrent itself. ``connections`` counts the handshakes it saw, so a test can check that a
dropped peer is not dialed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fastbencode
import trio

PROTOCOL = b"\x13BitTorrent protocol"
RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0])  # BEP 10 only
OUR_UT_METADATA = 3
PIECE = 16 * 1024


def corrupted(info: bytes) -> bytes:
    """The same length, one byte changed in every 16 KiB piece: any piece served is a lie."""
    out = bytearray(info)
    for start in range(0, len(out), PIECE):
        i = min(start + PIECE, len(out)) - 3
        out[i] ^= 0xFF
    return bytes(out)


@dataclass
class MetadataPeer:
    info_hash: bytes
    served: bytes
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 0
    requests: int = 0
    announced_size: int | None = None
    peer_id: bytes = b"-XX0001-metadatapeer"
    _listeners: list[trio.SocketListener] = field(default_factory=list)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(30):
                await self._session(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError):
            pass
        finally:
            await stream.aclose()

    async def _session(self, stream: trio.SocketStream) -> None:
        buf = bytearray()

        async def need(n: int) -> bytes:
            while len(buf) < n:
                data = await stream.receive_some(65536)
                if not data:
                    raise ValueError("closed")
                buf.extend(data)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        hs = await need(68)
        if hs[:20] != PROTOCOL or hs[28:48] != self.info_hash:
            return
        self.connections += 1
        await stream.send_all(PROTOCOL + RESERVED + self.info_hash + self.peer_id)
        size = self.announced_size or len(self.served)
        ext = fastbencode.bencode(
            {b"m": {b"ut_metadata": OUR_UT_METADATA}, b"metadata_size": size, b"v": b"scripted"}
        )
        await stream.send_all(_frame(b"\x14\x00" + ext))
        their_id = 0
        while True:
            length = int.from_bytes(await need(4), "big")
            if length == 0:
                continue
            body = await need(length)
            if body[0] != 20:
                continue
            ext_id, payload = body[1], body[2:]
            if ext_id == 0:
                m = fastbencode.bdecode(payload).get(b"m", {})
                their_id = int(m.get(b"ut_metadata", 0))
            elif ext_id == OUR_UT_METADATA and their_id:
                msg = fastbencode.bdecode(payload)
                if msg.get(b"msg_type") != 0:
                    continue
                self.requests += 1
                piece = int(msg[b"piece"])
                chunk = self.served[piece * PIECE : (piece + 1) * PIECE]
                header = fastbencode.bencode({b"msg_type": 1, b"piece": piece, b"total_size": size})
                await stream.send_all(_frame(bytes([20, their_id]) + header + chunk))


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body
