"""`PeerProtocol`: the sans-IO receive side of one peer connection (BEP 3, BEP 6, BEP 10).

Bytes in (`receive`), messages out (`next_events`): first the remote `Handshake`, then one
`torrentfs.wire.messages` object per frame. No sockets, no clock: the caller (``net/peer.py``)
owns I/O and timing.

Guarantees
----------
- **Framing survives any TCP chunking.** The same byte stream split at any points yields the
  same events. Only a partial frame is ever buffered (at most one frame, bounded below); whole
  frames are parsed straight out of the caller's buffer, and a piece block is copied exactly
  once (into the `Piece.block` bytes) -- or, with ``copy_blocks=False``, not at all: the block
  is then a memoryview of the caller's buffer, valid until the next `receive`, so the engine
  copies each 16 KiB block once, from its receive buffer straight into the piece buffer.
- **Linear-time, early rejection.** A frame's length and id are checked as soon as its 5-byte
  header arrives, before any payload is buffered: a 2 GiB length prefix fails at once.
- **Everything is validated** and any violation raises `ProtocolError(remote=True)`; after that
  the object is dead (further `receive` raises again) and the caller drops the peer. Events
  parsed before the bad frame are still returned by `next_events`.

Limits (frame length = the length prefix's value: id byte + payload)
--------------------------------------------------------------------
- fixed-size messages must have exactly their size (``have`` with 3 bytes is an error);
- ``request``/``cancel``/``reject request``: ``0 < length <= MAX_BLOCK_LENGTH`` (128 KiB, what
  mainstream clients accept at most; we only ever send 16 KiB requests) and the block must lie
  inside the piece; ``piece``: block ``1..MAX_BLOCK_LENGTH`` bytes inside the piece (whether it was
  requested is the caller's business);
- ``bitfield``: exactly ``ceil(num_pieces / 8)`` bytes with zero spare bits;
- ``extended``: at most `MAX_EXTENDED_PAYLOAD` (1 MiB) after the extended id (a ut_metadata
  piece is 16 KiB plus a small dict; handshakes and PEX are far smaller);
- unknown ids are ignored (BEP 3) but still bounded by ``max_message_length``.

Ordering rules: ``bitfield``, ``have all`` and ``have none`` are accepted once, and only before any
other message except keep-alive, ``extended``, ``port`` and ``allowed fast`` (Transmission sends its
BEP 10 handshake before its bitfield). BEP 6 messages need the fast bit in both handshakes, and
``extended`` needs the BEP 10 bit in both; otherwise they are violations.

Magnets: while ``num_pieces`` is None (metadata not yet known) index and block checks are
deferred and bitfields are kept raw (bounded by the largest metadata we accept). Once the info
dict is known call `set_pieces`; the caller then validates what it stored (e.g. with
``Bitfield.from_bytes``, which checks length and spare bits).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from torrentfs.bitfield import Bitfield
from torrentfs.errors import ProtocolError
from torrentfs.wire import handshake as hs
from torrentfs.wire.extension import MAX_METADATA_SIZE
from torrentfs.wire.messages import (
    ALLOWED_FAST,
    BITFIELD,
    CANCEL,
    CHOKE_MSG,
    EXTENDED,
    FAST_IDS,
    HAVE,
    HAVE_ALL,
    HAVE_ALL_MSG,
    HAVE_NONE,
    HAVE_NONE_MSG,
    INTERESTED_MSG,
    KEEP_ALIVE,
    NOT_INTERESTED_MSG,
    PIECE,
    PORT,
    REJECT_REQUEST,
    REQUEST,
    SUGGEST,
    UNCHOKE_MSG,
    AllowedFast,
    BitfieldMsg,
    Cancel,
    Extended,
    Have,
    Message,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    encode,
)

MAX_BLOCK_LENGTH = 128 * 1024
"""Largest request/cancel/reject length and piece block accepted from a peer."""
MAX_EXTENDED_PAYLOAD = 1024 * 1024
"""Largest BEP 10 payload (after the extended id byte) accepted from a peer."""
MAX_PIECES_UNKNOWN = MAX_METADATA_SIZE // 20
"""Most pieces an accepted info dict can describe (20 bytes of SHA-1 each): bounds raw
bitfields received before a magnet's metadata is known."""
DEFAULT_MAX_MESSAGE_LENGTH = 2 + MAX_EXTENDED_PAYLOAD
"""Largest frame (id + payload) by default: an extended message with the largest payload."""

