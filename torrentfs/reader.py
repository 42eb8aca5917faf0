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
* **The readahead window** is `torrentfs.readahead.ReadaheadState`'s: it grows on sequential
  reads, is sized from the observed download rate (seconds of data ahead, within the policy's
  bounds), tolerates the kernel's out-of-order readahead, and jumps with a seek. The handle's
  ahead want is updated in place, so a seek stops the old range being requested at once.
* **Small sequential reads cost one engine read per MiB, not one each.** With ``--direct-io``
  the kernel hands over the app's own reads (``sha256sum`` reads 32 KiB at a time), each one a
  round trip that, from the disk, also costs a worker-thread hop. A read that continues the
  handle's run fetches up to `SEQUENTIAL_CHUNK` bytes at once *if all of them are already
  verified* (never waiting for more than was asked) and answers the next reads from that copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio

from torrentfs.errors import ReadTimeout, StorageError, TorrentfsError
from torrentfs.picker import Priority
from torrentfs.readahead import MiB, ReadaheadPolicy, ReadaheadState, head_tail

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 60.0
RETRY_FAST_FAIL = 1.0
"""Seconds after a timed-out read during which a read of the same bytes fails at once."""


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

    def open_handle(self) -> None: ...

    def close_handle(self) -> None: ...


SEQUENTIAL_CHUNK = 1 << 20
"""Bytes a handle fetches at once for a small sequential read, if all of them are verified."""


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
        readahead: ReadaheadPolicy | None = None,
        rate: Callable[[], float] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.torrent = torrent
        self.file_offset = file_offset
        self.file_length = file_length
        self.name = name
        self.read_timeout = read_timeout
        self.policy = readahead if readahead is not None else ReadaheadPolicy()
        self.window = ReadaheadState(self.policy, file_length)
        self._rate = rate if rate is not None else (lambda: torrent_rate(torrent, clock()))
        self._clock = clock
        self._window_want: EngineWant | None = None
        self._edge_wants: list[EngineWant] = []
        self.closed = False
        self._counted = False
        """Whether this handle is counted in the torrent's open handles (`start`)."""
        self._failed: tuple[int, int, float] | None = None
        """(start, end, when) of the last read that timed out (see `read`)."""
        self._next = -1
        """Where the last read ended: a read starting there continues a sequential run."""
        self._chunk = b""
        self._chunk_at = 0
        """Verified bytes ``[_chunk_at, _chunk_at + len(_chunk))`` of the file fetched past a
        small sequential read (`SEQUENTIAL_CHUNK`), serving the next reads without the engine."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Want the head and the tail of the file now (called on open; `head_tail`), and keep
        the torrent interested in its peers until `release` (`Torrent.open_handle`): a read
        after a pause then costs one request, not an unchoke first."""
        if self.closed or self._counted:
            return
        self._counted = True
        self.torrent.open_handle()
        now = self._clock()
        for i, (start, end) in enumerate(head_tail(self.file_length)):
            if self.torrent.have_range(self.file_offset + start, end - start):
                continue
            want = self.torrent.new_want()
            want.update(
                self.file_offset + start,
                end - start,
                priority=Priority.HIGH,
                deadline=now + 1.0 + i,
            )
            self._edge_wants.append(want)

    def release(self) -> None:
        """Drop every want of this handle (idempotent). Later reads raise `ReaderClosed`."""
        self.closed = True
        if self._counted:
            self._counted = False
            self.torrent.close_handle()
        for want in [self._window_want, *self._edge_wants]:
            if want is not None:
                want.drop()
        self._window_want = None
        self._edge_wants = []
        self._chunk = b""

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
        sequential, self._next = offset == self._next, offset + size
        at = offset - self._chunk_at
        if sequential and at >= 0 and at + size <= len(self._chunk):
            return self._chunk[at : at + size]
        fetch = size
        if sequential and size < SEQUENTIAL_CHUNK:
            # A small sequential read (direct I/O hands us the app's own 32 KiB reads; the
            # kernel's readahead is not there to batch them): take up to a chunk that is
            # already verified in one engine read, and answer the next reads from it.
            more = min(SEQUENTIAL_CHUNK, self.file_length - offset)
            if more > size and self.torrent.have_range(self.file_offset + offset, more):
                fetch = more
        try:
            data = await self.torrent.read(
                self.file_offset + offset, fetch, timeout=self.read_timeout
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
        if len(data) != fetch:
            raise StorageError(
                f"{self.name}: engine returned {len(data)} bytes for a {fetch}-byte read", errno=5
            )
        if fetch == size:
            return data
        self._chunk, self._chunk_at = bytes(data), offset
        return self._chunk[:size]

    def _advance_window(self, offset: int, size: int) -> None:
        window = self.window.on_read(offset, size, self._clock(), self._rate())
        if self.closed:
            return
        # The bytes this read waits for are wanted by `Torrent.read` itself (NOW); this
        # handle's one standing want is the window, moved in place (a seek drops the old range
        # at once). It starts at `Window.hold`, not after this read: moving it past bytes that
        # this or an earlier read of the run has yet to get would cancel their requests
        # (nobody wants them for an instant) only to ask for them again.
        if window.ahead[1] <= 0:
            if self._window_want is not None:
                self._window_want.drop()
                self._window_want = None
            return
        if self._window_want is None:
            self._window_want = self.torrent.new_want()
        self._window_want.update(
            self.file_offset + window.hold,
            window.end - window.hold,
            priority=Priority.HIGH,
            deadline=window.ahead_deadline,
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
    "DEFAULT_READ_TIMEOUT",
    "EngineTorrent",
    "MiB",
    "Reader",
    "ReaderClosed",
    "torrent_rate",
]
