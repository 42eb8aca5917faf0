"""Piece storage in ordinary files under a download directory (L4).

Layout: a multi-file torrent's file ``a/b.mkv`` lives at ``root/<name>/a/b.mkv``; a single-file
torrent's data at ``root/<name>`` (BEP 3 ``name`` and ``path``, already sanitised by
`torrentfs.metainfo`). BEP 47 pad files are never created, written or read from disk: they
read as zeros. Zero-length files are created (empty) on the first write so the tree on disk
matches the torrent.

Guarantees:

* **Never a path outside root.** Paths are walked component by component from an open file
  descriptor of ``root`` (``openat``-style, ``dir_fd``): every directory is opened with
  ``O_DIRECTORY | O_NOFOLLOW`` and the data file with ``O_NOFOLLOW`` after an ``lstat`` proved it
  a regular file, so a symlink planted anywhere inside the download dir cannot redirect a
  read or a write (`UnsafePath`). Components are re-checked here (no ``..``, ``/`` or NUL).
* **Sparse files.** A file is sized to its final length with ``ftruncate`` when first opened
  for writing; zeros are never written, so only downloaded pieces use disk space.
* **Bounded descriptors.** File handles are opened lazily and kept in an LRU: at most
  ``max_open_files`` (`MAX_OPEN_FILES_PER_TORRENT`) per store, and at most `FdCache.max_open`
  (`MAX_OPEN_FILES`) across every store sharing one `FdCache` -- by default the whole process,
  so a thousand torrents being read hold no more descriptors than a few. The least recently used
  idle handle is closed first, whichever torrent it belongs to; a handle in use by a worker
  thread is never closed under it (so the bound may be passed by at most the handles in use at
  that moment, one per worker thread and file slice).
* **Lean hot path.** All file slices of one piece (or one read range) are handled in a single
  ``trio.to_thread.run_sync`` hop with ``pread``/``pwrite`` (one call per file slice, straight
  from the caller's buffer); `write_verified` hashes the piece in that same hop.
* **Write-behind (optional).** With ``drop_written=True`` (``torrentfs download``) every write
  is handed to the kernel's writeback at once (``posix_fadvise(DONTNEED)`` on a dirty range
  starts writeback of it), and its pages are dropped from the page cache once about
  `DROP_LAG` bytes later were written (by then they are clean; a page still under writeback is
  simply kept). A download then never fills the page cache with data nobody is about to read
  (it would push out the user's working set), and the kernel recycles the same, recently used
  page frames for the next pieces instead of first-touching fresh memory for each one: on this
  project's VMs that first touch made ``pwrite`` cost 2 s of CPU per GiB, against 0.4 s
  recycled. Dropping only clean pages loses nothing: the data is on disk and reads fetch it
  again. Off for the mount, whose readers want the data just written.
* **Honest durability.** ``sync()`` fdatasyncs every file opened or written since the last
  sync (data found on disk may still be only in the page cache of a crashed process); a dirty
  handle evicted from the LRU is fdatasync'd before it is closed, so ``sync()`` never misses a
  write. A failed fdatasync is *sticky*: Linux reports a writeback error only once and may have
  dropped the data, so every later ``sync()`` fails too and nothing is ever recorded verified
  on top of lost data.
* **Typed errors.** Every `OSError` becomes a `StorageError` carrying its ``errno``
  (``ENOSPC`` for a full disk).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import itertools
import os
import stat
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import trio

from torrentfs.errors import StorageError
from torrentfs.storage.base import Presence, StoreClosed, check_piece_length

if TYPE_CHECKING:
    from torrentfs.metainfo import FileEntry, Metainfo

__all__ = [
    "MAX_OPEN_FILES",
    "MAX_OPEN_FILES_PER_TORRENT",
    "FdCache",
    "FileStore",
    "UnsafePath",
    "open_data_file",
    "stat_data_file",
    "storage_components",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FILE_MODE = 0o644
DROP_LAG = 32 * 1024 * 1024
"""With ``drop_written``: bytes written after a range before its (by then clean) pages are
dropped from the page cache. Writeback of 32 MiB takes well under a second on any disk that
keeps up with a download; a range still dirty or under writeback is just left cached."""
_DIR_MODE = 0o755

MAX_OPEN_FILES_PER_TORRENT = 64
MAX_OPEN_FILES = 256
"""Data files open at once in the whole process (`FdCache`): well under the usual soft
``RLIMIT_NOFILE`` of 1024 next to the sockets (200 peers, 16 dials, 64 handshakes, DHT, FUSE)."""


class UnsafePath(StorageError):
    """A data path would leave the download dir (symlink, bad component, non-regular file)."""


def _check_component(component: str) -> None:
    if component in ("", ".", "..") or "/" in component or "\0" in component:
        raise UnsafePath(f"unsafe path component {component!r}", errno=errno.EINVAL)


def storage_components(metainfo: Metainfo, entry: FileEntry) -> tuple[str, ...]:
    """Path components of `entry` relative to the download dir, each checked safe.

    ``(name, *path)`` for a multi-file torrent, ``path`` (which is ``(name,)``) otherwise.
    """
    components = (metainfo.name, *entry.path) if metainfo.multi_file else tuple(entry.path)
    if not components:
        raise UnsafePath(f"file {entry.index} has an empty path", errno=errno.EINVAL)
    for component in components:
        _check_component(component)
    return components


def _os_error(exc: OSError, what: str) -> StorageError:
    return StorageError(f"{what}: {exc.strerror or exc}", errno=exc.errno)


def _open_parent(root: Path, components: Sequence[str], *, create: bool) -> int:
    """Open the directory that holds ``components[-1]``, never following a symlink below root.

    The download dir itself (``root``) is the user's choice and may be a symlink.
    """
    if create:
        os.makedirs(root, mode=_DIR_MODE, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for component in components[:-1]:
            if create:
                try:
                    os.mkdir(component, _DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(component, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    # O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR: say ELOOP for
                    # links, so a reader sees "too many levels of symbolic links".
                    code = exc.errno
                    with contextlib.suppress(OSError):
                        if stat.S_ISLNK(
                            os.stat(component, dir_fd=fd, follow_symlinks=False).st_mode
                        ):
                            code = errno.ELOOP
                    raise UnsafePath(
                        f"{component!r} under {root} is not a plain directory (symlink?): "
                        "refusing to follow it",
                        errno=code,
                    ) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_data_file(root: Path, components: Sequence[str], *, writable: bool, create: bool) -> int:
    """Open the regular file at ``root/components`` without following any symlink below root.

    Raises `UnsafePath` for a symlink or non-regular file, `OSError` otherwise (e.g. ENOENT).
    """
    for component in components:
        _check_component(component)
    parent = _open_parent(root, components, create=create)
    try:
        name = components[-1]
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                raise
        else:
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(
                    f"{'/'.join(components)} under {root} is not a regular file: refusing it",
                    errno=errno.ELOOP if stat.S_ISLNK(st.st_mode) else errno.EINVAL,
                )
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT
        try:
            fd = os.open(name, flags, _FILE_MODE, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(
                    f"{'/'.join(components)} under {root} is a symlink: refusing it",
                    errno=exc.errno,
                ) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafePath(
                f"{'/'.join(components)} under {root} is not a regular file", errno=errno.EINVAL
            )
        return fd
    finally:
        os.close(parent)


def stat_data_file(root: Path, components: Sequence[str]) -> os.stat_result | None:
    """``lstat`` of a data file reached safely (as `open_data_file`), or None if unusable."""
    try:
        parent = _open_parent(root, components, create=False)
    except (OSError, StorageError):
        return None
    try:
        st = os.stat(components[-1], dir_fd=parent, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(parent)
    return st if stat.S_ISREG(st.st_mode) else None


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _load_fallocate()


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the disk blocks of ``[offset, offset + length)``; a no-op where unsupported."""
    if _fallocate is None or length <= 0:
        return
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return
        raise OSError(code, os.strerror(code))


