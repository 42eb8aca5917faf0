"""Byte geometry of a torrent: files ⇄ pieces ⇄ 16 KiB blocks (L1, pure).

BEP 3 treats the files of a torrent as one concatenated byte stream cut into pieces of
``piece length`` bytes (the last piece may be shorter); peers then exchange pieces in blocks
of `BLOCK_SIZE` bytes (the last block of a piece may be shorter). BEP 47 pad files are ordinary
spans of that stream here: the geometry does not care what is stored, only where.

A `Geometry` answers, for the engine's hot path, which pieces hold a byte range, which file
bytes make up a piece, and how a piece splits into blocks. Everything that can be is
precomputed once; every method is O(1) or O(log n) in the number of files (bisect over the
offsets of the non-empty files), plus the size of its answer.

Guarantees, property-tested in ``tests/test_geometry.py``:

* ``piece_file_slices(i)`` tiles piece *i* exactly, in stream order, and never mentions a
  zero-length file;
* ``pieces_for_range(offset, length)`` is the smallest range of pieces covering the bytes;
* ``file_pieces(f)`` covers file *f* (empty for a zero-length file);
* blocks ``0 .. num_blocks(i) - 1`` tile piece *i*;
* ``file_at(offset)`` is the non-empty file that holds the byte at *offset*.

Bad indexes raise `IndexError` and bad offsets/lengths `ValueError`: callers validate untrusted
numbers (e.g. a peer's ``request``) before asking. An inconsistent layout given to the
constructor raises `GeometryError` (a `MetainfoError`), so a torrent that describes impossible
files is rejected as a bad torrent.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from torrentfs.errors import MetainfoError
from torrentfs.types import BLOCK_SIZE

__all__ = ["BLOCK_SIZE", "FileSlice", "Geometry", "GeometryError"]


class GeometryError(MetainfoError):
    """The piece length, total size and file spans do not describe one consistent stream."""


class FileSlice(NamedTuple):
    """A run of bytes that one piece shares with one file.

    ``length`` bytes starting at ``file_offset`` in file ``file_index`` are the bytes starting at
    ``piece_offset`` in the piece. A NamedTuple: cheap to build on the hot path and unpackable.
    """

    file_index: int
    file_offset: int
    piece_offset: int
    length: int


class Geometry:
    """The piece/block/file layout of one torrent's concatenated data (BEP 3).

    ``file_spans`` holds ``(offset, length)`` for every file in torrent order, pad files
    included; the spans must be contiguous from 0 and add up to ``total_size``.
    """

    __slots__ = (
        "_file_lengths",
        "_file_offsets",
        "_last_piece",
        "_last_piece_size",
        "_nz_files",
        "_nz_starts",
        "num_files",
        "num_pieces",
        "piece_length",
        "total_size",
    )

    def __init__(
        self, piece_length: int, total_size: int, file_spans: Sequence[tuple[int, int]]
    ) -> None:
        if piece_length <= 0:
            raise GeometryError(f"piece length must be positive, got {piece_length}")
        if total_size < 0:
            raise GeometryError(f"total size must not be negative, got {total_size}")
        offsets: list[int] = []
        lengths: list[int] = []
        nz_starts: list[int] = []
        nz_files: list[int] = []
        position = 0
        for index, (offset, length) in enumerate(file_spans):
            if length < 0:
                raise GeometryError(f"file {index} has negative length {length}")
            if offset != position:
                raise GeometryError(
                    f"file {index} starts at {offset}, expected {position} (files must be "
                    "contiguous)"
                )
            offsets.append(offset)
            lengths.append(length)
            if length:
                nz_starts.append(offset)
                nz_files.append(index)
            position += length
        if position != total_size:
            raise GeometryError(f"files add up to {position} bytes, total size is {total_size}")

        self.piece_length = piece_length
        self.total_size = total_size
        self.num_pieces = -(-total_size // piece_length)
        self.num_files = len(offsets)
        self._file_offsets = tuple(offsets)
        self._file_lengths = tuple(lengths)
        self._nz_starts = tuple(nz_starts)
        self._nz_files = tuple(nz_files)
        self._last_piece = self.num_pieces - 1
        self._last_piece_size = total_size - self._last_piece * piece_length

    def __repr__(self) -> str:
        return (
            f"Geometry(piece_length={self.piece_length}, total_size={self.total_size}, "
            f"num_pieces={self.num_pieces}, num_files={self.num_files})"
        )

    # -- pieces ---------------------------------------------------------------------------

    def _check_piece(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range (num_pieces={self.num_pieces})")

    def piece_size(self, index: int) -> int:
        """Bytes in piece `index`: ``piece_length`` except for a shorter last piece."""
        self._check_piece(index)
        return self._last_piece_size if index == self._last_piece else self.piece_length

    def piece_offset(self, index: int) -> int:
        """Offset of piece `index`'s first byte in the torrent's concatenated data."""
        self._check_piece(index)
        return index * self.piece_length

    def piece_at(self, offset: int) -> int:
        """The piece holding the byte at `offset` (``0 <= offset < total_size``)."""
        if not 0 <= offset < self.total_size:
            raise ValueError(f"offset {offset} outside 0..{self.total_size}")
        return offset // self.piece_length

    def pieces_for_range(self, offset: int, length: int) -> range:
        """The smallest range of pieces holding bytes ``[offset, offset + length)``.

        Empty (at the piece of `offset`) when `length` is 0.
        """
        if offset < 0 or length < 0 or offset + length > self.total_size:
            raise ValueError(
                f"range {offset}+{length} outside the torrent's {self.total_size} bytes"
            )
        first = offset // self.piece_length
        if length == 0:
            return range(first, first)
        return range(first, (offset + length - 1) // self.piece_length + 1)

    # -- blocks (BEP 3 requests) ----------------------------------------------------------

    def num_blocks(self, index: int) -> int:
        """How many `BLOCK_SIZE` requests piece `index` takes."""
        return -(-self.piece_size(index) // BLOCK_SIZE)

    def block_size(self, index: int, block: int) -> int:
        """Length of block `block` of piece `index`; it begins at ``block * BLOCK_SIZE``."""
        size = self.piece_size(index)
        begin = block * BLOCK_SIZE
        if block < 0 or begin >= size:
            raise IndexError(f"block {block} out of range for piece {index} of {size} bytes")
        return min(BLOCK_SIZE, size - begin)

    # -- files ----------------------------------------------------------------------------

    def _check_file(self, file_index: int) -> None:
        if not 0 <= file_index < self.num_files:
            raise IndexError(f"file {file_index} out of range (num_files={self.num_files})")

    def file_offset(self, file_index: int) -> int:
        """Offset of the file's first byte in the torrent's concatenated data."""
        self._check_file(file_index)
        return self._file_offsets[file_index]

    def file_length(self, file_index: int) -> int:
        self._check_file(file_index)
        return self._file_lengths[file_index]

    def file_pieces(self, file_index: int) -> range:
        """The smallest range of pieces holding the file's bytes; empty for a 0-byte file."""
        self._check_file(file_index)
        return self.pieces_for_range(self._file_offsets[file_index], self._file_lengths[file_index])

    def file_at(self, offset: int) -> int:
        """Index of the file holding the byte at `offset`; zero-length files hold no byte."""
        if not 0 <= offset < self.total_size:
            raise ValueError(f"offset {offset} outside 0..{self.total_size}")
        return self._nz_files[bisect_right(self._nz_starts, offset) - 1]

    def piece_file_slices(self, index: int) -> list[FileSlice]:
        """The file runs that make up piece `index`, in order, skipping zero-length files.

        Their lengths add up to ``piece_size(index)`` and each begins where the previous ended.
        """
        start = index * self.piece_length
        end = start + self.piece_size(index)
        starts = self._nz_starts
        files = self._nz_files
        lengths = self._file_lengths
        k = bisect_right(starts, start) - 1
        slices: list[FileSlice] = []
        position = start
        count = len(starts)
        while k < count and position < end:
            file_start = starts[k]
            file_index = files[k]
            file_end = min(file_start + lengths[file_index], end)
            slices.append(
                FileSlice(file_index, position - file_start, position - start, file_end - position)
            )
            position = file_end
            k += 1
        return slices
