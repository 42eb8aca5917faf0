"""One reader per open file handle (L5): a readahead window -> engine wants; exact verified reads.

What a `Reader` guarantees, and why (DESIGN.md §3 rules 4-6, §5):

* ``read(offset, size)`` returns exactly the file's bytes ``[offset, offset + size)``, short only
  at the end of the file, and only bytes whose piece passed its SHA-1 check (BEP 3): it asks the
  engine's ``Torrent.read``, which serves verified pieces only.
* **Every wait is bounded** by ``read_timeout``; a read that runs out of time raises the engine's
  `ReadTimeout` after one log line naming the file, the offset, the piece and the swarm state.
* **Each handle owns its wants:** the head and tail of the file (so ``ffprobe`` and players find
  an MP4 ``moov`` atom or MKV cues at the end quickly) are wanted from open, the readahead window
  from the first read; `release` drops them all at once. Handles are independent: two players
  on one file never move each other's windows.
* **The readahead window** (`ReadaheadWindow`) follows the read pattern: it grows on sequential
  reads (never beyond twice what was read sequentially, so nothing is fetched that no one is
  about to read), is sized from the observed download rate (``seconds`` of data ahead, within
  ``min_bytes``/``max_bytes``), tolerates the kernel's out-of-order readahead (reads a little
  behind or inside the window are not seeks), and jumps with a seek, replacing the old window at
  once (the engine's want is updated in place, so the old range stops being requested).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from torrentfs.errors import ReadTimeout, StorageError, TorrentfsError
from torrentfs.picker import Priority

log = logging.getLogger(__name__)

MiB = 1 << 20

DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_READAHEAD_MIN = 1 * MiB
DEFAULT_READAHEAD_MAX = 64 * MiB
DEFAULT_READAHEAD_SECONDS = 4.0
HEAD_BYTES = 256 * 1024
"""Wanted from the start of a file at open: container headers (MP4 ``ftyp``, MKV EBML)."""
RETRY_FAST_FAIL = 1.0
"""Seconds after a timed-out read during which a read of the same bytes fails at once."""
TAIL_BYTES = 1 * MiB
"""Wanted from the end of a file at open: MP4 ``moov`` without faststart, MKV cues/seek head."""


class ReaderClosed(TorrentfsError):
    """The handle was released (or the mount is shutting down) while a read was asked of it."""


class EngineWant(Protocol):
    def update(
        self, offset: int, length: int, *, priority: Priority, deadline: float | None
    ) -> None: ...

    def drop(self) -> None: ...


class EngineTorrent(Protocol):
    """What a reader needs of `torrentfs.torrent.Torrent` (ARCHITECTURE.md "L5 engine API")."""

    def new_want(self) -> Any: ...

    async def read(self, offset: int, length: int, *, timeout: float) -> bytes: ...

    def have_range(self, offset: int, length: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class ReadaheadConfig:
    """Bounds of every handle's readahead window (the mount's ``--readahead-*`` options)."""

    min_bytes: int = DEFAULT_READAHEAD_MIN
    max_bytes: int = DEFAULT_READAHEAD_MAX
    seconds: float = DEFAULT_READAHEAD_SECONDS
    head_bytes: int = HEAD_BYTES
    tail_bytes: int = TAIL_BYTES

    def __post_init__(self) -> None:
        if self.min_bytes <= 0 or self.max_bytes < self.min_bytes or self.seconds <= 0:
            raise ValueError("readahead needs 0 < min <= max and seconds > 0")


class ReadaheadWindow:
    """The read pattern of one handle -> the byte range worth fetching next (pure, no I/O)."""

    def __init__(self, config: ReadaheadConfig, file_length: int) -> None:
        self.config = config
        self.file_length = file_length
        self.front = 0
        """End of the furthest byte read in the current sequential run."""
        self.streak = 0
        """Bytes read sequentially since the last seek."""
        self.size = config.min_bytes
        self.reads = 0

    def on_read(self, offset: int, size: int, rate: float) -> tuple[int, int]:
        """Record a read; returns the wanted window ``(start, end)`` in file offsets."""
        cfg = self.config
        end = min(self.file_length, offset + size)
        # The kernel issues readahead of one sequential stream out of order and in parallel:
        # a read a little behind the front, or anywhere inside the current window, continues
        # the run; anything else is a seek.
        behind = max(cfg.min_bytes, self.size)
        in_run = self.reads > 0 and self.front - behind <= offset <= self.front + self.size
        if not in_run and not (self.reads == 0 and offset == 0):
            self.streak = 0
            self.front = end
        else:
            if end > self.front:
                self.streak += end - self.front
                self.front = end
        self.reads += 1
        by_rate = rate * cfg.seconds
        grown = 2 * self.streak
        self.size = int(
            max(cfg.min_bytes, min(cfg.max_bytes, grown, max(by_rate, 4 * cfg.min_bytes)))
        )
        start = self.front
        return start, min(self.file_length, start + self.size)


class Reader:
    """One open handle on one file of a torrent. Not shared between handles.

    ``file_offset``/``file_length`` place the file in the torrent's concatenated data.
    """

    def __init__(
        self,
        torrent: EngineTorrent,
        file_offset: int,
        file_length: int,
        *,
        name: str,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        readahead: ReadaheadConfig | None = None,
        rate: Callable[[], float] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.torrent = torrent
        self.file_offset = file_offset
        self.file_length = file_length
        self.name = name
        self.read_timeout = read_timeout
        self.config = readahead if readahead is not None else ReadaheadConfig()
        self.window = ReadaheadWindow(self.config, file_length)
        self._rate = rate if rate is not None else (lambda: torrent_rate(torrent, clock()))
        self._clock = clock
        self._window_want: EngineWant | None = None
        self._head_want: EngineWant | None = None
        self._tail_want: EngineWant | None = None
        self.closed = False
        self._failed: tuple[int, int, float] | None = None
        """(start, end, when) of the last read that timed out (see `read`)."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Want the head and the tail of the file now (called on open)."""
        if self.closed or self.file_length == 0:
            return
        now = self._clock()
        head = min(self.file_length, self.config.head_bytes)
        if not self.torrent.have_range(self.file_offset, head):
            self._head_want = self.torrent.new_want()
            self._head_want.update(
                self.file_offset, head, priority=Priority.HIGH, deadline=now + 1.0
            )
        tail = min(self.config.tail_bytes, self.file_length - head)
        if tail > 0:
            tail_start = self.file_offset + self.file_length - tail
            if not self.torrent.have_range(tail_start, tail):
                self._tail_want = self.torrent.new_want()
                self._tail_want.update(tail_start, tail, priority=Priority.HIGH, deadline=now + 2.0)

    def release(self) -> None:
        """Drop every want of this handle (idempotent). Later reads raise `ReaderClosed`."""
        self.closed = True
        for want in (self._window_want, self._head_want, self._tail_want):
            if want is not None:
                want.drop()
        self._window_want = self._head_want = self._tail_want = None

    # ------------------------------------------------------------------ reading

    async def read(self, offset: int, size: int) -> bytes:
        """Exactly the verified bytes ``[offset, offset+size)`` of the file (short only at EOF).

        Raises `ReadTimeout` (logged with file, offset and swarm state), `TorrentRemoved`,
        `StorageError`, or `ReaderClosed`.
        """
        if self.closed:
            raise ReaderClosed(f"{self.name}: handle released")
        if offset < 0 or size < 0:
            raise StorageError(f"{self.name}: negative read", errno=22)
        size = max(0, min(size, self.file_length - offset))
        if size == 0:
            return b""
        failed = self._failed
        # The kernel retries a failed readahead page by page at once: answering those from the
        # failure just seen keeps one stalled read from costing twice the timeout.
        if (
            failed is not None
            and failed[0] < offset + size
            and offset < failed[1]
            and self._clock() - failed[2] < RETRY_FAST_FAIL
        ):
            raise ReadTimeout(f"{self.name}: offset {offset}: still unavailable")
        self._advance_window(offset, size)
        try:
            data = await self.torrent.read(
                self.file_offset + offset, size, timeout=self.read_timeout
            )
        except ReadTimeout as exc:
            self._failed = (offset, offset + size, self._clock())
            log.warning(
                "read of %s at offset %d (%d bytes) failed after %g s: %s",
                self.name,
                offset,
                size,
                self.read_timeout,
                exc,
            )
            raise
        if len(data) != size:
            raise StorageError(
                f"{self.name}: engine returned {len(data)} bytes for a {size}-byte read", errno=5
            )
        return data

    def _advance_window(self, offset: int, size: int) -> None:
        start, end = self.window.on_read(offset, size, self._rate())
        if self.closed:
            return
        if end <= start:
            if self._window_want is not None:
                self._window_want.drop()
                self._window_want = None
            return
        if self._window_want is None:
            self._window_want = self.torrent.new_want()
        now = self._clock()
        # Nearer bytes matter sooner: the deadline is when the player gets there at the rate
        # the data arrives (at least a second, so the picker does not treat it as NOW).
        self._window_want.update(
            self.file_offset + start,
            end - start,
            priority=Priority.HIGH,
            deadline=now + max(1.0, self.config.seconds / 2),
        )


def torrent_rate(torrent: object, now: float) -> float:
    """The torrent's observed download rate in bytes/s (0 if the engine does not say)."""
    meter = getattr(torrent, "download", None)
    rate = getattr(meter, "rate", None)
    if callable(rate):
        try:
            value = rate(now)
        except Exception:  # a rate is advice; never fail a read over it
            return 0.0
        return float(value) if isinstance(value, int | float) else 0.0
    return 0.0


__all__ = [
    "DEFAULT_READAHEAD_MAX",
    "DEFAULT_READAHEAD_MIN",
    "DEFAULT_READ_TIMEOUT",
    "EngineTorrent",
    "ReadaheadConfig",
    "ReadaheadWindow",
    "Reader",
    "ReaderClosed",
    "torrent_rate",
]
