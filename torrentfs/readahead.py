"""Readahead: one open file handle's read pattern → the bytes to want next (L3, pure).

Streaming at full speed needs the picker to know, well before the reader gets there, which
bytes will be read: readahead that is too small is the most common complaint about torrent
filesystems (a few hundred KB/s where a normal client does 10 MB/s). Each open handle keeps a
`ReadaheadState`; every ``read()`` reports to it and gets back a `Window`:

* ``[start, urgent_end)`` — the bytes this read is blocked on: deadline *now*;
* ``[urgent_end, end)`` — the bytes to fetch ahead, deadline `Window.ahead_deadline`.

The caller turns these into two picker wants (updating them in place), and drops both when the
handle is released.

How the window is sized:

* *sequential* reads — starting within ``slack_bytes`` of the furthest byte read so far, which
  tolerates the kernel's readahead arriving out of order (it sends several requests of up to
  1 MiB at once, and they are served concurrently: the slack must exceed the kernel readahead
  of the mount, see `torrentfs.fs.mount`) — double the ahead window, from ``min_bytes`` up to
  ``max_bytes``, and never let it fall below ``seconds_ahead`` seconds of data at the observed
  download rate (so a fast swarm is kept busy: the window is the bandwidth-delay product of the
  stream);
* a *seek* (any other read, and the first read of a handle) wants only the bytes it reads, and
  resets the window to ``min_bytes``: the old window is not wanted any more from this moment on,
  so bandwidth moves to the new position at once (the picker is never left fetching what nobody
  reads). Nothing is fetched ahead until the next read continues from there: a random reader
  (a database, ``ffprobe`` hopping through an index) gets each piece at the full speed of the
  swarm instead of queued behind megabytes of readahead nobody reads, while a stream loses
  nothing (the kernel's own readahead sends the next read at once);
* a read backwards within the slack neither grows nor moves the window;
* the wanted range of a sequential run starts ``slack_bytes`` behind the furthest read (never
  before the run's first byte), at `Window.hold`: reads the kernel sent before the furthest one
  may still be waiting for those bytes, and letting them drop out of every want for an instant
  would cancel their requests only to send them again (a stream's bandwidth wasted twice).

`head_tail` gives the ranges to fetch first when a media file is opened: players and
``ffprobe`` read the container's index at the start and often at the end (MP4 ``moov``, MKV
cues), so fetching both early makes opening fast.

Pure: the caller passes ``now`` and the download rate.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MiB", "ReadaheadPolicy", "ReadaheadState", "Window", "head_tail"]

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class ReadaheadPolicy:
    """Tunables shared by every handle (from the configuration).

    ``ahead_delay`` is how many seconds after a read its ahead bytes are due; it only orders
    ahead bytes after every handle's urgent bytes in the picker.
    """

    min_bytes: int = 4 * MiB
    max_bytes: int = 128 * MiB
    seconds_ahead: float = 10.0
    slack_bytes: int = 16 * MiB
    ahead_delay: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.min_bytes <= self.max_bytes:
            raise ValueError(
                f"need 0 < min_bytes <= max_bytes, got {self.min_bytes}, {self.max_bytes}"
            )
        if self.seconds_ahead < 0 or self.slack_bytes < 0 or self.ahead_delay < 0:
            raise ValueError("seconds_ahead, slack_bytes and ahead_delay must not be negative")


@dataclass(frozen=True, slots=True)
class Window:
    """What one handle wants after a read: ``[start, end)``, urgent up to ``urgent_end``.

    ``hold <= start <= urgent_end <= end <= file size``. ``sequential`` tells whether the read
    continued the stream (False for the first read and for a seek, which want nothing ahead:
    ``end == urgent_end``). ``[hold, end)`` is what the handle should keep wanted: ``hold`` is
    behind the read when earlier reads of the run may still be waiting (module docstring).
    """

    start: int
    end: int
    urgent_end: int
    urgent_deadline: float
    ahead_deadline: float
    sequential: bool
    hold: int

    @property
    def urgent(self) -> tuple[int, int]:
        """``(offset, length)`` of the bytes the read waits for."""
        return self.start, self.urgent_end - self.start

    @property
    def ahead(self) -> tuple[int, int]:
        """``(offset, length)`` of the bytes to fetch ahead (length 0 at end of file)."""
        return self.urgent_end, self.end - self.urgent_end


class ReadaheadState:
    """The read pattern of one open handle on a file of `file_size` bytes."""

    __slots__ = ("_front", "_run_start", "_window", "file_size", "policy")

    def __init__(self, policy: ReadaheadPolicy, file_size: int) -> None:
        if file_size < 0:
            raise ValueError(f"file size must not be negative, got {file_size}")
        self.policy = policy
        self.file_size = file_size
        self._front: int | None = None  # furthest byte read so far in this sequential run
        self._run_start = 0  # where this sequential run began (its first read)
        self._window = policy.min_bytes

    @property
    def window_bytes(self) -> int:
        """The current ahead window size (before clamping at end of file)."""
        return self._window

    def on_read(self, offset: int, size: int, now: float, download_rate: float) -> Window:
        """Record a ``read(offset, size)`` at `now`; return what to want from now on.

        `download_rate` is the torrent's current download rate in bytes/s. Reads past the end of
        the file are clamped to it.
        """
        if offset < 0 or size < 0:
            raise ValueError(f"bad read {offset}+{size}")
        policy = self.policy
        start = min(offset, self.file_size)
        read_end = min(offset + size, self.file_size)
        front = self._front
        if front is not None and abs(start - front) <= policy.slack_bytes:
            sequential = True
            if read_end > front:
                floor = int(policy.seconds_ahead * max(download_rate, 0.0))
                self._window = min(policy.max_bytes, max(2 * self._window, floor))
                front = read_end
        else:
            sequential = False
            self._window = policy.min_bytes
            self._run_start = start
            front = read_end
        self._front = front
        end = min(self.file_size, front + self._window) if sequential else read_end
        return Window(
            start=start,
            end=end,
            urgent_end=read_end,
            urgent_deadline=now,
            ahead_deadline=now + policy.ahead_delay,
            sequential=sequential,
            hold=min(start, max(self._run_start, front - policy.slack_bytes)),
        )


def head_tail(
    file_size: int,
    *,
    head: int = 2 * MiB,
    tail: int = 2 * MiB,
    fraction: float = 0.0025,
    limit: int = 32 * MiB,
) -> tuple[tuple[int, int], ...]:
    """``(start, end)`` ranges to fetch first when a media file is opened.

    Each of the head and the tail is its byte count, or `fraction` of the file when that is
    larger (a long film's MP4 ``moov`` is several MiB), but the fraction never takes it past
    `limit`. Overlapping ranges are merged; a 0-byte file gives none.
    """
    if file_size <= 0:
        return ()
    extra = min(limit, int(file_size * fraction))
    head_end = min(file_size, max(head, extra))
    tail_start = max(0, file_size - max(tail, extra))
    if tail_start <= head_end:
        return ((0, file_size),)
    return ((0, head_end), (tail_start, file_size))
