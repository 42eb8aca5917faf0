"""The piece store interface (L4): where verified piece data lives.

The engine talks to storage only in whole, verified pieces (BEP 3: a piece is usable once its
SHA-1 matched the ``pieces`` entry of the info dictionary), so a store never holds data that
failed verification. Reads are either block-shaped (``read(piece, begin, length)`` for a peer's
``request``) or torrent-global byte ranges (``read_range`` for the FUSE reader, which may span
files).

Durability is explicit: ``write_piece`` may leave data in the page cache; only after ``sync()``
returned is it on stable storage. The resume writer relies on this ordering to never record a
piece whose data a crash could lose (see `torrentfs.storage.resume`).

`MemoryStore` implements the protocol in memory for unit tests and models durability: a piece is
*durable* only after a ``sync()`` that started after its ``write_piece`` returned.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

from torrentfs.errors import StorageError

__all__ = ["MemoryStore", "PieceStore", "Presence", "StoreClosed", "check_piece_length"]


def check_piece_length(piece: int, size: int, data: bytes | bytearray) -> None:
    """A store is handed whole pieces only: ``ValueError`` if `data` is not `size` bytes."""
    if len(data) != size:
        raise ValueError(f"piece {piece} is {size} bytes, got {len(data)}")


class StoreClosed(StorageError):
    """The store was used after ``aclose()``."""


class Presence(enum.Enum):
    """What the backing storage holds for a piece, as far as can be told without reading it.

    Used by a full recheck to avoid reading (and hashing) pieces that were never written.
    """

    ABSENT = "absent"
    """Some of the piece has no backing storage at all (missing file, file too short)."""
    HOLE = "hole"
    """Every byte of the piece lies in sparse holes or pad files: it reads as zeros."""
    DATA = "data"
    """Some bytes may hold written data: the piece must be read and hashed to know."""


class PieceStore(Protocol):
    """Storage for the verified pieces of one torrent.

    Piece indexes, offsets and lengths must already be validated by the caller (the wire
    protocol checks peers' requests against the torrent's geometry); out-of-range arguments
    are bugs and raise `ValueError`/`IndexError`. I/O failures raise `StorageError` with the
    OS ``errno`` when there is one (e.g. ``ENOSPC`` for a full disk).
    """

    async def read(self, piece: int, begin: int, length: int) -> bytes:
        """Bytes ``[begin, begin + length)`` of a stored piece (a block, for a peer)."""
        ...

    async def read_piece(self, piece: int) -> bytes:
        """The whole of a stored piece."""
        ...

    async def read_range(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the torrent's concatenated data.

        The range may span several files (and pad files, which read as zeros). The caller
        guarantees every piece it touches is stored.
        """
        ...

    async def write_piece(self, piece: int, data: bytes) -> None:
        """Store a whole piece whose SHA-1 already matched; ``len(data) == piece_size``."""
        ...

    async def write_verified(
        self,
        piece: int,
        data: bytes | bytearray,
        expected: bytes,
        on_match: Callable[[], None] | None = None,
    ) -> bool:
        """Hash `data` (SHA-1, BEP 3) and store it as `write_piece` only if the digest is
        `expected`; False (nothing written) otherwise. One pass over the bytes where the store
        can: the engine's download path, which then never touches a piece twice.

        `on_match` (on the trio thread) is called once the digest matched, before the write
        is done: readers waiting for the piece are served from memory without waiting for the
        disk, and without a second worker-thread hop after the hash."""
        ...

    async def evict_piece(self, piece: int) -> None:
        """Release the disk space of a piece if the store can (a hint; data may remain).

        The caller must stop claiming the piece as verified (and persist that) first.
        """
        ...

    async def piece_presence(self, piece: int) -> Presence:
        """A cheap guess of what storage holds for `piece` (see `Presence`); never reads it."""
        ...

    async def pieces_presence(self, pieces: Sequence[int]) -> dict[int, Presence]:
        """`piece_presence` of many pieces at once, ``ABSENT`` ones left out."""
        ...

    async def sync(self) -> None:
        """Make every ``write_piece`` that returned before this call durable (fdatasync)."""
        ...

    async def aclose(self) -> None:
        """Release open files; idempotent. Does not imply ``sync()``."""
        ...


