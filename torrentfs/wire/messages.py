"""Peer wire messages: one frozen dataclass per message, and their encoding.

Every message after the handshake is framed as ``<uint32 length><uint8 id><payload>`` in network
byte order; a length of 0 is a keep-alive (BEP 3). Ids:

- BEP 3: choke 0, unchoke 1, interested 2, not interested 3, have 4, bitfield 5, request 6,
  piece 7, cancel 8, port 9 (BEP 5, the sender's DHT port).
- BEP 6 (fast extension): suggest 0x0D, have all 0x0E, have none 0x0F, reject request 0x10,
  allowed fast 0x11.
- BEP 10: extended 20 (first payload byte is the extended message id, 0 = extended handshake).

This module only encodes; `torrentfs.wire.protocol` parses and validates. `encode` checks only
that fields are representable (uint32 indices, uint16 port, uint8 extended id) and raises
`ProtocolError(remote=False)` otherwise: such a message is our own bug, not the peer's.
The hot-path helpers `encode_request_batch` and `encode_piece_header` avoid per-message objects
and let the sender write a piece header followed by the block without joining them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from torrentfs.errors import ProtocolError

CHOKE = 0
UNCHOKE = 1
INTERESTED = 2
NOT_INTERESTED = 3
HAVE = 4
BITFIELD = 5
REQUEST = 6
PIECE = 7
CANCEL = 8
PORT = 9
SUGGEST = 0x0D
HAVE_ALL = 0x0E
HAVE_NONE = 0x0F
REJECT_REQUEST = 0x10
ALLOWED_FAST = 0x11
EXTENDED = 20

FAST_IDS = frozenset({SUGGEST, HAVE_ALL, HAVE_NONE, REJECT_REQUEST, ALLOWED_FAST})
"""BEP 6 ids: legal only when both handshakes set the fast bit."""


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length frame (BEP 3): keeps an idle connection open."""


@dataclass(frozen=True, slots=True)
class Choke:
    msg_id: ClassVar[int] = CHOKE


@dataclass(frozen=True, slots=True)
class Unchoke:
    msg_id: ClassVar[int] = UNCHOKE


@dataclass(frozen=True, slots=True)
class Interested:
    msg_id: ClassVar[int] = INTERESTED


@dataclass(frozen=True, slots=True)
class NotInterested:
    msg_id: ClassVar[int] = NOT_INTERESTED


@dataclass(frozen=True, slots=True)
class Have:
    """The sender now has (a verified) piece `index`."""

    index: int
    msg_id: ClassVar[int] = HAVE


@dataclass(frozen=True, slots=True)
class BitfieldMsg:
    """The sender's pieces, high bit of the first byte = piece 0 (BEP 3); spare bits are zero."""

    data: bytes
    msg_id: ClassVar[int] = BITFIELD


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    begin: int
    length: int
    msg_id: ClassVar[int] = REQUEST


@dataclass(frozen=True, slots=True)
class Piece:
    """A block of data: `block` is the bytes at `begin` within piece `index`.

    Received in `PeerProtocol`'s zero-copy mode, `block` is a memoryview of the receive buffer,
    valid only until the next bytes are received (see `torrentfs.wire.protocol`).
    """

    index: int
    begin: int
    block: bytes | memoryview
    msg_id: ClassVar[int] = PIECE


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int
    msg_id: ClassVar[int] = CANCEL


@dataclass(frozen=True, slots=True)
class Port:
    """BEP 5: the sender's DHT node listens on UDP `port`."""

    port: int
    msg_id: ClassVar[int] = PORT


@dataclass(frozen=True, slots=True)
class Suggest:
    """BEP 6: the sender suggests downloading piece `index` (advisory)."""

    index: int
    msg_id: ClassVar[int] = SUGGEST


@dataclass(frozen=True, slots=True)
class HaveAll:
    """BEP 6: the sender is a seed (replaces bitfield)."""

    msg_id: ClassVar[int] = HAVE_ALL


@dataclass(frozen=True, slots=True)
class HaveNone:
    """BEP 6: the sender has no pieces (replaces bitfield)."""

    msg_id: ClassVar[int] = HAVE_NONE


@dataclass(frozen=True, slots=True)
class RejectRequest:
    """BEP 6: the sender will not serve this request."""

    index: int
    begin: int
    length: int
    msg_id: ClassVar[int] = REJECT_REQUEST


@dataclass(frozen=True, slots=True)
class AllowedFast:
    """BEP 6: the sender serves requests for piece `index` even while choking us."""

    index: int
    msg_id: ClassVar[int] = ALLOWED_FAST


@dataclass(frozen=True, slots=True)
class Extended:
    """BEP 10: extended message `ext_id` (0 = extended handshake) with its raw payload."""

    ext_id: int
    payload: bytes
    msg_id: ClassVar[int] = EXTENDED


