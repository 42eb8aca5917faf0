"""Which pieces someone has, as a BEP 3 bitfield (L1, pure).

BEP 3: "The high bit in the first byte corresponds to piece index 0. Bits that are cleared
indicate a missing piece, and set bits indicate a valid and available piece. Spare bits at the
end are set to zero. Clients should drop the connection if they receive bitfields that are not of
the correct size, or if the bitfield has any of the spare bits set." `Bitfield.from_bytes` does
exactly that check and raises `ProtocolError(remote=True)`, so a peer's bitfield is either
rejected in O(1) extra work or accepted with its spare bits zero (an invariant every method
relies on).

Held as a `bytearray` in wire order, so `to_bytes()` is a copy and `from_bytes()` a copy plus a
population count. The number of set bits is kept up to date by `set`/`clear`, making `count()`,
`all()` and `any()` O(1): the engine asks them after every verified piece and every ``have``.
`iter_set()`/`iter_clear()` skip whole bytes with a C-speed regex scan and a per-byte table, so
walking a sparse 100k-piece bitfield touches only the interesting bytes.

Indexes outside ``0 <= i < size`` raise `IndexError` (negative indexes are not Python-style
"from the end": a negative piece index is always a bug). Callers validate a peer's ``have``
index before using it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from torrentfs.errors import ProtocolError

__all__ = ["Bitfield"]

# _BITS[b]: the positions (0 = high bit) of the set bits of byte value b, in increasing order.
_BITS: tuple[tuple[int, ...], ...] = tuple(
    tuple(bit for bit in range(8) if value & (0x80 >> bit)) for value in range(256)
)
_NOT_ZERO = re.compile(rb"[^\x00]")
_NOT_FULL = re.compile(rb"[^\xff]")


def _spare_mask(size: int) -> int:
    """Mask of the spare (must-be-zero) low bits of the last byte of a `size`-bit field."""
    used = size & 7
    return 0 if used == 0 else 0xFF >> used


class Bitfield:
    """A fixed-size set of piece indexes, stored in BEP 3 wire order."""

    __slots__ = ("_count", "_data", "_size")
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"bitfield size must not be negative, got {size}")
        self._size = size
        self._data = bytearray((size + 7) >> 3)
        self._count = 0

    @classmethod
    def from_bytes(cls, size: int, data: bytes | bytearray | memoryview) -> Bitfield:
        """Parse a peer's ``bitfield`` payload for a torrent of `size` pieces (BEP 3).

        Raises `ProtocolError` (remote) when the length is not ``ceil(size / 8)`` bytes or a spare
        bit is set.
        """
        bf = cls(size)
        expected = len(bf._data)
        if len(data) != expected:
            raise ProtocolError(
                f"bitfield is {len(data)} bytes, expected {expected} for {size} pieces"
            )
        if expected and data[-1] & _spare_mask(size):
            raise ProtocolError(f"bitfield has spare bits set after piece {size - 1}")
        bf._data[:] = data
        bf._count = int.from_bytes(bf._data, "big").bit_count()
        return bf

    @property
    def size(self) -> int:
        """Number of pieces (bits) the field describes."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitfield):
            return NotImplemented
        return self._size == other._size and self._data == other._data

    def __repr__(self) -> str:
        return f"<Bitfield {self._count}/{self._size}>"

    def _check(self, index: int) -> None:
        if not 0 <= index < self._size:
            raise IndexError(f"piece {index} out of range for a bitfield of {self._size}")

    def __getitem__(self, index: int) -> bool:
        self._check(index)
        return bool(self._data[index >> 3] & (0x80 >> (index & 7)))

    def set(self, index: int) -> bool:
        """Mark piece `index` as had; True if it was not set before."""
        self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._data[index >> 3]
        if byte & mask:
            return False
        self._data[index >> 3] = byte | mask
        self._count += 1
        return True

    def clear(self, index: int) -> bool:
        """Mark piece `index` as missing; True if it was set before."""
        self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._data[index >> 3]
        if not byte & mask:
            return False
        self._data[index >> 3] = byte & ~mask
        self._count -= 1
        return True

    def set_all(self) -> None:
        """Mark every piece as had (a seeder's field, or BEP 6 ``have all``)."""
        n = len(self._data)
        if n:
            self._data[:] = b"\xff" * n
            self._data[-1] &= ~_spare_mask(self._size) & 0xFF
        self._count = self._size

    def clear_all(self) -> None:
        """Mark every piece as missing (BEP 6 ``have none``)."""
        self._data[:] = bytes(len(self._data))
        self._count = 0

    def count(self) -> int:
        """Number of set bits, O(1)."""
        return self._count

    def all(self) -> bool:
        """True when every piece is set (vacuously true for a 0-piece field)."""
        return self._count == self._size

    def any(self) -> bool:
        return self._count > 0

    def all_in(self, start: int, stop: int) -> bool:
        """True when every piece of ``range(start, stop)`` is set (an empty range: True).

        Two masked edge bytes and a C-speed scan of the bytes between: a reader's window of
        hundreds of pieces is checked on every read without a Python loop over its pieces.
        """
        if start >= stop:
            return True
        self._check(start)
        self._check(stop - 1)
        data = self._data
        first, last = start >> 3, (stop - 1) >> 3
        head = 0xFF >> (start & 7)  # the bits of `start` and after it in its byte
        tail = (0xFF << (7 - ((stop - 1) & 7))) & 0xFF  # the bits up to `stop - 1` in its byte
        if first == last:
            mask = head & tail
            return data[first] & mask == mask
        if data[first] & head != head or data[last] & tail != tail:
            return False
        return _NOT_FULL.search(data, first + 1, last) is None

    def to_bytes(self) -> bytes:
        """The BEP 3 ``bitfield`` payload: ``ceil(size / 8)`` bytes, spare bits zero."""
        return bytes(self._data)

    def iter_set(self) -> Iterator[int]:
        """Indexes of the set bits, increasing, as they were when iteration began."""
        data = bytes(self._data)  # a snapshot: the caller may set/clear while iterating
        bits = _BITS
        for match in _NOT_ZERO.finditer(data):
            pos = match.start()
            base = pos << 3
            for bit in bits[data[pos]]:
                yield base + bit

    def iter_clear(self) -> Iterator[int]:
        """Indexes of the clear bits, increasing, as they were when iteration began."""
        data = bytes(self._data)
        bits = _BITS
        size = self._size
        for match in _NOT_FULL.finditer(data):
            pos = match.start()
            base = pos << 3
            for bit in bits[data[pos] ^ 0xFF]:
                index = base + bit
                if index >= size:
                    return
                yield index

    def copy(self) -> Bitfield:
        bf = Bitfield.__new__(Bitfield)
        bf._size = self._size
        bf._data = bytearray(self._data)
        bf._count = self._count
        return bf
