"""Verifying what is already on disk when a torrent starts (L5; BEP 3 piece hashes).

Resume state (`torrentfs.storage.resume`) vouches only for pieces whose files are unchanged
since it was saved. Everything else that may be on disk - pieces verified after the last save
before a crash (our own writes move the file's mtime), pieces of a file changed since, every
piece for ``--recheck`` - is hashed here, in the torrent's own task, while the torrent is
already shown and serving what resume state vouched for. Guarantees, and why:

* **Nothing is served before its SHA-1 matched** (DESIGN.md §3 rule 6): a found piece goes
  through `Torrent.stored_pieces_checked`, the same path as a downloaded one.
* **Nothing is downloaded that the check is about to find:** the pieces under check are held
  back from the picker until their verdict, so a crash never costs the download of a verified
  piece that is still on disk.
* **Readers first:** a piece some reader waits for is hashed before the others, so a mount
  answers at once even while a big torrent is being checked behind it.
* **Cheap when there is nothing:** one pass of ``stat``/``SEEK_DATA`` (no reads) settles
  pieces with no data on disk; pieces lying wholly in sparse holes are matched against the
  hash of zeros without reading.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

import trio

from torrentfs.errors import TorrentfsError
from torrentfs.metainfo import Metainfo
from torrentfs.storage.base import PieceStore, Presence
from torrentfs.storage.resume import PieceChecker

__all__ = ["StoredCheck"]

log = logging.getLogger(__name__)

SCAN_BATCH = 4096
"""Pieces whose presence one worker-thread call judges (bounds how long a removal waits)."""


class CheckedTorrent(Protocol):
    """The parts of `torrentfs.torrent.Torrent` the check uses."""

    metainfo: Metainfo

    def hold_for_check(self, pieces: Iterable[int]) -> None: ...

    def stored_pieces_checked(self, pieces: Iterable[int], ok: bool) -> None: ...

    def waited_pieces(self) -> Iterable[int]: ...


class StoredCheck:
    """Hash the stored data of `pieces`; start `run` in the torrent's own nursery.

    The pieces are held back from the picker from construction until their verdict (or until
    `run` ends, e.g. cancelled by the torrent's removal).
    """

    def __init__(
        self,
        torrent: CheckedTorrent,
        store: PieceStore,
        pieces: Sequence[int],
        *,
        trusted: int = 0,
        concurrency: int = 2,
    ) -> None:
        self.torrent = torrent
        self.store = store
        self.metainfo = torrent.metainfo
        self._checker = PieceChecker(store, torrent.metainfo)
        self.concurrency = max(1, concurrency)
        self._pieces = sorted(pieces)
        self._pending = set(self._pieces)
        """Pieces without a verdict yet: held back from the picker."""
        self._queue: list[int] = []
        """Pieces with data to hash, highest index first (`pop` gives the lowest)."""
        self._queued: set[int] = set()
        self.trusted = trusted
        """Pieces resume state vouched for (not given to the check)."""
        self.hashed = 0
        """Pieces whose data was read and hashed."""
        self.found = 0
        """Pieces whose SHA-1 matched (they are verified now)."""
        self.done = trio.Event()
        torrent.hold_for_check(self._pieces)

    @property
    def remaining(self) -> int:
        return len(self._pending)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        started = trio.current_time()
        try:
            await self._scan()
            if self._queue:
                async with trio.open_nursery() as nursery:
                    for _ in range(min(self.concurrency, len(self._queue))):
                        nursery.start_soon(self._worker)
        finally:
            if self._pending:  # cancelled: unverified, back to the picker
                self._verdict(sorted(self._pending), False)
            self.done.set()
        if self.hashed or self.found:
            log.info(
                "%s: %d pieces on disk verified (%d hashed) in %.1f s",
                self.metainfo.name,
                self.found,
                self.hashed,
                trio.current_time() - started,
            )

    async def _scan(self) -> None:
        """Settle what needs no read: no data (missing), sparse holes (hash of zeros)."""
        for first in range(0, len(self._pieces), SCAN_BATCH):
            batch = self._pieces[first : first + SCAN_BATCH]
            try:
                presence = await self.store.pieces_presence(batch)
            except TorrentfsError as exc:
                log.warning("%s: cannot inspect stored data: %s", self.metainfo.name, exc)
                presence = {}
            missing = []  # one verdict for all: a big sparse file is mostly holes
            for piece in batch:
                state = presence.get(piece, Presence.ABSENT)
                if state is Presence.DATA:
                    self._queued.add(piece)
                elif state is Presence.HOLE and await self._checker.matches(piece, state):
                    self._verdict([piece], True)  # an all-zero piece (rare)
                else:
                    missing.append(piece)
            self._verdict(missing, False)
        self._queue = sorted(self._queued, reverse=True)

    def _next(self) -> int | None:
        for piece in self.torrent.waited_pieces():  # a reader waits: this one first
            if piece in self._queued:
                self._queued.discard(piece)
                return piece
        while self._queue:
            piece = self._queue.pop()
            if piece in self._queued:
                self._queued.discard(piece)
                return piece
        return None

    async def _worker(self) -> None:
        while (piece := self._next()) is not None:
            try:
                ok = await self._checker.matches(piece, Presence.DATA)
            except TorrentfsError as exc:
                log.debug("%s: piece %d unreadable: %s", self.metainfo.name, piece, exc)
                ok = False
            else:
                self.hashed += 1
            self._verdict([piece], ok)

    def _verdict(self, pieces: list[int], ok: bool) -> None:
        if not pieces:
            return
        self._pending.difference_update(pieces)
        if ok:
            self.found += len(pieces)
        self.torrent.stored_pieces_checked(pieces, ok)