PieceSize = int | Callable[[int], int]
"""Either one piece length for every piece (the last piece is then only bounded by it, not
checked exactly) or a function giving each piece's exact size -- where, as in every BEP 3
torrent, all pieces but the last are ``piece_size(0)`` bytes long."""

_MIN_PIECE_FRAME = 10
_MAX_PIECE_FRAME = 9 + MAX_BLOCK_LENGTH
"""Frame lengths (id + index + begin + block) of a piece message with a 1..128 KiB block."""

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_II = struct.Struct(">II")
_III = struct.Struct(">III")

# Exact frame length (id + payload) of every fixed-size message.
_FIXED_LENGTH = {
    0: 1,
    1: 1,
    2: 1,
    3: 1,
    HAVE: 5,
    REQUEST: 13,
    CANCEL: 13,
    PORT: 3,
    SUGGEST: 5,
    HAVE_ALL: 1,
    HAVE_NONE: 1,
    REJECT_REQUEST: 13,
    ALLOWED_FAST: 5,
}
_SIMPLE = (CHOKE_MSG, UNCHOKE_MSG, INTERESTED_MSG, NOT_INTERESTED_MSG)
_NAMES = {
    0: "choke",
    1: "unchoke",
    2: "interested",
    3: "not interested",
    HAVE: "have",
    BITFIELD: "bitfield",
    REQUEST: "request",
    PIECE: "piece",
    CANCEL: "cancel",
    PORT: "port",
    SUGGEST: "suggest",
    HAVE_ALL: "have all",
    HAVE_NONE: "have none",
    REJECT_REQUEST: "reject request",
    ALLOWED_FAST: "allowed fast",
    EXTENDED: "extended",
}

Event = hs.Handshake | Message