Message = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | BitfieldMsg
    | Request
    | Piece
    | Cancel
    | Port
    | Suggest
    | HaveAll
    | HaveNone
    | RejectRequest
    | AllowedFast
    | Extended
)

# Shared instances of the payload-less messages: the parser returns these instead of allocating.
KEEP_ALIVE = KeepAlive()
CHOKE_MSG = Choke()
UNCHOKE_MSG = Unchoke()
INTERESTED_MSG = Interested()
NOT_INTERESTED_MSG = NotInterested()
HAVE_ALL_MSG = HaveAll()
HAVE_NONE_MSG = HaveNone()

_HEADER = struct.Struct(">IB")
_INDEX = struct.Struct(">IBI")
_TRIPLE = struct.Struct(">IBIII")
_PIECE_HEADER = struct.Struct(">IBII")
_PORT = struct.Struct(">IBH")
_EXTENDED_HEADER = struct.Struct(">IBB")

REQUEST_MESSAGE_LEN = _TRIPLE.size
"""17: bytes of one encoded request (or cancel, reject request)."""
PIECE_HEADER_LEN = _PIECE_HEADER.size
"""13: length prefix, id, index and begin of a piece message; the block follows."""


def _fixed(msg_id: int) -> bytes:
    return _HEADER.pack(1, msg_id)


_FIXED: dict[type, bytes] = {
    KeepAlive: b"\x00\x00\x00\x00",
    Choke: _fixed(CHOKE),
    Unchoke: _fixed(UNCHOKE),
    Interested: _fixed(INTERESTED),
    NotInterested: _fixed(NOT_INTERESTED),
    HaveAll: _fixed(HAVE_ALL),
    HaveNone: _fixed(HAVE_NONE),
}


def _encode_index(msg: Have | Suggest | AllowedFast) -> bytes:
    return _INDEX.pack(5, msg.msg_id, msg.index)


def _encode_triple(msg: Request | Cancel | RejectRequest) -> bytes:
    return _TRIPLE.pack(13, msg.msg_id, msg.index, msg.begin, msg.length)


def _encode_piece(msg: Piece) -> bytes:
    return _PIECE_HEADER.pack(9 + len(msg.block), PIECE, msg.index, msg.begin) + msg.block


def _encode_bitfield(msg: BitfieldMsg) -> bytes:
    return _HEADER.pack(1 + len(msg.data), BITFIELD) + msg.data


def _encode_port(msg: Port) -> bytes:
    return _PORT.pack(3, PORT, msg.port)


def _encode_extended(msg: Extended) -> bytes:
    return _EXTENDED_HEADER.pack(2 + len(msg.payload), EXTENDED, msg.ext_id) + msg.payload


_ENCODERS: dict[type, Callable[..., bytes]] = {
    Have: _encode_index,
    Suggest: _encode_index,
    AllowedFast: _encode_index,
    Request: _encode_triple,
    Cancel: _encode_triple,
    RejectRequest: _encode_triple,
    Piece: _encode_piece,
    BitfieldMsg: _encode_bitfield,
    Port: _encode_port,
    Extended: _encode_extended,
}


def encode(msg: Message) -> bytes:
    """The framed bytes of `msg` (length prefix included)."""
    fixed = _FIXED.get(type(msg))
    if fixed is not None:
        return fixed
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise ProtocolError(f"cannot encode {msg!r}: not a peer wire message", remote=False)
    try:
        return encoder(msg)
    except struct.error as exc:
        raise ProtocolError(f"cannot encode {msg!r}: {exc}", remote=False) from None


def encode_request_batch(requests: Iterable[tuple[int, int, int] | Request]) -> bytes:
    """Many ``request`` messages in one buffer (one send call, no per-request objects).

    Items are ``(index, begin, length)`` tuples, as the picker returns them, or `Request`s.
    """
    out = bytearray()
    pack = _TRIPLE.pack
    try:
        for item in requests:
            if type(item) is Request:
                out += pack(13, REQUEST, item.index, item.begin, item.length)
            else:
                index, begin, length = item  # type: ignore[misc]
                out += pack(13, REQUEST, index, begin, length)
    except (struct.error, TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot encode request batch: {exc}", remote=False) from None
    return bytes(out)


def encode_piece_header(index: int, begin: int, length: int) -> bytes:
    """The 13-byte header of a piece message carrying `length` block bytes.

    Send it followed by the block itself; the block is never copied into a joined message.
    """
    try:
        return _PIECE_HEADER.pack(9 + length, PIECE, index, begin)
    except struct.error as exc:
        raise ProtocolError(f"cannot encode piece header: {exc}", remote=False) from None
