"""Mounting and unmounting (L6): pyfuse3's session, its options, and stale-mount recovery.

Guarantees, and why:

* The mount is always read-only with ``fsname=torrentfs,subtype=torrentfs`` (it shows in
  ``mount``/``df`` as ``torrentfs`` of type ``fuse.torrentfs``); ``default_permissions`` lets the
  kernel check modes; ``allow_other`` only when asked (it needs ``user_allow_other`` for users).
* **A stale mount point** left by a crashed process (``stat`` fails with ``ENOTCONN``) is
  detached at start (``fusermount3 -uz``, else ``umount -l``) instead of failing forever.
* **Large FUSE reads.** The kernel splits page-cache reads of a FUSE file into requests no
  larger than the mount's readahead (128 KiB by default; libfuse lets requests grow to 1 MiB),
  and keeps only one or two of them in flight. Each request pays a fixed cost in Python, so a
  cold sequential read was bound by round trips, not by the swarm. `Mount.mount` therefore
  raises the readahead of the mount's own backing device (``/sys/class/bdi/MAJ:MIN/
  read_ahead_kb``, found through ``/proc/self/mountinfo``, never by touching the mount point)
  to ``kernel_readahead`` bytes: requests of 1 MiB, several in flight. It needs root; otherwise
  one line says so and reads stay at 128 KiB. Small random reads are not enlarged by it (the
  kernel reads those as asked), and it only sets how the kernel asks: what is downloaded ahead
  is still each handle's readahead window.
* **Unmount always succeeds:** `Mount.terminate` ends the FUSE loop, cancelling it after a short
  grace if a handler does not end by itself, and `Mount.unmount` detaches lazily (libfuse's
  ``fusermount3 -uz`` / ``umount2(MNT_DETACH)``), so blocked readers can never keep the process
  alive. An unmount from outside (``fusermount3 -u``) ends `Mount.serve` normally.
* **A lazy unmount from outside is noticed.** The kernel refuses a plain ``fusermount3 -u``
  with ``EBUSY`` while a file is open (a reader blocked on a silent swarm holds one), and after
  ``fusermount3 -uz`` it keeps the FUSE connection alive until the last file is closed, so the
  FUSE loop never learns of it. `wait_detached` watches the mount table instead (``POLLPRI`` on
  ``/proc/self/mountinfo``, which the kernel raises on every mount or unmount, with a slow poll
  as a fallback) and returns once the mount point is gone; the app then shuts down.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pyfuse3
import trio

from torrentfs.errors import TorrentfsError
from torrentfs.fs.operations import FsOperations

log = logging.getLogger(__name__)

FIXED_OPTIONS = frozenset({"fsname=torrentfs", "subtype=torrentfs", "ro"})
DEFAULT_KERNEL_READAHEAD = 8 << 20
"""Bytes of kernel readahead asked for the mount (see the module docstring)."""
TERMINATE_GRACE = 2.0
"""Seconds handlers get to finish after `Mount.terminate` before the loop is cancelled."""
DETACH_POLL = 2.0
"""`wait_detached` re-reads the mount table at least this often (if ``POLLPRI`` never came)."""


class MountError(TorrentfsError):
    """The mount point cannot be used (missing, not a directory, stale beyond repair, busy)."""


def fuse_options(
    *, allow_other: bool = False, default_permissions: bool = True, extra: Iterable[str] = ()
) -> set[str]:
    """The option set for ``pyfuse3.init``: fixed name/type and ``ro``, plus what was asked.

    User-given ``fsname``/``subtype`` and write options are ignored (with a warning): the mount
    is torrentfs and read-only by construction.
    """
    options = set(FIXED_OPTIONS)
    if default_permissions:
        options.add("default_permissions")
    if allow_other:
        options.add("allow_other")
    for raw in extra:
        opt = raw.strip()
        if not opt:
            continue
        key = opt.split("=", 1)[0]
        if key in ("fsname", "subtype", "rw"):
            log.warning("mount option %s ignored: torrentfs is always read-only and named", opt)
            continue
        options.add(opt)
    return options


def _mountinfo_fields(mountpoint: Path) -> list[str] | None:
    """The last ``/proc/self/mountinfo`` line mounted at ``mountpoint``, split; None if none."""
    target = os.path.abspath(mountpoint)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    found = fields
    except OSError:
        return None
    return found


def is_mounted(mountpoint: Path) -> bool:
    """Whether ``mountpoint`` is a mount point in this mount namespace (/proc/self/mountinfo).

    Never touches the path itself: a ``stat`` of our own mount point after the FUSE loop ended
    would wait forever for an answer. Pass an absolute path with symlinks already resolved.
    """
    return _mountinfo_fields(mountpoint) is not None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def set_kernel_readahead(
    mountpoint: Path, size: int, *, sysfs: Path = Path("/sys/class/bdi")
) -> int | None:
    """Set the readahead of the device mounted at ``mountpoint`` to ``size`` bytes.

    Returns the readahead now in force in bytes, or None when it cannot be set (not root, no
    sysfs, not mounted); never raises. Reads only ``/proc/self/mountinfo`` and sysfs, so it is
    safe to call from the thread that serves the mount.
    """
    fields = _mountinfo_fields(mountpoint)
    if fields is None:
        return None
    path = sysfs / fields[2] / "read_ahead_kb"  # fields[2] is the device, "MAJ:MIN"
    try:
        path.write_text(f"{max(4, size // 1024)}\n")
        return int(path.read_text().strip()) * 1024
    except (OSError, ValueError) as exc:
        log.debug("cannot set %s: %s", path, exc)
        return None


def lazy_unmount(mountpoint: Path) -> bool:
    """Detach a mount (``fusermount3 -uz``, else ``umount -l``); True if it is gone."""
    commands = []
    for tool, args in (("fusermount3", ["-u", "-z", "-q"]), ("umount", ["-l"])):
        path = shutil.which(tool)
        if path is not None:
            commands.append([path, *args, str(mountpoint)])
    for cmd in commands:
        try:
            subprocess.run(cmd, check=False, timeout=10, capture_output=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("%s failed: %s", cmd[0], exc)
            continue
        if not is_mounted(mountpoint):
            return True
    return not is_mounted(mountpoint)


def check_mountpoint(mountpoint: Path) -> None:
    """Make sure ``mountpoint`` is a usable directory, recovering a stale FUSE mount first."""
    try:
        st = os.stat(mountpoint)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountError(f"{mountpoint}: {exc.strerror}") from None
        log.warning("%s: stale mount (transport endpoint not connected); detaching it", mountpoint)
        if not lazy_unmount(mountpoint):
            raise MountError(f"{mountpoint}: stale mount could not be detached") from None
        try:
            st = os.stat(mountpoint)
        except OSError as exc2:
            raise MountError(f"{mountpoint}: {exc2.strerror}") from None
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{mountpoint}: not a directory")


class Mount:
    """One pyfuse3 mount of `FsOperations` at ``mountpoint`` (pyfuse3 allows one per process)."""

    def __init__(
        self,
        ops: FsOperations,
        mountpoint: Path,
        options: set[str],
        *,
        kernel_readahead: int = DEFAULT_KERNEL_READAHEAD,
    ) -> None:
        self.ops = ops
        self.kernel_readahead = kernel_readahead
        # Resolved now, while nothing is mounted there: later checks must not touch the path.
        self.mountpoint = Path(os.path.realpath(mountpoint))
        self.options = options
        self.mounted = False
        self.terminated = False
        self._scope: trio.CancelScope | None = None

    def mount(self) -> None:
        """Attach to the kernel (after stale-mount recovery). Raises `MountError`."""
        check_mountpoint(self.mountpoint)
        try:
            pyfuse3.init(self.ops, str(self.mountpoint), self.options)
        except RuntimeError as exc:
            raise MountError(f"{self.mountpoint}: cannot mount ({exc})") from None
        self.mounted = True
        self.ops.mounted = True
        log.info("mounted at %s", self.mountpoint)

    async def serve(self) -> None:
        """Run the FUSE loop until `terminate` or an unmount from outside."""
        with trio.CancelScope() as scope:
            self._scope = scope
            if self.terminated:
                return
            async with trio.open_nursery() as nursery:
                if self.kernel_readahead > 0:
                    nursery.start_soon(self._raise_readahead)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            log.warning("FUSE loop cancelled after %g s grace", TERMINATE_GRACE)
        elif not self.terminated:
            log.info("%s was unmounted from outside", self.mountpoint)

    async def _raise_readahead(self) -> None:
        # The kernel's handling of the FUSE INIT reply lowers the readahead to what libfuse
        # answered (the kernel's own 128 KiB): raising it is only lasting after that.
        with trio.move_on_after(30):
            await self.ops.wait_initialized()
            got = set_kernel_readahead(self.mountpoint, self.kernel_readahead)
            if got is None:
                log.info(
                    "kernel readahead left at its default (raising it needs root): "
                    "FUSE reads stay small, cold streaming is slower"
                )
            else:
                log.debug("kernel readahead of the mount: %d KiB", got // 1024)

    def terminate(self) -> None:
        """End the FUSE loop: at once for idle workers, after a short grace for handlers."""
        if self.terminated or not self.mounted:
            self.terminated = True
            return
        self.terminated = True
        try:
            pyfuse3.terminate()
        except Exception:  # already ending; the cancel below still bounds it
            log.debug("pyfuse3.terminate failed", exc_info=True)
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + TERMINATE_GRACE)

    def unmount(self) -> None:
        """Detach from the kernel (lazily: never blocked by open files). Idempotent."""
        if not self.mounted:
            return
        self.mounted = False
        self.ops.mounted = False
        still = is_mounted(self.mountpoint)
        try:
            pyfuse3.close(unmount=still)
        except Exception:
            log.exception("pyfuse3.close failed")
        if is_mounted(self.mountpoint) and still:
            lazy_unmount(self.mountpoint)
        reads = self.ops.reads
        log.info(
            "unmounted %s (%d reads served, %d KiB each on average)",
            self.mountpoint,
            reads,
            self.ops.read_bytes // max(1, reads) // 1024,
        )


async def wait_detached(mountpoint: Path, *, fallback: float = DETACH_POLL) -> None:
    """Return once ``mountpoint`` is no longer in this namespace's mount table.

    Sleeps on ``POLLPRI`` of ``/proc/self/mountinfo`` (raised by the kernel on every mount
    change; trio waits on an epoll set holding it) and re-reads the table on each change, and
    every ``fallback`` seconds in case the event never comes. Never touches the path itself.
    """
    watch: select.epoll | None = None
    table: int | None = None
    try:
        table = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        watch = select.epoll()
        watch.register(table, select.EPOLLPRI | select.EPOLLERR)
    except OSError as exc:
        log.debug("cannot watch the mount table (%s); polling it", exc)
    try:
        while is_mounted(mountpoint):
            with trio.move_on_after(fallback):
                if watch is None:
                    await trio.sleep_forever()
                await trio.lowlevel.wait_readable(watch.fileno())
                watch.poll(0)  # consume the event (it may already be consumed: harmless)
            await trio.sleep(0.05)  # a storm of mount changes costs at most 20 reads a second
    finally:
        if watch is not None:
            watch.close()
        if table is not None:
            os.close(table)


__all__ = [
    "DEFAULT_KERNEL_READAHEAD",
    "DETACH_POLL",
    "FIXED_OPTIONS",
    "Mount",
    "MountError",
    "check_mountpoint",
    "fuse_options",
    "is_mounted",
    "lazy_unmount",
    "set_kernel_readahead",
    "wait_detached",
]
