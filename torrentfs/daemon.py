"""Running as a service (L6): daemonising, readiness, and the systemd notification protocol.

What this module guarantees, and why:

* **``mount`` returns when the files are there.** `daemonize` forks the way FUSE filesystems do
  (``fuse_daemonize``: fork, ``setsid``, ``chdir /``, stdio to ``/dev/null`` or a log file) and
  keeps the parent waiting on a pipe. The child reports through `Readiness`: ``ok`` once the
  mount is live and the metainfo folder's first pass is in the tree, or ``fail STATUS reason``;
  the parent then exits 0, or prints the reason and exits with the child's status. A child that
  dies without a word makes the parent fail too. It must run before trio or any thread starts:
  ``fork`` copies only the calling thread.
* **systemd ``Type=notify``** (sd_notify(3)): `sd_notify` sends one datagram to
  ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace), in pure Python.
  `Readiness` sends ``READY=1`` only after the mount is live, ``STATUS=`` lines while running
  (`report_status`: torrents, peers, rates, progress from ``Session.statistics()``), and
  ``STOPPING=1`` when shutdown begins. Without ``$NOTIFY_SOCKET`` these are no-ops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import trio

if TYPE_CHECKING:
    from torrentfs.session import Session
    from torrentfs.torrent import TorrentStats

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0
"""Seconds between two ``STATUS=`` notifications."""

MAX_MESSAGE = 4096
EXIT_DIED = 1


def sd_notify(state: str, *, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (``KEY=value`` lines) to ``$NOTIFY_SOCKET``; False if there is none.

    Failures are logged, never raised: a service must not die because the manager went away.
    """
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        address = "\0" + path[1:]
    elif path.startswith("/"):
        address = path
    else:
        return False  # unset, or a vsock address we do not speak
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            sock.connect(address)
            sock.sendall(state.encode("utf-8", "replace"))
    except OSError as exc:
        log.debug("sd_notify(%r) failed: %s", state, exc)
        return False
    return True


class Readiness:
    """The mount's way to say "live", "failed" and "stopping" to whoever started it.

    ``fd`` is the write end of the daemon pipe (None in the foreground); systemd is told too.
    Each of `ready` and `failed` is sent at most once, whichever comes first.
    """

    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd
        self.settled = False
        self.stopping_sent = False

    def _write(self, line: str) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode("utf-8", "replace")[:MAX_MESSAGE])
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None

    def ready(self, status: str = "mounted") -> None:
        if self.settled:
            return
        self.settled = True
        sd_notify(f"READY=1\nSTATUS={status}")
        self._write("ok\n")

    def failed(self, code: int, reason: str) -> None:
        if self.settled:
            return
        self.settled = True
        one_line = " ".join(reason.split()) or "failed"
        sd_notify(f"STATUS=failed: {one_line}")
        self._write(f"fail {code} {one_line}\n")

    def status(self, text: str) -> None:
        sd_notify(f"STATUS={text}")

    def stopping(self) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            sd_notify("STOPPING=1\nSTATUS=stopping")


def read_verdict(fd: int) -> tuple[int, str]:
    """The parent's side of the pipe: ``(exit status, message)`` once the child has spoken."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, MAX_MESSAGE)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if not chunk:
            break
        chunks.append(chunk)
        if b"\n" in chunk:
            break
    os.close(fd)
    line = b"".join(chunks).decode("utf-8", "replace").strip()
    if line == "ok":
        return 0, ""
    if line.startswith("fail "):
        code_text, _, reason = line[5:].partition(" ")
        try:
            code = int(code_text)
        except ValueError:
            code = EXIT_DIED
        return (code or EXIT_DIED), reason
    return EXIT_DIED, "the mount process ended before the mount was ready"


def daemonize(*, log_file: Path | None, prog: str = "torrentfs") -> Readiness:
    """Fork into the background; returns in the child only (the parent exits with the verdict).

    Call before starting trio or any thread. Relative paths must already be absolute: the
    child changes to ``/`` so it never keeps a directory busy.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        code, reason = read_verdict(read_fd)
        if code != 0:
            print(f"{prog}: {reason}", file=sys.stderr)
            sys.stderr.flush()
        _exit(code)
    os.close(read_fd)
    os.setsid()
    os.chdir("/")
    _redirect_stdio(log_file)
    return Readiness(write_fd)


def _exit(code: int) -> NoReturn:
    os._exit(code)


def _redirect_stdio(log_file: Path | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    out = null
    if log_file is not None:
        try:
            out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        except OSError:
            out = null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)


def status_line(stats: Sequence[TorrentStats]) -> str:
    """One line for ``systemctl status``: torrents, peers, rates, verified bytes."""
    peers = sum(s.peers for s in stats)
    down = sum(s.download_rate for s in stats)
    up = sum(s.upload_rate for s in stats)
    have = sum(s.verified_bytes for s in stats)
    total = sum(s.total_size for s in stats)
    done = sum(1 for s in stats if s.total_size and s.verified_bytes >= s.total_size)
    return (
        f"{len(stats)} torrents ({done} complete), {peers} peers, "
        f"down {_rate(down)}, up {_rate(up)}, {_size(have)} of {_size(total)} verified"
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rate(n: float) -> str:
    return f"{_size(n)}/s"


async def report_status(
    session: Session, readiness: Readiness, interval: float = STATUS_INTERVAL
) -> None:
    """Send a ``STATUS=`` line every ``interval`` seconds until cancelled (systemd only)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    while True:
        await trio.sleep(interval)
        if readiness.stopping_sent:
            return
        readiness.status(status_line(session.statistics()))


__all__ = [
    "STATUS_INTERVAL",
    "Readiness",
    "daemonize",
    "read_verdict",
    "report_status",
    "sd_notify",
    "status_line",
]