class MemoryStore:
    """An in-memory `PieceStore` for tests, with a model of durability.

    ``written`` pieces become ``durable`` at the next ``sync()``; `simulate_crash()` drops
    everything that was not durable yet, as a power cut would.
    """

    def __init__(self, piece_length: int, total_size: int) -> None:
        if piece_length <= 0 or total_size < 0:
            raise ValueError("piece_length must be positive and total_size non-negative")
        self.piece_length = piece_length
        self.total_size = total_size
        self.num_pieces = -(-total_size // piece_length)
        self._pieces: dict[int, bytes] = {}
        self._durable: dict[int, bytes] = {}
        self.sync_count = 0
        self.closed = False

    def piece_size(self, piece: int) -> int:
        if not 0 <= piece < self.num_pieces:
            raise IndexError(f"piece {piece} out of range (num_pieces={self.num_pieces})")
        return min(self.piece_length, self.total_size - piece * self.piece_length)

    @property
    def written(self) -> frozenset[int]:
        return frozenset(self._pieces)

    @property
    def durable(self) -> frozenset[int]:
        return frozenset(self._durable)

    def simulate_crash(self) -> None:
        """Forget every write that no ``sync()`` made durable."""
        self._pieces = dict(self._durable)

    def _check_open(self) -> None:
        if self.closed:
            raise StoreClosed("store is closed")

    def _stored(self, piece: int) -> bytes:
        self.piece_size(piece)
        try:
            return self._pieces[piece]
        except KeyError:
            raise StorageError(f"piece {piece} is not stored") from None

    async def read(self, piece: int, begin: int, length: int) -> bytes:
        self._check_open()
        size = self.piece_size(piece)
        if begin < 0 or length < 0 or begin + length > size:
            raise ValueError(f"{begin}+{length} outside piece {piece} of {size} bytes")
        return self._stored(piece)[begin : begin + length]

    async def read_piece(self, piece: int) -> bytes:
        self._check_open()
        return self._stored(piece)

    async def read_range(self, offset: int, length: int) -> bytes:
        self._check_open()
        if offset < 0 or length < 0 or offset + length > self.total_size:
            raise ValueError(f"range {offset}+{length} outside {self.total_size} bytes")
        out = bytearray()
        position = offset
        end = offset + length
        while position < end:
            piece, begin = divmod(position, self.piece_length)
            take = min(self.piece_size(piece) - begin, end - position)
            out += self._stored(piece)[begin : begin + take]
            position += take
        return bytes(out)

    async def write_piece(self, piece: int, data: bytes) -> None:
        self._check_open()
        check_piece_length(piece, self.piece_size(piece), data)
        self._pieces[piece] = bytes(data)

    async def write_verified(
        self,
        piece: int,
        data: bytes | bytearray,
        expected: bytes,
        on_match: Callable[[], None] | None = None,
    ) -> bool:
        check_piece_length(piece, self.piece_size(piece), data)
        if hashlib.sha1(data).digest() != expected:
            return False
        if on_match is not None:
            on_match()
        await self.write_piece(piece, bytes(data))
        return True

    async def evict_piece(self, piece: int) -> None:
        self._check_open()
        self.piece_size(piece)
        self._pieces.pop(piece, None)
        self._durable.pop(piece, None)

    async def piece_presence(self, piece: int) -> Presence:
        self._check_open()
        self.piece_size(piece)
        return Presence.DATA if piece in self._pieces else Presence.ABSENT

    async def pieces_presence(self, pieces: Sequence[int]) -> dict[int, Presence]:
        return {p: Presence.DATA for p in pieces if await self.piece_presence(p) is Presence.DATA}

    async def sync(self) -> None:
        self._check_open()
        self.sync_count += 1
        self._durable = dict(self._pieces)

    async def aclose(self) -> None:
        self.closed = True
