"""Recently verified pieces kept in memory (L3, pure): reads served without a disk round trip.

A piece whose SHA-1 matched (BEP 3) is normally written and, when a reader asks for it a moment
later, read back: a worker-thread hop and a ``pread`` per read, and for a reader waiting on the
piece the whole write before it may go on. `PieceMemory` keeps the piece's own buffer instead,
so `torrentfs.torrent.Torrent.read` can copy the bytes straight out of it.

What it guarantees:

* **Only verified bytes.** It holds only what its owner puts in, and the owner (the torrent's
  verifier) puts a piece in only after its hash matched. A held buffer is never written to
  again: it leaves the memory (`discard`, `drop_owner`, eviction) before anyone may reuse it,
  and the bytes a read gets are a copy, never a view that a later reuse could change.
* **Bounded memory.** At most ``limit`` bytes of piece buffers, least recently used out first,
  over every owner together (one budget for the whole session, however many torrents): a
  piece larger than the limit is never held. ``limit == 0`` holds nothing.
* **Follows the piece.** Owners drop a piece when it stops being theirs to serve (the disk
  budget evicts it, a write failed) and everything of theirs when they close.

No clock, no I/O: the engine calls it from its one trio thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

Evicted = tuple[Hashable, int, bytearray]
"""``(owner, piece, buffer)`` that left a `PieceMemory`."""


@dataclass(frozen=True, slots=True)
class PieceMemoryStats:
    """A snapshot (`PieceMemory.statistics`)."""

    limit: int
    used: int
    pieces: int
    hits: int
    misses: int


class PieceMemory:
    """Verified piece buffers by ``(owner, piece)``, least recently used first, within ``limit``
    bytes. ``owner`` is any hashable (the engine uses the `Torrent` itself)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        self.limit = limit
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._pieces: OrderedDict[tuple[Hashable, int], bytearray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pieces)

    def __contains__(self, key: tuple[Hashable, int]) -> bool:
        return key in self._pieces

    def put(self, owner: Hashable, piece: int, data: bytearray) -> list[Evicted]:
        """Hold ``data``, the verified bytes of ``piece``, as the most recently used; returns
        the ``(owner, piece, buffer)`` that left to make room (this memory no longer refers to
        them: their owner may reuse a buffer it does not use otherwise), or ``data`` itself if
        it cannot be held (larger than the limit)."""
        size = len(data)
        if size > self.limit:
            return [(owner, piece, data)]
        out: list[Evicted] = []
        old = self._pieces.pop((owner, piece), None)
        if old is not None:
            self.used -= len(old)
            if old is not data:
                out.append((owner, piece, old))
        while self.used + size > self.limit:
            (gone_owner, gone_piece), evicted = self._pieces.popitem(last=False)
            self.used -= len(evicted)
            out.append((gone_owner, gone_piece, evicted))
        self._pieces[owner, piece] = data
        self.used += size
        return out

    def read(self, owner: Hashable, piece: int, begin: int, length: int) -> bytes | None:
        """A copy of ``[begin, begin+length)`` of a held piece (now the most recently used), or
        None if the piece is not held or the range is not inside it."""
        key = (owner, piece)
        data = self._pieces.get(key)
        if data is None or begin < 0 or length < 0 or begin + length > len(data):
            self.misses += 1
            return None
        self.hits += 1
        self._pieces.move_to_end(key)
        return bytes(memoryview(data)[begin : begin + length])

    def holds(self, owner: Hashable, piece: int) -> bool:
        return (owner, piece) in self._pieces

    def discard(self, owner: Hashable, piece: int) -> bytearray | None:
        """Stop holding ``piece`` of ``owner``; its buffer (free for reuse), or None."""
        data = self._pieces.pop((owner, piece), None)
        if data is not None:
            self.used -= len(data)
        return data

    def drop_owner(self, owner: Hashable) -> int:
        """Stop holding every piece of ``owner`` (a torrent closed or removed); how many."""
        keys = [key for key in self._pieces if key[0] == owner]
        for key in keys:
            self.used -= len(self._pieces.pop(key))
        return len(keys)

    def statistics(self) -> PieceMemoryStats:
        return PieceMemoryStats(self.limit, self.used, len(self._pieces), self.hits, self.misses)


__all__ = ["Evicted", "PieceMemory", "PieceMemoryStats"]
