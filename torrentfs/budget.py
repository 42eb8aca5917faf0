"""The disk budget and pins (L5): the download dir stays within ``cache_size`` bytes.

`DiskCache` is the session's `torrentfs.torrent.DiskHooks`: every torrent calls it around each
piece write (`room_for`) and after each read (`pieces_read`). The policy -- which pieces go, in
which order, what is protected -- is `torrentfs.eviction`'s; this module does the accounting
and the I/O.

What it guarantees, and why:

* **The budget holds for the bytes on disk.** Use is the sum of ``st_blocks * 512`` of every
  file under the download dir (measured by a walk at start and every `WALK_INTERVAL` seconds,
  files just written or punched re-measured within `REFRESH_INTERVAL`), plus, between
  measurements, an upper bound of what each write allocated (`eviction.footprints`), plus the
  writes in flight. Before a piece is written, room is made for it: the download dir exceeds
  the budget only when nothing is evictable at all -- every stored piece is wanted by an open
  handle's readahead window or a read in progress, pinned, or a media file's head or tail --
  which, with the readahead window capped (`eviction.readahead_cap`), means at most the piece
  each active reader is waiting for.
* **Evicting never serves wrong data and survives a crash.** Victims lose their verified bit
  first (`Torrent.piece_evicted`: readers wait for them again, peers' requests are refused),
  the resume state stops claiming them and is flushed (`ResumeWriter.forget` + ``flush``:
  fsync'd before any byte is destroyed), and only then are their bytes punched out
  (``FALLOC_FL_PUNCH_HOLE``). A piece being evicted is not written again until its punch is
  done, and pieces being read or uploaded are never chosen (`Torrent.evictable`).
* **Evicted data comes back on demand:** an evicted piece is simply missing; the next read of
  it fetches it from the swarm and verifies it like any other.
* **Pins keep a torrent or file whole:** a pinned torrent is downloaded completely
  (``download_all``) and a pinned file is wanted entirely; their pieces are never evicted.
  Pins come from the configuration (`eviction.PinRules`) or from the ``user.torrentfs.pin``
  extended attribute of the torrent's own file in the metainfo folder (`set_source_pin`; the
  mount itself is read-only, so that is where a pin can be written and where it persists).
"""

from __future__ import annotations

import logging
import os
import stat
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from torrentfs.errors import TorrentfsError
from torrentfs.eviction import (
    LruLedger,
    PinRules,
    SourcePin,
    bytes_to_free,
    edge_pieces,
    footprint,
    footprints,
    low_water,
)
from torrentfs.picker import Priority
from torrentfs.torrent import DiskHooks, Torrent

if TYPE_CHECKING:
    from torrentfs.storage.files import FileStore
    from torrentfs.storage.resume import ResumeWriter

__all__ = ["REFRESH_INTERVAL", "WALK_INTERVAL", "CacheStats", "DiskCache"]

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0
"""Seconds between re-measurements of the files written or punched since the last one."""
WALK_INTERVAL = 60.0
"""Seconds between two full walks of the download dir (files changed by others)."""


@dataclass
class CacheStats:
    """A snapshot for status displays (`DiskCache.statistics`)."""

    limit: int | None
    used: int
    evicted_pieces: int
    evicted_bytes: int
    over_budget_writes: int


@dataclass(eq=False)
class _Entry:
    """One registered torrent: its parts, protected pieces and pins."""

    torrent: Torrent
    store: FileStore
    writer: ResumeWriter
    paths: list[str | None]
    edges: frozenset[int]
    pinned_all: bool = False
    pinned_files: dict[int, Any] = field(default_factory=dict)
    """File index -> the want keeping it whole."""
    pinned_pieces: set[int] = field(default_factory=set)