class _Handle:
    __slots__ = ("closing", "dirty", "fd", "sized", "users", "writable")

    def __init__(self, fd: int, writable: bool) -> None:
        self.fd = fd
        self.writable = writable
        self.users = 0
        self.dirty = False
        self.sized = False
        self.closing = False


class FdCache:
    """The descriptors of every `FileStore` that shares it, in one least-recently-used order.

    One lock guards the shared order *and* every member store's handle table: closing another
    torrent's idle handle can then never race with that torrent using it, and there is no lock
    order to get wrong. The lock is held only for bookkeeping, an ``open`` and (for a dirty
    handle being evicted) its ``fdatasync`` -- as the per-store lock was before.
    """

    def __init__(self, max_open: int = MAX_OPEN_FILES) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.max_open = max_open
        self.lock = threading.Lock()
        self._order: OrderedDict[tuple[int, int], FileStore] = OrderedDict()
        self._serials = itertools.count()

    def open_count(self) -> int:
        """Descriptors open now, over all member stores."""
        with self.lock:
            return len(self._order)

    # The rest is called with `lock` held, by `FileStore`.

    def _new_serial(self) -> int:
        return next(self._serials)

    def _used(self, store: FileStore, index: int) -> None:
        key = (store._serial, index)
        self._order[key] = store
        self._order.move_to_end(key)

    def _forget(self, store: FileStore, index: int) -> None:
        self._order.pop((store._serial, index), None)

    def _trim(self) -> None:
        """Close least-recently-used idle handles of any member beyond `max_open`."""
        excess = len(self._order) - self.max_open
        if excess <= 0:
            return
        victims = []
        for (_, index), store in self._order.items():
            if store._handles[index].users == 0:
                victims.append((store, index))
                if len(victims) == excess:
                    break
        for store, index in victims:
            store._evict(index)