class PeerProtocol:
    """Parse and validate everything one peer sends us.

    `num_pieces` and `piece_size` describe the torrent (None for a magnet whose metadata is not
    known yet, see `set_pieces`). `info_hash`, when given, must match the remote handshake's.
    `reserved` is what *we* advertise; a feature is negotiated when both sides set its bit.
    `remote_handshake` is for a listener that already read and routed the peer's handshake
    itself: the object then starts directly with messages (no `Handshake` event).

    `copy_blocks=False` is the zero-copy mode for the hot path: a `Piece` event's ``block`` is
    then a memoryview into the buffer given to `receive` (or into an internal buffer for a frame
    that arrived in several calls) and is only valid until the next `receive` call -- the caller
    must consume the events of one `receive` before feeding the next bytes into the same buffer.
    """

    def __init__(
        self,
        num_pieces: int | None,
        piece_size: PieceSize | None = None,
        *,
        info_hash: bytes | None = None,
        reserved: bytes = hs.DEFAULT_RESERVED,
        remote_handshake: hs.Handshake | None = None,
        max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH,
        copy_blocks: bool = True,
    ) -> None:
        if len(reserved) != 8:
            raise ProtocolError("reserved must be 8 bytes", remote=False)
        if info_hash is not None and len(info_hash) != 20:
            raise ProtocolError("info_hash must be 20 bytes", remote=False)
        if max_message_length < 13:
            raise ProtocolError("max_message_length must allow a request (13)", remote=False)
        self._reserved = bytes(reserved)
        self._copy_blocks = copy_blocks
        self._info_hash = info_hash
        self._max_length = max_message_length
        self._num_pieces: int | None = None
        self._piece_size: Callable[[int], int] | None = None
        self._full_size = 0
        self._last_index = -1
        self._max_bitfield_frame = 1 + (MAX_PIECES_UNKNOWN + 7) // 8
        if num_pieces is not None:
            if piece_size is None:
                raise ProtocolError("piece_size is required with num_pieces", remote=False)
            self.set_pieces(num_pieces, piece_size)
        self._buf = bytearray()
        self._events: list[Event] = []
        self._failed: ProtocolError | None = None
        self._bitfield_allowed = True
        self.remote_handshake: hs.Handshake | None = None
        """The peer's handshake once received."""
        self.fast = False
        """BEP 6 negotiated (both sides set the bit)."""
        self.extensions = False
        """BEP 10 negotiated (both sides set the bit)."""
        if remote_handshake is not None:
            self._accept_handshake(remote_handshake)
            self._events.clear()  # the caller has it already; events start with messages

    # -- configuration ------------------------------------------------------------------------

    @property
    def num_pieces(self) -> int | None:
        return self._num_pieces

    @property
    def dht(self) -> bool:
        """The peer set the BEP 5 DHT bit (it runs a DHT node; a ``port`` message may follow)."""
        return self.remote_handshake is not None and self.remote_handshake.supports_dht

    def set_pieces(self, num_pieces: int, piece_size: PieceSize) -> None:
        """Start validating indices and blocks (a magnet's metadata just arrived).

        Messages parsed before this call were only checked for framing; the caller validates
        whatever it kept from them.
        """
        if num_pieces <= 0:
            raise ProtocolError("num_pieces must be positive", remote=False)
        if isinstance(piece_size, int):
            if piece_size <= 0:
                raise ProtocolError("piece_size must be positive", remote=False)
            length = piece_size
            self._piece_size = lambda _index: length
        else:
            self._piece_size = piece_size
        self._num_pieces = num_pieces
        self._max_bitfield_frame = 1 + (num_pieces + 7) // 8
        # The hot path's bounds for a block (see `_parse`): pieces before the last one are all
        # `piece_size(0)` long (BEP 3), so only blocks of the last piece need the function.
        self._full_size = self._piece_size(0)
        self._last_index = num_pieces - 1

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer (any chunking). Raises `ProtocolError` on a violation."""
        if self._failed is not None:
            raise ProtocolError(f"connection already failed: {self._failed}", remote=True)
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        end = len(view)
        pos = 0
        try:
            buf = self._buf
            # Complete a frame left over from an earlier call, taking only its own bytes.
            while buf and pos < end:
                need = self._needed(buf)
                take = min(need - len(buf), end - pos)
                buf += view[pos : pos + take]
                pos += take
                # Re-check with the new bytes (and learn the frame size once the header is in).
                if self._needed(buf) == len(buf):
                    self._buf = bytearray()
                    self._parse(memoryview(buf), 0, need)
                    buf = self._buf
            if pos < end:
                pos = self._parse(view, pos, end)
                if pos < end:
                    self._buf += view[pos:]
                    self._needed(self._buf)  # check the partial header now, not later
        except ProtocolError as exc:
            self._failed = exc
            raise

    def next_events(self) -> list[Event]:
        """The handshake and messages parsed so far, oldest first (each returned once)."""
        events = self._events
        self._events = []
        return events

    # -- sending (validation of our own messages) -----------------------------------------------

    def handshake_bytes(self, info_hash: bytes, peer_id: bytes) -> bytes:
        """Our handshake, advertising this object's `reserved` bits."""
        return hs.encode(hs.Handshake(info_hash, peer_id, self._reserved))

    def send(self, msg: Message) -> bytes:
        """Encode `msg` after checking that it is legal on this connection.

        Raises `ProtocolError(remote=False)` for a BEP 6 message without the fast extension, an
        extended message without BEP 10, or an index/block outside the torrent. (The hot path
        may use `messages.encode_request_batch` / `encode_piece_header` directly.)
        """
        msg_id = getattr(msg, "msg_id", None)
        if msg_id in FAST_IDS and not self.fast:
            raise ProtocolError(f"{msg!r} needs the fast extension (BEP 6)", remote=False)
        if msg_id == EXTENDED and not self.extensions:
            raise ProtocolError(f"{msg!r} needs the extension protocol (BEP 10)", remote=False)
        try:
            if isinstance(msg, Have | Suggest | AllowedFast):
                self._check_index(msg.index)
            elif isinstance(msg, Request | Cancel | RejectRequest):
                self._check_block(msg.index, msg.begin, msg.length)
            elif isinstance(msg, Piece):
                self._check_block(msg.index, msg.begin, len(msg.block))
            elif isinstance(msg, BitfieldMsg) and self._num_pieces is not None:
                self._check_bitfield(msg.data)
        except ProtocolError as exc:
            raise ProtocolError(f"invalid outgoing message: {exc}", remote=False) from None
        return encode(msg)

    # -- internals ----------------------------------------------------------------------------

    def _accept_handshake(self, remote: hs.Handshake) -> None:
        if self._info_hash is not None and remote.info_hash != self._info_hash:
            raise ProtocolError("handshake info_hash does not match this torrent")
        self.remote_handshake = remote
        self.fast = hs.supports_fast(self._reserved) and remote.supports_fast
        self.extensions = hs.supports_extensions(self._reserved) and remote.supports_extensions
        self._events.append(remote)

    def _needed(self, buf: bytearray) -> int:
        """Total bytes of the item starting `buf` (validating its header as far as present)."""
        if self.remote_handshake is None:
            hs.check_prefix(buf)
            return hs.HANDSHAKE_LEN
        have = len(buf)
        if have < 4:
            return 4
        (length,) = _U32.unpack_from(buf)
        if length == 0:
            return 4
        if have < 5:
            self._check_length(length)
            return 5
        self._check_header(buf[4], length)
        return 4 + length

    def _check_length(self, length: int) -> None:
        if length > self._max_length:
            raise ProtocolError(f"message length {length} exceeds limit {self._max_length}")

    def _check_header(self, msg_id: int, length: int) -> None:
        """Reject a frame from its id and length alone, before its payload is buffered."""
        self._check_length(length)
        fixed = _FIXED_LENGTH.get(msg_id)
        if fixed is not None:
            if length != fixed:
                raise ProtocolError(f"{_NAMES[msg_id]} message with length {length} != {fixed}")
            if msg_id in FAST_IDS and not self.fast:
                raise ProtocolError(f"{_NAMES[msg_id]} without the fast extension (BEP 6)")
        elif msg_id == PIECE:
            if not 9 < length <= 9 + MAX_BLOCK_LENGTH:
                raise ProtocolError(f"piece message with length {length}")
        elif msg_id == BITFIELD:
            if self._num_pieces is not None:
                if length != self._max_bitfield_frame:
                    raise ProtocolError(
                        f"bitfield length {length - 1} for {self._num_pieces} pieces"
                    )
            elif not 1 < length <= self._max_bitfield_frame:
                raise ProtocolError(f"bitfield length {length - 1} out of bounds")
        elif msg_id == EXTENDED:
            if not self.extensions:
                raise ProtocolError("extended message without the extension protocol (BEP 10)")
            if not 2 <= length <= 2 + MAX_EXTENDED_PAYLOAD:
                raise ProtocolError(f"extended message with length {length}")

    def _check_index(self, index: int) -> None:
        num_pieces = self._num_pieces
        if num_pieces is not None and index >= num_pieces:
            raise ProtocolError(f"piece index {index} out of range ({num_pieces} pieces)")

    def _check_block(self, index: int, begin: int, length: int) -> None:
        if not 0 < length <= MAX_BLOCK_LENGTH:
            raise ProtocolError(f"block length {length} out of range")
        num_pieces = self._num_pieces
        if num_pieces is None:
            return
        if index >= num_pieces:
            raise ProtocolError(f"piece index {index} out of range ({num_pieces} pieces)")
        assert self._piece_size is not None
        size = self._piece_size(index)
        if begin + length > size:
            raise ProtocolError(
                f"block {begin}+{length} beyond the end of piece {index} ({size} bytes)"
            )

    def _check_bitfield(self, data: bytes) -> None:
        assert self._num_pieces is not None
        Bitfield.from_bytes(self._num_pieces, data)  # length and spare bits (BEP 3)

    def _parse(self, view: memoryview, pos: int, end: int) -> int:
        """Parse every complete item in ``view[pos:end]``; return where the rest starts."""
        if self.remote_handshake is None:
            if end - pos < hs.HANDSHAKE_LEN:
                hs.check_prefix(view[pos:end])
                return pos
            self._accept_handshake(hs.decode(view[pos : pos + hs.HANDSHAKE_LEN]))
            pos += hs.HANDSHAKE_LEN
        events = self._events
        unpack_length = _U32.unpack_from
        unpack_block = _II.unpack_from
        full_size = self._full_size
        last_index = self._last_index  # -1 while the pieces are unknown (a magnet)
        copy = self._copy_blocks
        while end - pos >= 5:
            (length,) = unpack_length(view, pos)
            if length == 0:
                events.append(KEEP_ALIVE)
                pos += 4
                continue
            msg_id = view[pos + 4]
            if msg_id == PIECE and _MIN_PIECE_FRAME <= length <= _MAX_PIECE_FRAME:
                # The hot path (nearly every byte of a download): a well-sized block of a known
                # torrent, checked inline; anything unusual takes the general path below.
                stop = pos + 4 + length
                if stop > end:
                    return pos
                index, begin = unpack_block(view, pos + 5)
                if index >= last_index or begin + length - 9 > full_size:
                    # The last piece, unknown pieces, or out of bounds: the exact check
                    # (raises, saying why).
                    self._check_block(index, begin, length - 9)
                block = view[pos + 13 : stop]
                events.append(Piece(index, begin, block.tobytes() if copy else block))
                self._bitfield_allowed = False
                pos = stop
                continue
            self._check_header(msg_id, length)
            stop = pos + 4 + length
            if stop > end:
                return pos
            if msg_id == PIECE:
                index, begin = unpack_block(view, pos + 5)
                self._check_block(index, begin, length - 9)
                block = view[pos + 13 : stop]
                events.append(Piece(index, begin, block.tobytes() if copy else block))
                self._bitfield_allowed = False
            else:
                self._parse_message(msg_id, view, pos + 5, stop)
            pos = stop
        if end - pos == 4 and unpack_length(view, pos)[0] == 0:
            events.append(KEEP_ALIVE)
            pos += 4
        return pos

    def _parse_message(self, msg_id: int, view: memoryview, start: int, stop: int) -> None:
        """One whole non-piece frame whose header passed `_check_header`."""
        events = self._events
        if msg_id <= 3:
            events.append(_SIMPLE[msg_id])
            self._bitfield_allowed = False
        elif msg_id in (REQUEST, CANCEL, REJECT_REQUEST):
            index, begin, length = _III.unpack_from(view, start)
            self._check_block(index, begin, length)
            cls = Request if msg_id == REQUEST else Cancel if msg_id == CANCEL else RejectRequest
            events.append(cls(index, begin, length))
            self._bitfield_allowed = False
        elif msg_id in (HAVE, SUGGEST, ALLOWED_FAST):
            (index,) = _U32.unpack_from(view, start)
            self._check_index(index)
            if msg_id == HAVE:
                events.append(Have(index))
                self._bitfield_allowed = False
            elif msg_id == SUGGEST:
                events.append(Suggest(index))
                self._bitfield_allowed = False
            else:
                events.append(AllowedFast(index))
        elif msg_id in (BITFIELD, HAVE_ALL, HAVE_NONE):
            if not self._bitfield_allowed:
                raise ProtocolError(f"{_NAMES[msg_id]} after other messages (BEP 3, BEP 6)")
            self._bitfield_allowed = False
            if msg_id == BITFIELD:
                data = view[start:stop].tobytes()
                if self._num_pieces is not None:
                    self._check_bitfield(data)
                events.append(BitfieldMsg(data))
            else:
                events.append(HAVE_ALL_MSG if msg_id == HAVE_ALL else HAVE_NONE_MSG)
        elif msg_id == EXTENDED:
            events.append(Extended(view[start], view[start + 1 : stop].tobytes()))
        elif msg_id == PORT:
            events.append(Port(_U16.unpack_from(view, start)[0]))
        # Any other id is unknown: ignored (BEP 3), its size already bounded by _check_header.