class DiskCache(DiskHooks):
    """The budget of one download dir (``limit`` None: account and pin, never evict)."""

    def __init__(
        self,
        root: Path,
        limit: int | None,
        *,
        rules: PinRules | None = None,
        refresh_interval: float = REFRESH_INTERVAL,
        walk_interval: float = WALK_INTERVAL,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.limit = limit
        self.rules = rules if rules is not None else PinRules()
        self.refresh_interval = refresh_interval
        self.walk_interval = walk_interval
        self._entries: dict[bytes, _Entry] = {}
        self._ledger: LruLedger[bytes] = LruLedger()
        self._files: dict[str, int] = {}
        """Bytes allocated per file under root (measured, plus estimates since)."""
        self._files_total = 0
        self._inflight = 0
        self._dirty: set[str] = set()
        self._gen: dict[str, int] = defaultdict(int)
        self._lock = trio.Lock()
        self._evicting: set[tuple[bytes, int]] = set()
        self._round_done = trio.Event()
        self._source_pins: dict[bytes, SourcePin] = {}
        self.evicted_pieces = 0
        self.evicted_bytes = 0
        self.over_budget_writes = 0
        self._warned_full = False

    # ------------------------------------------------------------------ accounting

    @property
    def used(self) -> int:
        """Bytes the download dir takes (or is about to, with writes in flight)."""
        return self._files_total + self._inflight

    def statistics(self) -> CacheStats:
        return CacheStats(
            self.limit, self.used, self.evicted_pieces, self.evicted_bytes, self.over_budget_writes
        )

    def torrent_disk_usage(self, info_hash: bytes) -> int:
        """Bytes on disk of one registered torrent's files (0 if unknown)."""
        entry = self._entries.get(info_hash)
        if entry is None:
            return 0
        return sum(self._files.get(p, 0) for p in set(entry.paths) if p is not None)

    def _set_size(self, path: str, size: int) -> None:
        self._files_total += size - self._files.get(path, 0)
        self._files[path] = size

    async def refresh(self, paths: Iterable[str] | None = None) -> None:
        """Measure ``st_blocks`` of ``paths`` (default: every file touched since the last time)."""
        todo = list(self._dirty if paths is None else paths)
        if not todo:
            return
        self._dirty.difference_update(todo)
        gens = {p: self._gen[p] for p in todo}
        sizes = await trio.to_thread.run_sync(_measure, todo)
        for path, size in sizes.items():
            if self._gen[path] != gens[path]:  # written meanwhile: the estimate may be newer
                size = max(size, self._files.get(path, 0))
                self._dirty.add(path)
            self._set_size(path, size)

    async def walk(self) -> None:
        """Measure every file under the download dir (files of other torrents count too)."""
        gens = dict(self._gen)
        sizes = await trio.to_thread.run_sync(_walk, self.root)
        for path in list(self._files):
            if path not in sizes:
                sizes[path] = 0 if self._gen[path] == gens.get(path, 0) else self._files[path]
        for path, size in sizes.items():
            if self._gen[path] != gens.get(path, 0):
                size = max(size, self._files.get(path, 0))
            if size or path in self._files:
                self._set_size(path, size)
        for path in [p for p, s in self._files.items() if s == 0]:
            del self._files[path]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure the download dir, then keep measuring and enforcing until cancelled."""
        await self.walk()
        task_status.started()
        last_walk = trio.current_time()
        while True:
            await trio.sleep(self.refresh_interval)
            async with self._lock:
                if trio.current_time() - last_walk >= self.walk_interval:
                    await self.walk()
                    last_walk = trio.current_time()
                else:
                    await self.refresh()
                if self.limit is not None and self.used > self.limit:
                    await self._evict(self.used - low_water(self.limit))

    # ------------------------------------------------------------------ torrents

    def register(self, torrent: Torrent, store: FileStore, writer: ResumeWriter) -> None:
        """Budget `torrent` (its data lives in `store`, its resume state in `writer`)."""
        if Path(os.path.abspath(store.root)) != self.root:
            return  # data kept elsewhere: not part of this download dir
        metainfo = torrent.metainfo
        paths: list[str | None] = []
        for entry in metainfo.files:
            path = store.file_path(entry.index)
            paths.append(None if path is None else os.path.abspath(path))
        key = torrent.info_hash
        self._entries[key] = _Entry(torrent, store, writer, paths, edge_pieces(metainfo))
        for piece in torrent.have.iter_set():
            self._ledger.add(key, piece, footprint(metainfo, piece), recent=False)
        torrent.cache = self
        self._apply_pins(key)

    def unregister(self, torrent: Torrent) -> None:
        """The torrent left the session; its files stay on disk (and counted)."""
        entry = self._entries.pop(torrent.info_hash, None)
        if entry is not None:
            self._ledger.drop(torrent.info_hash)
            torrent.cache = DiskHooks()

    # ------------------------------------------------------------------ hooks (Torrent)

    def pieces_read(self, torrent: Torrent, pieces: range) -> None:
        self._ledger.touch(torrent.info_hash, pieces)

    @asynccontextmanager
    async def room_for(self, torrent: Torrent, piece: int) -> AsyncIterator[None]:
        key = torrent.info_hash
        entry = self._entries.get(key)
        if entry is None:
            yield
            return
        while (key, piece) in self._evicting:  # its punch must land before the new bytes
            await self._round_done.wait()
        parts = footprints(torrent.metainfo, piece)
        size = sum(n for _, n in parts)
        if self.limit is not None and self.used + size > self.limit:
            async with self._lock:
                await self._make_room(size)
        self._inflight += size
        try:
            yield
        finally:
            self._inflight -= size
        # Written: count the estimate until the next measurement.
        for index, n in parts:
            path = entry.paths[index]
            if path is not None:
                self._set_size(path, self._files.get(path, 0) + n)
                self._gen[path] += 1
                self._dirty.add(path)
        self._ledger.add(key, piece, size)

    # ------------------------------------------------------------------ evicting

    async def _make_room(self, size: int) -> None:
        assert self.limit is not None
        if bytes_to_free(self.used, size, self.limit) <= 0:
            return
        await self.refresh()
        need = bytes_to_free(self.used, size, self.limit)
        if need > 0:
            await self._evict(need)
        if self.used + size > self.limit:
            self.over_budget_writes += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "disk budget: %d of %d bytes used and nothing evictable (every stored "
                    "piece is being read, pinned, or a media file's head/tail); writing anyway",
                    self.used,
                    self.limit,
                )
        else:
            self._warned_full = False

    def _evictable(self, key: bytes, piece: int) -> bool:
        entry = self._entries.get(key)
        return (
            entry is not None
            and not entry.pinned_all
            and piece not in entry.edges
            and piece not in entry.pinned_pieces
            and entry.torrent.evictable(piece)
        )

    async def _evict(self, need: int) -> int:
        """Evict least-recently-read pieces worth ``need`` bytes (lock held); bytes planned."""
        victims = self._ledger.plan(need, self._evictable)
        if not victims:
            return 0
        groups: dict[bytes, list[int]] = defaultdict(list)
        for key, piece in victims:
            groups[key].append(piece)
        self._evicting.update(victims)
        planned = 0
        touched: set[str] = set()
        try:
            for key, pieces in groups.items():
                entry = self._entries[key]
                for piece in pieces:
                    planned += self._ledger.size_of(key, piece)
                    self._ledger.discard(key, piece)
                    entry.torrent.piece_evicted(piece)  # readers wait for it again from now
                    entry.writer.forget(piece)
                try:
                    await entry.writer.flush(entry.store)  # nothing claims them any more
                except TorrentfsError as exc:
                    # Their bytes stay on disk unclaimed: fetched again if read, never wrong.
                    log.error("disk budget: cannot save resume state, not evicting: %s", exc)
                    continue
                for piece in pieces:
                    try:
                        await entry.store.evict_piece(piece)
                    except TorrentfsError as exc:
                        log.error("disk budget: cannot punch piece %d: %s", piece, exc)
                    # The punch changed the files: record their new stat at the next flush.
                    entry.writer.forget(piece)
                    for index, _ in footprints(entry.torrent.metainfo, piece):
                        path = entry.paths[index]
                        if path is not None:
                            touched.add(path)
                self.evicted_pieces += len(pieces)
                log.debug("%s: evicted %d pieces", entry.torrent.metainfo.name, len(pieces))
        finally:
            self._evicting.difference_update(victims)
            self._round_done.set()
            self._round_done = trio.Event()
        before = self._files_total
        await self.refresh(touched)
        self.evicted_bytes += max(0, before - self._files_total)
        return planned

    # ------------------------------------------------------------------ pins

    def is_pinned(self, info_hash: bytes, file_index: int | None = None) -> bool:
        """Is the torrent (``file_index`` None) or one of its files kept whole?"""
        entry = self._entries.get(info_hash)
        if entry is None:
            return False
        if file_index is None or entry.pinned_all:
            return entry.pinned_all
        return file_index in entry.pinned_files

    def set_source_pin(self, info_hash: bytes, pin: SourcePin | None) -> None:
        """The pin read from the torrent's metainfo file (``user.torrentfs.pin``), or None."""
        if pin is None or not pin:
            if self._source_pins.pop(info_hash, None) is None:
                return
        elif self._source_pins.get(info_hash) == pin:
            return
        else:
            self._source_pins[info_hash] = pin
        self._apply_pins(info_hash)

    def _apply_pins(self, key: bytes) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        torrent = entry.torrent
        metainfo = torrent.metainfo
        source = self._source_pins.get(key, SourcePin())
        pin_all = source.whole or self.rules.torrent_pinned(metainfo.name, key.hex())
        if pin_all != entry.pinned_all:
            entry.pinned_all = pin_all
            torrent.set_download_all(pin_all)
            log.info("%s: %s", metainfo.name, "pinned" if pin_all else "unpinned")
        files = set(self.rules.pinned_files(metainfo))
        files.update(PinRules(source.files).pinned_files(metainfo, relative=True))
        for index in set(entry.pinned_files) - files:
            entry.pinned_files.pop(index).drop()
        for index in sorted(files - set(entry.pinned_files)):
            f = metainfo.files[index]
            want = torrent.new_want()
            if f.length:
                want.update(f.offset, f.length, priority=Priority.NORMAL, deadline=None)
            entry.pinned_files[index] = want
        geometry = metainfo.geometry
        entry.pinned_pieces = {p for i in entry.pinned_files for p in geometry.file_pieces(i)}


def _measure(paths: list[str]) -> dict[str, int]:
    """Allocated bytes (``st_blocks * 512``) of each path; 0 for a missing or odd one."""
    sizes = {}
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            sizes[path] = 0
            continue
        sizes[path] = st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else 0
    return sizes


def _walk(root: Path) -> dict[str, int]:
    """Allocated bytes of every regular file under ``root`` (symlinks never followed)."""
    sizes: dict[str, int] = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_blocks:
                sizes[path] = st.st_blocks * 512
    return sizes