_PROCESS_FD_CACHE = FdCache()


class _Run(NamedTuple):
    """``length`` bytes of file ``file_index`` at ``file_offset`` ⇄ ``buffer_offset``."""

    file_index: int
    file_offset: int
    buffer_offset: int
    length: int


class FileStore:
    """A `PieceStore` over sparse files in ``root`` (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        metainfo: Metainfo,
        *,
        max_open_files: int = MAX_OPEN_FILES_PER_TORRENT,
        drop_written: bool = False,
        drop_lag: int | None = None,
        fd_cache: FdCache | None = None,
    ) -> None:
        if max_open_files < 1:
            raise ValueError("max_open_files must be at least 1")
        self.root = Path(root)
        self.metainfo = metainfo
        self._geometry = metainfo.geometry
        self._files = metainfo.files
        self._components: list[tuple[str, ...] | None] = [
            None if entry.pad else storage_components(metainfo, entry) for entry in self._files
        ]
        self._max_open = max_open_files
        self._fd_cache = fd_cache if fd_cache is not None else _PROCESS_FD_CACHE
        self._lock = self._fd_cache.lock  # shared with every store of the cache (see FdCache)
        self._serial = self._fd_cache._new_serial()
        self._handles: OrderedDict[int, _Handle] = OrderedDict()
        self._closed = False
        self._empty_files_created = False
        self._sync_error: StorageError | None = None
        self._drop_written = drop_written and hasattr(os, "posix_fadvise")
        self._drop_lag = DROP_LAG if drop_lag is None else drop_lag
        """Bytes written after a range before its pages go (the mount: past its readahead)."""
        self._written: deque[_Run] = deque()
        """With `drop_written`: runs written, oldest first, whose pages are not yet dropped."""
        self._written_bytes = 0

    # -- public API -------------------------------------------------------------------------

    def file_path(self, file_index: int) -> Path | None:
        """Where file `file_index` lives on disk (None for a pad file, which never does)."""
        components = self._components[file_index]
        return None if components is None else self.root.joinpath(*components)

    def open_file_count(self) -> int:
        with self._lock:
            return len(self._handles)

    async def read(self, piece: int, begin: int, length: int) -> bytes:
        size = self._geometry.piece_size(piece)
        if begin < 0 or length < 0 or begin + length > size:
            raise ValueError(f"{begin}+{length} outside piece {piece} of {size} bytes")
        return await self.read_range(self._geometry.piece_offset(piece) + begin, length)

    async def read_piece(self, piece: int) -> bytes:
        runs = self._piece_runs(piece)
        return await trio.to_thread.run_sync(
            self._read_runs, runs, self._geometry.piece_size(piece)
        )

    async def read_range(self, offset: int, length: int) -> bytes:
        runs = list(self._range_runs(offset, length))
        return await trio.to_thread.run_sync(self._read_runs, runs, length)

    async def write_piece(self, piece: int, data: bytes) -> None:
        check_piece_length(piece, self._geometry.piece_size(piece), data)
        await trio.to_thread.run_sync(self._write_runs, self._piece_runs(piece), data)

    async def write_verified(
        self,
        piece: int,
        data: bytes | bytearray,
        expected: bytes,
        on_match: Callable[[], None] | None = None,
    ) -> bool:
        check_piece_length(piece, self._geometry.piece_size(piece), data)
        runs = self._piece_runs(piece)
        notify = (
            functools.partial(trio.lowlevel.current_trio_token().run_sync_soon, on_match)
            if on_match is not None
            else None
        )

        def hash_then_write() -> bool:  # one worker-thread hop for both
            if hashlib.sha1(data).digest() != expected:
                return False
            if notify is not None:
                # Queued on the trio thread ahead of this hop's own completion: it runs while
                # the bytes go to disk. (A run that ended meanwhile has no reader left.)
                with contextlib.suppress(trio.RunFinishedError):
                    notify()
            self._write_runs(runs, data)
            return True

        return await trio.to_thread.run_sync(hash_then_write)

    async def evict_piece(self, piece: int) -> None:
        await trio.to_thread.run_sync(self._evict_runs, self._piece_runs(piece))

    async def piece_presence(self, piece: int) -> Presence:
        return await trio.to_thread.run_sync(self._presence, self._piece_runs(piece))

    async def has_data_files(self) -> bool:
        """Whether any data file of the torrent exists (one ``lstat`` per file, in one worker
        thread hop): a torrent with none has nothing on disk to recheck."""
        return await trio.to_thread.run_sync(self._has_data_files)

    async def pieces_presence(self, pieces: Sequence[int]) -> dict[int, Presence]:
        def scan() -> dict[int, Presence]:  # one worker-thread hop for the whole batch
            found: dict[int, Presence] = {}
            for piece in pieces:
                presence = self._presence(self._piece_runs(piece))
                if presence is not Presence.ABSENT:
                    found[piece] = presence
            return found

        return await trio.to_thread.run_sync(scan)

    async def sync(self) -> None:
        await trio.to_thread.run_sync(self._sync)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._close_all)

    # -- geometry -----------------------------------------------------------------------------

    def _piece_runs(self, piece: int) -> list[_Run]:
        return [
            _Run(s.file_index, s.file_offset, s.piece_offset, s.length)
            for s in self._geometry.piece_file_slices(piece)
        ]

    def _range_runs(self, offset: int, length: int) -> Iterator[_Run]:
        total = self._geometry.total_size
        if offset < 0 or length < 0 or offset + length > total:
            raise ValueError(f"range {offset}+{length} outside the torrent's {total} bytes")
        if length == 0:
            return
        position = offset
        end = offset + length
        index = self._geometry.file_at(offset)
        while position < end:
            entry = self._files[index]
            if entry.length:
                start = position - entry.offset
                take = min(entry.length - start, end - position)
                yield _Run(index, start, position - offset, take)
                position += take
            index += 1

    # -- handles (worker threads) --------------------------------------------------------------

    def _acquire(self, index: int, *, writable: bool, create: bool) -> _Handle:
        with self._lock:
            if self._closed:
                raise StoreClosed("store is closed")
            handle = self._handles.get(index)
            if handle is not None and (handle.writable or not writable):
                self._handles.move_to_end(index)
                self._fd_cache._used(self, index)
            else:
                if handle is not None:  # a read-only handle, but we must write: reopen
                    del self._handles[index]
                    self._fd_cache._forget(self, index)
                    handle.closing = True
                    if handle.users == 0:
                        self._close_handle(handle)
                components = self._components[index]
                assert components is not None, "pad files have no handle"
                handle = _Handle(*self._open(components, writable=writable, create=create))
                # Data found on disk may sit in the page cache only (written by an earlier
                # process): the next sync() covers every file we opened, not just our writes.
                handle.dirty = True
                self._handles[index] = handle
                self._fd_cache._used(self, index)
            handle.users += 1
            try:
                if writable and not handle.sized:
                    length = self._files[index].length
                    if os.fstat(handle.fd).st_size < length:
                        os.ftruncate(handle.fd, length)  # sparse: never write zeros
                    handle.sized = True
            except BaseException:
                handle.users -= 1
                raise
            self._trim()
            return handle

    def _open(
        self, components: tuple[str, ...], *, writable: bool, create: bool
    ) -> tuple[int, bool]:
        if writable:
            return open_data_file(self.root, components, writable=True, create=create), True
        try:
            # Read-write when allowed, so a later write can reuse the same handle.
            return open_data_file(self.root, components, writable=True, create=False), True
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise
        return open_data_file(self.root, components, writable=False, create=False), False

    def _release(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            if handle.closing:
                if handle.users == 0:
                    self._close_handle(handle)
            else:
                self._trim()

    def _trim(self) -> None:
        """Close least-recently-used idle handles beyond this store's cap, then beyond the
        shared cache's (lock held)."""
        excess = len(self._handles) - self._max_open
        if excess > 0:
            for index in [i for i, h in self._handles.items() if h.users == 0][:excess]:
                self._evict(index)
        self._fd_cache._trim()

    def _evict(self, index: int) -> None:
        """Close the idle handle of file `index` (lock held)."""
        self._fd_cache._forget(self, index)
        self._close_handle(self._handles.pop(index))

    def _close_handle(self, handle: _Handle) -> None:
        """Close a handle nobody uses (lock held); fdatasync first if a later sync needs it."""
        try:
            if handle.dirty and not self._closed:
                try:
                    os.fdatasync(handle.fd)
                except OSError as exc:
                    self._sync_error = _os_error(exc, "fdatasync before close")
        finally:
            handle.dirty = False
            try:
                os.close(handle.fd)
            except OSError:
                pass  # the fd is gone either way; writeback errors surface via fdatasync

    # -- operations (worker threads) -----------------------------------------------------------

    def _describe(self, index: int) -> str:
        return str(self.file_path(index))

    def _read_runs(self, runs: list[_Run], length: int) -> bytes:
        parts: list[bytes] = []
        position = 0
        for run in runs:
            assert run.buffer_offset == position
            if self._files[run.file_index].pad:
                parts.append(bytes(run.length))  # BEP 47: pad files are zeros
            else:
                parts.append(self._pread(run))
            position += run.length
        if position != length:
            raise ValueError(f"runs cover {position} bytes, expected {length}")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _pread(self, run: _Run) -> bytes:
        try:
            handle = self._acquire(run.file_index, writable=False, create=False)
            try:
                data = os.pread(handle.fd, run.length, run.file_offset)
                while len(data) < run.length:
                    more = os.pread(handle.fd, run.length - len(data), run.file_offset + len(data))
                    if not more:
                        raise StorageError(
                            f"short read from {self._describe(run.file_index)} at "
                            f"{run.file_offset + len(data)}: file truncated?",
                            errno=errno.EIO,
                        )
                    data += more
                return data
            finally:
                self._release(handle)
        except OSError as exc:
            raise _os_error(exc, f"reading {self._describe(run.file_index)}") from exc

    def _write_runs(self, runs: list[_Run], data: bytes | bytearray) -> None:
        if not self._empty_files_created:
            self._create_empty_files()
        view = memoryview(data)
        for run in runs:
            if self._files[run.file_index].pad:
                continue  # BEP 47: pad files are never written
            try:
                handle = self._acquire(run.file_index, writable=True, create=True)
                try:
                    chunk = view[run.buffer_offset : run.buffer_offset + run.length]
                    offset = run.file_offset
                    while chunk:
                        written = os.pwrite(handle.fd, chunk, offset)
                        chunk = chunk[written:]
                        offset += written
                    handle.dirty = True
                    if self._drop_written:
                        # On a dirty range: starts its writeback now, drops nothing yet.
                        with contextlib.suppress(OSError):
                            os.posix_fadvise(
                                handle.fd, run.file_offset, run.length, os.POSIX_FADV_DONTNEED
                            )
                finally:
                    self._release(handle)
            except OSError as exc:
                raise _os_error(exc, f"writing {self._describe(run.file_index)}") from exc
            if self._drop_written:
                self._drop_old_pages(run)

    def _drop_old_pages(self, written: _Run) -> None:
        """Record `written`; drop the pages of runs written `DROP_LAG` bytes ago (write-behind).

        Only handles still open are used (a closed one was fdatasync'd, and opening files to
        drop cache is not worth it); advice is never an error worth failing a write for.
        """
        with self._lock:
            self._written.append(written)
            self._written_bytes += written.length
            due: list[tuple[_Run, _Handle]] = []
            while self._written_bytes > self._drop_lag:
                old = self._written.popleft()
                self._written_bytes -= old.length
                handle = self._handles.get(old.file_index)
                if handle is not None and not handle.closing:
                    handle.users += 1
                    due.append((old, handle))
        for old, handle in due:
            try:
                with contextlib.suppress(OSError):
                    os.posix_fadvise(handle.fd, old.file_offset, old.length, os.POSIX_FADV_DONTNEED)
            finally:
                self._release(handle)

    def _has_data_files(self) -> bool:
        return any(
            stat_data_file(self.root, components) is not None
            for components in self._components
            if components is not None
        )

    def _create_empty_files(self) -> None:
        for index, entry in enumerate(self._files):
            components = self._components[index]
            if entry.length or components is None or "l" in entry.attr:
                continue  # BEP 47 symlinks are shown by the FS layer, never created on disk
            try:
                os.close(open_data_file(self.root, components, writable=True, create=True))
            except OSError as exc:
                raise _os_error(exc, f"creating {self._describe(index)}") from exc
        self._empty_files_created = True

    def _evict_runs(self, runs: list[_Run]) -> None:
        for run in runs:
            if self._files[run.file_index].pad:
                continue
            try:
                try:
                    handle = self._acquire(run.file_index, writable=True, create=False)
                except FileNotFoundError:
                    continue
                try:
                    _punch_hole(handle.fd, run.file_offset, run.length)
                finally:
                    self._release(handle)
            except OSError as exc:
                raise _os_error(exc, f"punching {self._describe(run.file_index)}") from exc

    def _presence(self, runs: list[_Run]) -> Presence:
        result = Presence.HOLE
        for run in runs:
            if self._files[run.file_index].pad:
                continue
            try:
                handle = self._acquire(run.file_index, writable=False, create=False)
            except (FileNotFoundError, NotADirectoryError):
                return Presence.ABSENT
            except OSError as exc:
                raise _os_error(exc, f"opening {self._describe(run.file_index)}") from exc
            try:
                end = run.file_offset + run.length
                if os.fstat(handle.fd).st_size < end:
                    return Presence.ABSENT
                if result is Presence.HOLE and not _all_hole(handle.fd, run.file_offset, end):
                    result = Presence.DATA
            except OSError as exc:
                raise _os_error(exc, f"inspecting {self._describe(run.file_index)}") from exc
            finally:
                self._release(handle)
        return result

    def _sync(self) -> None:
        with self._lock:
            if self._closed:
                raise StoreClosed("store is closed")
            if self._sync_error is not None:
                raise StorageError(
                    f"an earlier write-back failed, data may be lost: {self._sync_error}",
                    errno=self._sync_error.errno,
                )
            dirty = [h for h in self._handles.values() if h.dirty]
            for handle in dirty:
                handle.dirty = False
                handle.users += 1
        try:
            for handle in dirty:
                try:
                    os.fdatasync(handle.fd)
                except OSError as exc:
                    error = _os_error(exc, "fdatasync")
                    with self._lock:
                        self._sync_error = error  # sticky: the kernel reports it only once
                    raise error from exc
        finally:
            for handle in dirty:
                self._release(handle)

    def _close_all(self) -> None:
        with self._lock:
            self._closed = True
            for index, handle in self._handles.items():
                self._fd_cache._forget(self, index)
                handle.closing = True
                if handle.users == 0:
                    self._close_handle(handle)
            self._handles.clear()


def _all_hole(fd: int, start: int, end: int) -> bool:
    """True if ``[start, end)`` of the file holds no data (SEEK_DATA, where supported)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    if seek_data is None or start >= end:
        return start >= end
    try:
        return os.lseek(fd, start, seek_data) >= end
    except OSError as exc:
        # ENXIO: no data at or after `start`; anything else: unsupported here, assume data
        return exc.errno == errno.ENXIO
