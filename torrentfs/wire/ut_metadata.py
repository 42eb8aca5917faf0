"""BEP 9 (ut_metadata): fetching the info dict of a magnet from peers, and serving ours.

The info dict is cut into `METADATA_PIECE_SIZE` (16 KiB) pieces; the last may be shorter. A
message is a bencoded dict ``{msg_type, piece[, total_size]}``; a ``data`` message is followed by
the raw piece bytes. msg_type 0 = request, 1 = data, 2 = reject; other types are ignored
(BEP 9: "an unrecognized message ID MUST be ignored"), so `decode` returns None for them.

Guarantees: `decode` raises only `ProtocolError` and checks every field against the limits
(``total_size`` in ``1..MAX_METADATA_SIZE``, piece index in range, data exactly as long as that
piece). `MetadataAssembler` only ever returns bytes whose SHA-1 equals the info-hash (metadata is
trusted only after that, DESIGN.md §3.7); on a mismatch it raises `MetadataHashMismatch` naming
the peers that contributed pieces, and starts over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

from torrentfs.errors import ProtocolError
from torrentfs.wire.extension import MAX_DEPTH, MAX_METADATA_SIZE, decode_dict, encode_dict

METADATA_PIECE_SIZE = 16 * 1024
REQUEST = 0
DATA = 1
REJECT = 2
MAX_METADATA_PIECES = -(-MAX_METADATA_SIZE // METADATA_PIECE_SIZE)
_MAX_HEADER = 1024
"""Largest bencoded dict before the piece data; real ones are ~50 bytes."""


def num_pieces(metadata_size: int) -> int:
    """How many 16 KiB pieces an info dict of `metadata_size` bytes has."""
    return -(-metadata_size // METADATA_PIECE_SIZE)


def piece_length(metadata_size: int, piece: int) -> int:
    """The byte length of metadata piece `piece` (the last one may be short)."""
    return min(METADATA_PIECE_SIZE, metadata_size - piece * METADATA_PIECE_SIZE)


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    piece: int


@dataclass(frozen=True, slots=True)
class MetadataData:
    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MetadataReject:
    piece: int


MetadataMessage = MetadataRequest | MetadataData | MetadataReject


def encode(msg: MetadataMessage) -> bytes:
    """The extended-message payload of `msg` (send under the peer's ``ut_metadata`` id)."""
    if not 0 <= msg.piece < MAX_METADATA_PIECES:
        raise ProtocolError(f"metadata piece {msg.piece} out of range", remote=False)
    if isinstance(msg, MetadataRequest):
        return encode_dict({b"msg_type": REQUEST, b"piece": msg.piece})
    if isinstance(msg, MetadataReject):
        return encode_dict({b"msg_type": REJECT, b"piece": msg.piece})
    _check_data(msg, remote=False)
    header = encode_dict({b"msg_type": DATA, b"piece": msg.piece, b"total_size": msg.total_size})
    return header + msg.data


def decode(payload: bytes) -> MetadataMessage | None:
    """Parse a ut_metadata payload from a peer; None for an unknown msg_type (ignored)."""
    end = _value_end(payload, min(len(payload), _MAX_HEADER))
    d = decode_dict(payload[:end], max_size=_MAX_HEADER)
    trailer = payload[end:]
    msg_type = d.get(b"msg_type")
    piece = d.get(b"piece")
    if type(msg_type) is not int:
        raise ProtocolError("ut_metadata message without an integer msg_type")
    if msg_type not in (REQUEST, DATA, REJECT):
        return None
    if type(piece) is not int or not 0 <= piece < MAX_METADATA_PIECES:
        raise ProtocolError(f"ut_metadata piece {piece!r} out of range")
    if msg_type != DATA:
        if trailer:
            raise ProtocolError("ut_metadata request/reject with trailing data")
        return MetadataRequest(piece) if msg_type == REQUEST else MetadataReject(piece)
    total_size = d.get(b"total_size")
    if type(total_size) is not int:
        raise ProtocolError("ut_metadata data without an integer total_size")
    msg = MetadataData(piece, total_size, bytes(trailer))
    _check_data(msg, remote=True)
    return msg


def answer(info_bytes: bytes | None, request: MetadataRequest) -> MetadataData | MetadataReject:
    """Serve a peer's request from our info dict (reject if we lack it or the piece is absent)."""
    if info_bytes is None or not 0 <= request.piece < num_pieces(len(info_bytes)):
        return MetadataReject(request.piece)
    start = request.piece * METADATA_PIECE_SIZE
    chunk = info_bytes[start : start + METADATA_PIECE_SIZE]
    return MetadataData(request.piece, len(info_bytes), chunk)


def _check_data(msg: MetadataData, *, remote: bool) -> None:
    if not 0 < msg.total_size <= MAX_METADATA_SIZE:
        raise ProtocolError(f"ut_metadata total_size {msg.total_size} out of range", remote=remote)
    if not 0 <= msg.piece < num_pieces(msg.total_size):
        raise ProtocolError(f"ut_metadata piece {msg.piece} beyond total_size", remote=remote)
    expected = piece_length(msg.total_size, msg.piece)
    if len(msg.data) != expected:
        raise ProtocolError(
            f"ut_metadata piece {msg.piece} has {len(msg.data)} bytes, expected {expected}",
            remote=remote,
        )


def _value_end(data: bytes, limit: int) -> int:
    """End offset of the bencoded value at the start of ``data[:limit]`` (structure only).

    Finds where the dict ends so the piece data after it is not parsed as bencode; a strict
    decode of ``data[:end]`` follows. Iterative and linear; depth bounded by `MAX_DEPTH`.
    """
    pos = 0
    depth = 0
    while pos < limit:
        c = data[pos]
        if c in b"dl":
            depth += 1
            if depth > MAX_DEPTH:
                raise ProtocolError("ut_metadata dict nested too deeply")
            pos += 1
            continue
        if c == 0x65:  # 'e'
            if depth == 0:
                raise ProtocolError("bad bencoding in ut_metadata message")
            depth -= 1
            pos += 1
        elif c == 0x69:  # 'i'
            stop = data.find(b"e", pos + 1, limit)
            if stop < 0:
                break
            pos = stop + 1
        elif 0x30 <= c <= 0x39:
            colon = data.find(b":", pos, min(limit, pos + 12))
            if colon < 0 or not data[pos:colon].isdigit():
                raise ProtocolError("bad bencoding in ut_metadata message")
            pos = colon + 1 + int(data[pos:colon])
        else:
            raise ProtocolError("bad bencoding in ut_metadata message")
        if depth == 0:
            if pos > limit:
                break
            return pos
    raise ProtocolError("ut_metadata message header truncated or too long")


class MetadataHashMismatch(ProtocolError):
    """The assembled info dict does not hash to the info-hash (BEP 9).

    `peers` are the peers whose pieces went into it: the caller drops them (one of them lied).
    """

    def __init__(self, peers: frozenset[Hashable]) -> None:
        super().__init__("assembled metadata does not match the info-hash", remote=True)
        self.peers = peers


class MetadataAssembler:
    """Collect the pieces of an info dict from peers and verify them (sans-IO).

    `metadata_size` comes from a peer's extended handshake (so it is checked as remote input).
    Typical use: `pick(peer)` -> send a request; on ``data`` call `receive(msg, peer)`, which
    returns the verified info dict bytes once complete; on ``reject`` or a lost peer call
    `rejected` / `peer_gone` so the piece is asked of someone else.
    """

    def __init__(self, info_hash: bytes, metadata_size: int) -> None:
        if len(info_hash) != 20:
            raise ProtocolError("info_hash must be 20 bytes", remote=False)
        if not 0 < metadata_size <= MAX_METADATA_SIZE:
            raise ProtocolError(f"metadata_size {metadata_size} out of range")
        self.info_hash = info_hash
        self.metadata_size = metadata_size
        self.num_pieces = num_pieces(metadata_size)
        self._pieces: list[bytes | None] = [None] * self.num_pieces
        self._sources: list[Hashable | None] = [None] * self.num_pieces
        self._in_flight: dict[int, Hashable] = {}
        self._received = 0
        self.result: bytes | None = None
        """The verified info dict once complete."""

    @property
    def done(self) -> bool:
        return self.result is not None

    def needed(self) -> list[int]:
        """Pieces not received yet (requested or not)."""
        return [i for i, piece in enumerate(self._pieces) if piece is None]

    def contributors(self) -> list[Hashable]:
        """The peers whose pieces are held, first contributor first (no repeats)."""
        return list(dict.fromkeys(s for s in self._sources if s is not None))

    def pick(self, peer: Hashable) -> int | None:
        """The next piece to request from `peer` (marked as asked of it), or None."""
        if self.result is not None:
            return None
        for i, piece in enumerate(self._pieces):
            if piece is None and i not in self._in_flight:
                self._in_flight[i] = peer
                return i
        return None

    def rejected(self, piece: int, peer: Hashable) -> None:
        """`peer` rejected (or timed out on) `piece`: make it available again."""
        if self._in_flight.get(piece) == peer:
            del self._in_flight[piece]

    def peer_gone(self, peer: Hashable) -> None:
        for piece in [i for i, p in self._in_flight.items() if p == peer]:
            del self._in_flight[piece]

    def receive(self, msg: MetadataData, peer: Hashable) -> bytes | None:
        """Accept a data message; returns the verified info dict when it is complete.

        Raises `ProtocolError` if `msg` disagrees with our metadata size, and
        `MetadataHashMismatch` if the complete metadata has the wrong SHA-1 (state is reset).
        """
        if self.result is not None:
            return self.result
        if msg.total_size != self.metadata_size:
            raise ProtocolError(
                f"ut_metadata total_size {msg.total_size} != announced {self.metadata_size}"
            )
        _check_data(msg, remote=True)
        if self._in_flight.get(msg.piece) == peer:
            del self._in_flight[msg.piece]
        if self._pieces[msg.piece] is not None:
            return None
        self._pieces[msg.piece] = msg.data
        self._sources[msg.piece] = peer
        self._received += 1
        if self._received < self.num_pieces:
            return None
        data = b"".join(p for p in self._pieces if p is not None)
        if hashlib.sha1(data).digest() == self.info_hash:
            self.result = data
            return data
        contributors = frozenset(s for s in self._sources if s is not None)
        self._pieces = [None] * self.num_pieces
        self._sources = [None] * self.num_pieces
        self._in_flight.clear()
        self._received = 0
        raise MetadataHashMismatch(contributors)
