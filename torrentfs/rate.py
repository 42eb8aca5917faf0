"""Transfer-rate meters (L3, pure: the clock is passed in).

A `RateMeter` answers "how many bytes per second lately" over a sliding window of one-second
buckets. It is cheap on the hot path (one addition per block) and is what the picker's request
pipelining, the choker and the readahead window are sized from.
"""

from __future__ import annotations


class RateMeter:
    """Bytes per second over the last `window` seconds (default 5), in 1-second buckets."""

    __slots__ = ("_buckets", "_current", "_current_second", "_window", "total")

    def __init__(self, window: int = 5) -> None:
        self._window = max(1, window)
        self._buckets: list[int] = [0] * self._window
        self._current_second = 0
        self._current = 0
        self.total = 0

    def add(self, nbytes: int, now: float) -> None:
        self._advance(now)
        self._buckets[self._current] += nbytes
        self.total += nbytes

    def rate(self, now: float) -> float:
        """Average bytes/s over the window; the current, partial second counts by its fraction."""
        self._advance(now)
        total = sum(self._buckets)
        partial = now - int(now)
        span = self._window - 1 + max(partial, 0.25)
        return total / span

    def _advance(self, now: float) -> None:
        second = int(now)
        gap = second - self._current_second
        if gap <= 0:
            return
        if gap >= self._window:
            self._buckets = [0] * self._window
            self._current = 0
        else:
            for _ in range(gap):
                self._current = (self._current + 1) % self._window
                self._buckets[self._current] = 0
        self._current_second = second
