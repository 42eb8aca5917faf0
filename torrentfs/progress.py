"""A one-line terminal progress bar for long commands (L6: `make`, later `download`).

Guarantees: it draws only when its stream is a terminal (so pipes, logs and tests see no
control characters), redraws at most every `min_interval` seconds (so a hot loop may call
`update` as often as it likes), never writes a newline of its own until `close`, and `close`
erases the line so the command's real output starts clean. Time comes from an injectable clock.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: `torrentfs make` should not import typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import TextIO

__all__ = ["ProgressBar", "format_duration", "format_size"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def show(text: str) -> str:
    """Untrusted text made safe for a terminal: C0 and C1 controls as ``\\xNN`` escapes (no
    escape sequence, no carriage return rewriting the line)."""
    return text.translate(_CONTROL_ESCAPES)


def format_size(n: float) -> str:
    """Binary units, three significant digits: ``512 B``, ``1.50 MiB``, ``24.0 GiB``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in _UNITS[1:]:
        n /= 1024
        if n < 1024 or unit == _UNITS[-1]:
            break
    if n >= 100:
        return f"{n:.0f} {unit}"
    if n >= 10:
        return f"{n:.1f} {unit}"
    return f"{n:.2f} {unit}"


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """``label [#######.......]  45%  1.20 GiB/2.66 GiB  310 MiB/s  ETA 0:05``.

    `update(done)` takes the absolute amount done (bytes); `close()` clears the line. Usable as
    a context manager. Disabled (a no-op) when `stream` is not a TTY unless `enabled` forces it.
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self._stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._min_interval = min_interval
        self._clock = clock
        self._start = clock()
        self._last_draw: float | None = None
        self._drawn = False
        self.done = 0

    def update(self, done: int) -> None:
        self.done = min(max(0, done), self.total) if self.total else max(0, done)
        if not self.enabled:
            return
        now = self._clock()
        finished = bool(self.total) and self.done >= self.total
        if (
            self._last_draw is not None
            and not finished
            and now - self._last_draw < self._min_interval
        ):
            return
        self._last_draw = now
        self._draw(now)

    def render(self, now: float, width: int) -> str:
        """The line for the current state, at most `width` characters."""
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / self.total if self.total else 0.0
        tail = f" {frac * 100:3.0f}%  {format_size(self.done)}/{format_size(self.total)}"
        if self.done:
            tail += f"  {format_size(rate)}/s"
            if self.total and self.done < self.total:
                tail += f"  ETA {format_duration((self.total - self.done) / rate)}"
        head = f"{self.label} " if self.label else ""
        bar_width = width - len(head) - len(tail) - 2
        if bar_width >= 10:
            filled = int(bar_width * frac)
            return f"{head}[{'#' * filled}{'.' * (bar_width - filled)}]{tail}"
        # Narrow terminal: the numbers matter more than the bar or the whole label.
        tail = tail.lstrip()
        room = width - len(tail) - 1
        if room >= 8 and head:
            label = head.rstrip()
            if len(label) > room:
                label = label[: room - 1] + "…"
            return f"{label} {tail}"
        return tail[:width]

    def _draw(self, now: float) -> None:
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):  # not a real terminal (tests), or closed
            columns = 80
        width = max(20, columns - 1)
        self._stream.write("\r" + self.render(now, width) + "\x1b[K")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (if one was drawn); further updates draw nothing."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False
        self.enabled = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
