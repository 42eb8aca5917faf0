"""The disk budget's policy (L3, pure): what to evict, what to keep, what a piece costs on disk.

A mount with ``cache_size`` keeps its download dir within that many bytes (issue 6; users ask
for bounded, documented disk use: btfs #63). When a verified piece must be written and the
budget is full, pieces are evicted (their bytes punched out of the sparse files, their BEP 3
``have`` withdrawn) until it fits. This module decides *which*; `torrentfs.budget` does the I/O.

What the policy guarantees:

* **Least recently read first.** `LruLedger` orders every verified piece by its last read (or
  its arrival, for pieces nobody read yet); `LruLedger.plan` walks from the oldest.
* **What is needed is never chosen.** The caller's ``evictable`` test says no for pieces an open
  handle wants (its readahead window, the bytes a read waits for), pieces being read or
  uploaded right now, pinned pieces, and the head and tail of media files (`edge_pieces`:
  players and ``ffprobe`` read a container's index there on every open, DESIGN.md §5).
* **Evictions come in batches.** `bytes_to_free` frees down to a low-water mark below the
  budget, so the crash-safe resume update that precedes every punch (one ``fsync``) is paid once
  per batch, not once per piece.
* **Real disk use.** `footprint` rounds every file slice of a piece out to whole filesystem
  blocks: an upper bound of what writing the piece can allocate, used between measurements of
  ``st_blocks`` (which always win).

Pins (`PinRules`): a torrent or file matched by a rule is kept whole -- downloaded completely
and never evicted. Rules are shell patterns (`fnmatch`) matched against the path of an entry
relative to the mount root (``Name`` for a torrent, ``Name/dir/file.mkv`` for a file), or a
torrent's 40-digit hex info-hash.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from torrentfs.readahead import head_tail

if TYPE_CHECKING:
    from torrentfs.metainfo import Metainfo

__all__ = [
    "FS_BLOCK",
    "MEDIA_EXTENSIONS",
    "LruLedger",
    "PinRules",
    "SourcePin",
    "bytes_to_free",
    "edge_pieces",
    "footprint",
    "footprints",
    "is_media",
    "low_water",
    "parse_pin_value",
    "readahead_cap",
]

FS_BLOCK = 4096
"""The allocation unit assumed by `footprint` (ext4, xfs, btrfs and tmpfs on x86-64)."""

MEDIA_EXTENSIONS = frozenset(
    {
        "3gp", "aac", "ac3", "aiff", "alac", "ape", "asf", "avi", "dts", "flac", "flv", "m2ts",
        "m4a", "m4b", "m4v", "mka", "mkv", "mov", "mp3", "mp4", "mpeg", "mpg", "mts", "ogg",
        "ogm", "ogv", "opus", "rm", "rmvb", "ts", "vob", "wav", "webm", "wma", "wmv", "wv",
    }
)  # fmt: skip
"""File name extensions (lower case) whose head and tail are kept (`edge_pieces`)."""

K = TypeVar("K", bound=Hashable)


def is_media(path: Sequence[str]) -> bool:
    """True if the last component of ``path`` has a media extension (audio or video)."""
    if not path:
        return False
    _, dot, ext = path[-1].rpartition(".")
    return bool(dot) and ext.lower() in MEDIA_EXTENSIONS


def edge_pieces(metainfo: Metainfo) -> frozenset[int]:
    """Pieces holding the head or the tail (`readahead.head_tail`) of a media file."""
    geometry = metainfo.geometry
    pieces: set[int] = set()
    for entry in metainfo.files:
        if entry.pad or entry.length == 0 or not is_media(entry.path):
            continue
        for start, end in head_tail(entry.length):
            pieces.update(geometry.pieces_for_range(entry.offset + start, end - start))
    return frozenset(pieces)


def footprints(metainfo: Metainfo, piece: int, block: int = FS_BLOCK) -> list[tuple[int, int]]:
    """``(file index, bytes)`` of disk that writing ``piece`` can allocate in each file: every
    non-pad file slice rounded out to whole blocks (an upper bound; neighbouring pieces may
    share a block)."""
    files = metainfo.files
    result = []
    for s in metainfo.geometry.piece_file_slices(piece):
        if files[s.file_index].pad or s.length == 0:
            continue
        first = s.file_offset // block
        last = (s.file_offset + s.length + block - 1) // block
        result.append((s.file_index, (last - first) * block))
    return result


def footprint(metainfo: Metainfo, piece: int, block: int = FS_BLOCK) -> int:
    """The sum of `footprints`: what writing ``piece`` can cost on disk at most."""
    return sum(size for _, size in footprints(metainfo, piece, block))


def low_water(limit: int) -> int:
    """Where a round of evictions stops: 1/16 of the budget below it (batches, see above)."""
    return limit - limit // 16


def bytes_to_free(used: int, incoming: int, limit: int) -> int:
    """How much to evict before writing ``incoming`` bytes with ``used`` of ``limit`` taken.

    Nothing while it fits; otherwise enough to land at the `low_water` mark after the write.
    """
    if used + incoming <= limit:
        return 0
    return used + incoming - low_water(limit)


def readahead_cap(limit: int, piece_length: int = 0) -> int:
    """The largest readahead window that leaves room in a budget of ``limit`` bytes.

    A quarter of the budget: a few concurrent streams' windows plus media heads and tails then
    fit, so the pieces evicted are those behind the readers, not those about to be read.
    """
    return max(limit // 4, 2 * piece_length, 1)


class LruLedger(Generic[K]):
    """Verified pieces ``(key, piece)`` in least-recently-used order, with their disk cost."""

    def __init__(self) -> None:
        self._order: OrderedDict[tuple[K, int], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, item: object) -> bool:
        return item in self._order

    def add(self, key: K, piece: int, size: int, *, recent: bool = True) -> None:
        """Record a verified piece: most recently used, or (``recent=False``, pieces found on
        disk at start) least recently used. Re-adding updates its size and recency."""
        item = (key, piece)
        self._order[item] = size
        self._order.move_to_end(item, last=recent)

    def touch(self, key: K, pieces: Iterable[int]) -> None:
        """``pieces`` were just read: they become the most recently used (unknown ones ignored)."""
        order = self._order
        for piece in pieces:
            item = (key, piece)
            if item in order:
                order.move_to_end(item)

    def discard(self, key: K, piece: int) -> None:
        self._order.pop((key, piece), None)

    def drop(self, key: K) -> None:
        """Forget every piece of ``key`` (its torrent left the session)."""
        for item in [i for i in self._order if i[0] == key]:
            del self._order[item]

    def size_of(self, key: K, piece: int) -> int:
        return self._order.get((key, piece), 0)

    def oldest(self) -> list[tuple[K, int]]:
        """Every piece, least recently used first (tests and status)."""
        return list(self._order)

    def plan(self, need: int, evictable: Callable[[K, int], bool]) -> list[tuple[K, int]]:
        """The least recently used pieces passing ``evictable`` whose sizes add up to at least
        ``need`` (fewer if there are not enough); nothing if ``need <= 0``."""
        chosen: list[tuple[K, int]] = []
        freed = 0
        if need <= 0:
            return chosen
        for item, size in self._order.items():
            if evictable(*item):
                chosen.append(item)
                freed += size
                if freed >= need:
                    break
        return chosen


@dataclass(frozen=True)
class PinRules:
    """Pin patterns (see the module docstring); empty: nothing pinned."""

    patterns: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def torrent_pinned(self, name: str, info_hash_hex: str) -> bool:
        """A rule names the whole torrent: its top entry's name or its info-hash."""
        return any(
            p.lower() == info_hash_hex.lower() or fnmatch.fnmatchcase(name, p)
            for p in self.patterns
        )

    def pinned_files(self, metainfo: Metainfo, *, relative: bool = False) -> list[int]:
        """Indexes of the (non-pad) files of a multi-file torrent that a rule names.

        Rules match ``Name/dir/file`` (the path in the mount), or with ``relative`` the path
        inside the torrent (``dir/file``, as in a `SourcePin`).
        """
        if not metainfo.multi_file:
            return []  # a single-file torrent's file is the torrent: `torrent_pinned`
        found = []
        for entry in metainfo.files:
            if entry.pad:
                continue
            parts = entry.path if relative else (metainfo.name, *entry.path)
            path = "/".join(parts)
            if any(fnmatch.fnmatchcase(path, p) for p in self.patterns):
                found.append(entry.index)
        return found


@dataclass(frozen=True)
class SourcePin:
    """A pin written on a torrent's metainfo file: the whole torrent, or file patterns."""

    whole: bool = False
    files: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.whole or bool(self.files)


MAX_PIN_VALUE = 4096
_YES = frozenset({"", "1", "yes", "true", "on", "all"})
_NO = frozenset({"0", "no", "false", "off", "none"})


def parse_pin_value(value: bytes) -> SourcePin:
    """A ``user.torrentfs.pin`` value: ``1`` (or empty, ``yes``...) pins the whole torrent,
    ``0`` nothing; otherwise file patterns inside the torrent, one per line or comma-separated.
    Undecodable or oversized values pin nothing."""
    if len(value) > MAX_PIN_VALUE:
        return SourcePin()
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return SourcePin()
    if text.lower() in _YES:
        return SourcePin(whole=True)
    if text.lower() in _NO:
        return SourcePin()
    items = [part.strip().strip("/") for line in text.splitlines() for part in line.split(",")]
    return SourcePin(files=tuple(i for i in items if i))
