"""Drop-behind of the mount's own page cache while a file is streamed from the swarm (L6).

Why: a cold sequential read through the mount fills the kernel's page cache of the FUSE file
(``keep_cache``) with the whole file, so a 1 GiB stream takes 1 GiB of page frames the guest
has not used recently; on a VM each such frame costs a host-side fault, paid inside the copy of
every FUSE reply (``fuse_dev_write``) - the mount's CPU per GiB and its cold rate swung with it.
The engine's own data file is written behind for the same reason (`FileStore`'s ``drop_lag``).
Dropping the FUSE file's pages well behind each streaming reader recycles frames instead:
the pages ahead reuse the frames freed behind.

What it guarantees:

* **Only for handles opened on a file not yet complete.** A complete file keeps its page cache
  (re-reads at page-cache speed); so does a file once a stream ended, for every later handle.
* **Nothing ahead of a reader, nothing near it.** A range is dropped only once the handle's
  reads went `drop_lag` bytes past it (far beyond the kernel's out-of-order readahead); a seek
  starts a new run from the new offset, so a rewind never drops what is about to be re-read.
  A page dropped too early would only be read again through the mount (verified data, never
  wrong data): dropping is advice, and it fails silently.
* **Never on the trio thread, never blocking a read.** Dropping is ``posix_fadvise(DONTNEED)``
  on the mounted file (no FUSE request; the kernel skips locked pages) from a worker thread,
  which opens the file through the mount: that ``open`` is answered by the trio thread (so it
  must never be made from it), and `FsOperations.open` recognises it by the worker's thread id
  (`PageDropper.is_own`) and gives it no reader (no wants, no head or tail fetched). The queue
  is bounded: a request over `MAX_PENDING` is left out (its pages merely stay cached).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MiB = 1 << 20
DROP_SLACK = 16 * MiB
"""Beyond four kernel readaheads (its reads arrive out of order by about two), a reader like
``dd`` consumes the pages of a read well within this after it was answered."""
MAX_PENDING = 64
_PAGE = 4096


def drop_lag(kernel_readahead: int) -> int:
    """Bytes a handle's reads must be past a range before its pages are dropped."""
    return 4 * kernel_readahead + DROP_SLACK


class PageDropper:
    """One worker thread dropping ranges of mounted files from the kernel's page cache."""

    def __init__(
        self,
        mountpoint: Path,
        live: Callable[[], bool],
        *,
        lag: int,
    ) -> None:
        self.mountpoint = mountpoint
        self.live = live  # False once unmounting: the mount may not answer any more
        self.lag = lag
        self.chunk = max(_PAGE, lag // 4 - lag // 4 % _PAGE)
        """Pages are dropped in ranges at least this long (one open and one fadvise each)."""
        self.dropped = 0
        """Bytes asked to be dropped so far (for tests and logs)."""
        self._queue: queue.Queue[tuple[Behind, int, int] | None] = queue.Queue(MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._tid: int | None = None

    def is_own(self, pid: int) -> bool:
        """Whether a FUSE request came from this dropper's thread (FUSE sends the thread id)."""
        return self._tid is not None and pid == self._tid

    def follow(self, path: str) -> Behind:
        """A tracker for one handle reading ``path`` (relative to the mount point)."""
        return Behind(self, path)

    def submit(self, behind: Behind, start: int, end: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fuse-drop-behind", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((behind, start, end))
        except queue.Full:  # the worker is behind: these pages just stay cached
            log.debug("drop-behind queue full; %s [%d, %d) stays cached", behind.path, start, end)

    def close(self) -> None:
        """Stop the worker once its queue is done (never blocks the caller)."""
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                self.live = lambda: False  # it skips the rest, then idles as a daemon

    def _run(self) -> None:
        self._tid = threading.get_native_id()
        while (item := self._queue.get()) is not None:
            behind, start, end = item
            path = behind.path
            if not self.live() or behind.closed:
                # A closed handle's backlog is left: the next handle on the file (now complete,
                # say, and re-read) fills the page cache again, and a late drop would empty it.
                continue
            try:
                fd = os.open(self.mountpoint / path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if behind.closed:  # closed while this open went through the mount
                        continue
                    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
                self.dropped += end - start
            except OSError as exc:  # removed, unmounting: its pages go with it anyway
                log.debug("drop-behind of %s [%d, %d): %s", path, start, end, exc)


class Behind:
    """One handle's sequential run: which of its pages are far enough behind to drop."""

    __slots__ = ("closed", "dropper", "high", "mark", "path")

    def __init__(self, dropper: PageDropper, path: str) -> None:
        self.dropper = dropper
        self.path = path
        self.mark = -1
        """Start of the current run's pages not yet dropped (-1: no read yet)."""
        self.high = 0
        """End of the furthest read of the current run."""
        self.closed = False
        """Set when the handle is released: its drops not yet done are skipped."""

    def close(self) -> None:
        self.closed = True

    def on_read(self, offset: int, size: int) -> None:
        """A read of ``[offset, offset + size)`` was answered on this handle."""
        end = offset + size
        lag = self.dropper.lag
        if self.mark < 0 or offset < self.mark or offset > self.high + lag:
            # A new run (the first read, a rewind or a jump): nothing before it is ours to drop.
            self.mark = offset - offset % _PAGE
            self.high = end
            return
        if end > self.high:
            self.high = end
        behind = self.high - lag
        behind -= behind % _PAGE
        if behind - self.mark >= self.dropper.chunk:
            self.dropper.submit(self, self.mark, behind)
            self.mark = behind


__all__ = ["DROP_SLACK", "Behind", "PageDropper", "drop_lag"]
