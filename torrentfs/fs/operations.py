"""The pyfuse3 request handlers (L6): THE errno boundary of torrentfs.

Guarantees, and why (DESIGN.md §3 rules 3-5):

* **Only `FUSEError` leaves a handler.** pyfuse3 ends the whole mount on any other exception, so
  every handler runs inside `_boundary`: domain errors map to an errno through `ERRNO_TABLE`
  (`ReadTimeout`/`TorrentRemoved`/a released handle -> ``EIO``, `StorageError` -> its own errno
  or ``EIO``), anything unexpected is logged with its traceback and answered ``EIO``.
  ``forget()`` never raises at all (the kernel cannot take an answer to it).
* **Every read ends by itself.** pyfuse3 does not deliver FUSE interrupts, so a read is bounded
  by the reader's timeout, by its torrent's removal, and by `shutdown()`, which cancels every
  read in flight (they get ``EIO``) so unmounting never waits on the swarm.
* **Read-only, immutable content:** files are ``0444``, directories ``0555``; a file's bytes never
  change for an inode, so entry/attribute timeouts are long (``ls``/``find``/``stat`` on 60,000
  files answer from the kernel's cache after one readdirplus) and every open keeps the page cache
  (``keep_cache``; complete files are then served at page-cache speed). Only the root, whose
  listing changes as metainfo files come and go, has short timeouts; removed top-level entries
  are invalidated in the kernel explicitly.
* **Direct I/O, when asked** (``--direct-io``): a file not yet complete when opened is opened
  with ``FOPEN_DIRECT_IO``, so the app's reads come to us as they are (no page-cache copy, no
  drop-behind: about a fifth less CPU per GiB on a cold ``dd bs=1M``), at the price of one round
  trip per read of the app and of shared ``mmap`` (the kernel refuses it with ``ENODEV`` unless
  the daemon can ask ``FUSE_DIRECT_IO_ALLOW_MMAP``, which libfuse 3.14 cannot; private maps
  work). A complete file always keeps the page cache.
* **Visible state:** extended attributes ``user.torrentfs.{infohash,progress,peers,
  download_rate,magnet,status}`` on every entry of a torrent, listed by ``listxattr`` so
  ``getfattr -d`` shows them.
  Other namespaces (``security.selinux``, ACLs) are refused with ``ENOTSUP`` before any
  lookup, so ``ls -l`` stops asking for them (60,000 files: two round trips, not 120,000).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

import pyfuse3
import trio

from torrentfs.errors import ReadTimeout, StorageError, TorrentfsError, TorrentRemoved
from torrentfs.fs.drop_behind import Behind, PageDropper
from torrentfs.fs.tree import ROOT_INODE, FsTree, Node
from torrentfs.magnet import magnet_from_metainfo
from torrentfs.metainfo import Metainfo
from torrentfs.readahead import ReadaheadPolicy
from torrentfs.reader import DEFAULT_READ_TIMEOUT, Reader, ReaderClosed, torrent_rate

log = logging.getLogger(__name__)

LONG_TIMEOUT = 24 * 3600.0
"""Seconds the kernel may cache entries and attributes of torrent content (it never changes)."""
ROOT_TIMEOUT = 1.0
"""The root's attributes change as torrents come and go: cache them briefly."""
BLOCK = 4096
XATTR_PREFIX = "user.torrentfs."
XATTRS = ("infohash", "progress", "peers", "download_rate", "magnet", "status", "pin")
ROOT_STATUS = XATTR_PREFIX + "status"
"""On the root: the mount's status document, JSON (`torrentfs.status`), paged as ``.1``..."""
_XATTR_PREFIX_BYTES = XATTR_PREFIX.encode()
_NO_NS = errno.EOPNOTSUPP
"""getxattr of ``security.*``, ``system.*`` (ACLs), ``trusted.*``: namespaces torrentfs has
none of. ``ENOTSUP`` rather than ``ENODATA`` lets ``ls -l`` (coreutils) remember that for the
whole file system after the first file, instead of asking twice per file (a FUSE round trip
each, which the kernel never caches)."""

ERRNO_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (ReadTimeout, errno.EIO),
    (TorrentRemoved, errno.EIO),
    (ReaderClosed, errno.EIO),
    (StorageError, errno.EIO),  # its own errno wins when it has one (see errno_for)
    (TorrentfsError, errno.EIO),
)
"""Domain error -> errno, first match wins. The only place errors become errno values."""


def errno_for(exc: BaseException) -> int:
    """The errno a domain error is answered with (`ERRNO_TABLE`; ``EIO`` for anything else)."""
    if isinstance(exc, StorageError) and exc.errno:
        return exc.errno
    for kind, code in ERRNO_TABLE:
        if isinstance(exc, kind):
            return code
    return errno.EIO


P = ParamSpec("P")
T = TypeVar("T")


def _boundary(
    handler: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Let only `FUSEError` out of a handler (DESIGN.md rule 3)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except TorrentfsError as exc:
            code = errno_for(exc)
            log.debug("%s: %s -> %s", handler.__name__, exc, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("bug in %s; answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class EngineTorrent(Protocol):
    """The parts of `torrentfs.torrent.Torrent` the handlers use (ARCHITECTURE.md L5 API)."""

    metainfo: Metainfo

    def new_want(self) -> Any: ...

    async def read(self, offset: int, length: int, *, timeout: float) -> bytes: ...

    def have_range(self, offset: int, length: int) -> bool: ...

    def open_handle(self) -> None: ...

    def close_handle(self) -> None: ...

    def statistics(self) -> Any: ...


class StatusSource(Protocol):
    """The mount-wide state shown on the root (`torrentfs.status.MountStatus`)."""

    def page(self, number: int) -> bytes | None: ...

    def usage(self) -> tuple[int, int] | None: ...

    def is_pinned(self, info_hash: bytes, file_index: int | None) -> bool: ...


class Engine(Protocol):
    """The session, as seen from the mount."""

    def get(self, info_hash: bytes) -> Any: ...


class PageInvalidator:
    """Drops the kernel's cached pages of inodes, from its own thread.

    ``invalidate_inode(inode, attr_only=False)`` makes the kernel lock every cached page of
    the inode, and a page whose read is in flight stays locked until that read is answered -
    by the trio thread that serves every request. Called from that thread it waits for
    itself: the whole mount hangs (found by the churn test: a torrent removed while 8 readers
    were reading it). This thread may wait; the trio thread goes on answering reads.
    """

    def __init__(
        self,
        live: Callable[[], bool],
        invalidate: Callable[..., None] = pyfuse3.invalidate_inode,
    ) -> None:
        self.live = live  # False once unmounting: the FUSE session may be gone
        self.invalidate = invalidate
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, inodes: set[int]) -> None:
        if not inodes:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fuse-invalidate", daemon=True)
            self._thread.start()
        for inode in inodes:
            self._queue.put(inode)

    def close(self) -> None:
        """Stop the thread once the queue is done (it never blocks the caller)."""
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while (inode := self._queue.get()) is not None:
            if not self.live():
                continue
            try:
                self.invalidate(inode, attr_only=False)
            except Exception:  # unmounted meanwhile, or an inode already forgotten
                log.debug("cannot invalidate inode %d", inode, exc_info=True)


@dataclass(eq=False)
class Handle:
    """One open file: its reader and the reads it has in flight (to end them on shutdown)."""

    fh: int
    node: Node
    reader: Reader
    scopes: set[trio.CancelScope] = field(default_factory=set)
    behind: Behind | None = None
    """Drops this handle's pages far behind its reads (`PageDropper`; incomplete files only)."""

    def release(self) -> None:
        """The handle is closed: its reader's wants go, and so do its drops not yet done."""
        self.reader.release()
        if self.behind is not None:
            self.behind.close()


class FsOperations(pyfuse3.Operations):
    """The handlers. Owns the tree and the open handles; asks the engine for data."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        tree: FsTree,
        engine: Engine,
        *,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        readahead: ReadaheadPolicy | None = None,
        uid: int | None = None,
        gid: int | None = None,
        direct_io: bool = False,
    ) -> None:
        super().__init__()
        self.tree = tree
        self.direct_io = direct_io
        """Open files not yet complete with ``FOPEN_DIRECT_IO`` (see the module docstring)."""
        self.engine = engine
        self.read_timeout = read_timeout
        self.readahead = readahead if readahead is not None else ReadaheadPolicy()
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.handles: dict[int, Handle] = {}
        self._fhs = itertools.count(1)
        self.magnets: dict[bytes, str] = {}
        """info-hash -> magnet URI, for torrents shown from a magnet."""
        self._fills: dict[bytes, trio.Event] = {}
        """Magnets still fetching metadata: set when filled in, failed or removed."""
        self.magnet_errors: dict[bytes, str] = {}
        self.closing = False
        self.active_reads = 0
        self.reads = 0
        self.read_bytes = 0
        """Reads answered with data and their bytes (the mount logs them when it ends)."""
        self.last_read = 0.0
        self.mounted = False
        """True while the kernel is attached: entry invalidations are sent only then."""
        self._initialized = trio.Event()
        self.readdir_reply: Callable[[Any, bytes, Any, int], bool] = pyfuse3.readdir_reply
        self.status: StatusSource | None = None
        """Set by the app: the root's ``user.torrentfs.status``, the budget for ``statfs``."""
        self.invalidate_entry: Callable[..., None] = pyfuse3.invalidate_entry_async
        self.page_invalidator = PageInvalidator(lambda: self.mounted and not self.closing)
        self.page_dropper: PageDropper | None = None
        """Set by the app (unless ``--keep-page-cache``): drop-behind of streamed files."""

    def init(self) -> None:
        """pyfuse3: the kernel's FUSE INIT is being answered (called once, never raises)."""
        self._initialized.set()

    async def wait_initialized(self) -> None:
        """Until FUSE INIT was answered (it is, once the loop yields after `init`)."""
        await self._initialized.wait()
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ the tree, from the app

    def add_torrent(self, metainfo: Metainfo) -> Node:
        """Show a torrent (its engine object must already be in the session)."""
        self.magnets.pop(metainfo.info_hash, None)
        return self.tree.add_torrent(metainfo.info_hash, metainfo)

    def add_placeholder(self, info_hash: bytes, name: str, uri: str) -> Node:
        """Show a magnet whose metadata is not known yet: an empty directory."""
        self.magnets[info_hash] = uri
        node = self.tree.add_placeholder(info_hash, name)
        if node.placeholder and info_hash not in self._fills:
            self._fills[info_hash] = trio.Event()
        return node

    def fill_magnet(self, info_hash: bytes, metainfo: Metainfo) -> Node | None:
        """The magnet's metadata is known: its directory fills in, in place (no remount).

        Lookups waiting inside it resume; the kernel's cached attributes of the directory are
        invalidated so ``ls`` and ``stat`` see the new contents at once.
        """
        node = self.tree.fill_placeholder(info_hash, metainfo)
        self._wake_fill(info_hash)
        if node is not None and self.mounted:
            try:
                pyfuse3.invalidate_inode(node.inode, attr_only=True)
            except Exception:  # cached a little longer (short timeout): nothing breaks
                log.debug("cannot invalidate inode %d", node.inode, exc_info=True)
        return node

    def magnet_failed(self, info_hash: bytes, reason: str) -> None:
        """The magnet's metadata cannot be used: its status says why; waiters stop waiting."""
        self.magnet_errors[info_hash] = reason
        self._wake_fill(info_hash)

    def _wake_fill(self, info_hash: bytes) -> None:
        event = self._fills.pop(info_hash, None)
        if event is not None:
            event.set()

    async def _wait_fill(self, parent: Node) -> bool:
        """A lookup inside a magnet still fetching metadata: wait (bounded by the read
        timeout) for it to fill in. True if it did."""
        if not parent.placeholder or parent.info_hash is None:
            return False
        event = self._fills.get(parent.info_hash)
        if event is None:
            return False
        with trio.move_on_after(self.read_timeout):
            await event.wait()
        return not parent.placeholder

    async def drop_torrent(self, info_hash: bytes, *, limit: float = 5.0) -> bool:
        """`remove_torrent`, with the kernel's cached pages of its open files dropped *before*
        its entries vanish, so that an open handle cannot read them afterwards (``EIO``).

        Reads in flight are answered (``EIO``) while a worker thread drops the pages (see
        `PageInvalidator` for why not on this thread); bounded by `limit` seconds.
        """
        inodes = self._release_handles(info_hash)
        if self.mounted and inodes:
            live = self.page_invalidator.live
            invalidate = self.page_invalidator.invalidate

            def drop_pages() -> None:
                for inode in inodes:
                    if live():
                        with contextlib.suppress(Exception):
                            invalidate(inode, attr_only=False)

            with trio.move_on_after(limit):
                await trio.to_thread.run_sync(drop_pages, abandon_on_cancel=True)
        return self.remove_torrent(info_hash)

    def _release_handles(self, info_hash: bytes) -> set[int]:
        """Release a torrent's open handles and cancel their reads; their inodes."""
        inodes: set[int] = set()
        for handle in list(self.handles.values()):
            if handle.node.info_hash == info_hash:
                handle.release()
                inodes.add(handle.node.inode)
                for scope in handle.scopes:
                    scope.cancel()
        return inodes

    def remove_torrent(self, info_hash: bytes) -> bool:
        """Make a torrent's entries vanish; its open handles get ``EIO`` from now on."""
        self.magnets.pop(info_hash, None)
        self.magnet_errors.pop(info_hash, None)
        self._wake_fill(info_hash)
        top = self.tree.remove_torrent(info_hash)
        if top is None:
            return False
        stale_inodes = self._release_handles(info_hash)
        if self.mounted:
            # Open handles must see EIO, not pages the kernel kept (keep_cache): drop them
            # (never from this thread: see `PageInvalidator`).
            self.page_invalidator.submit(stale_inodes)
            try:
                # A deletion notice for a directory fails (ENOTEMPTY, logged by pyfuse3 with
                # a traceback) while the kernel still caches its children: just drop the entry.
                deleted = 0 if top.is_dir else top.inode
                self.invalidate_entry(ROOT_INODE, top.name, deleted, ignore_enoent=True)
            except Exception:  # the kernel caches the entry a little longer; nothing breaks
                log.exception("cannot invalidate %r", top.name)
        return True

    def shutdown(self) -> None:
        """Stop accepting reads and end every read in flight (they get ``EIO``)."""
        self.closing = True
        for handle in self.handles.values():
            for scope in handle.scopes:
                scope.cancel()
            handle.reader.release()
        self.page_invalidator.close()
        if self.page_dropper is not None:
            self.page_dropper.close()

    async def wait_drained(self, *, quiet: float = 0.2, limit: float = 2.0) -> None:
        """After `shutdown`: wait (at most ``limit`` s) until no read came for ``quiet`` s.

        The kernel retries a failed readahead with a plain read of the page; answering those
        with ``EIO`` too (instead of stopping the loop at once, which leaves them to be aborted
        by the unmount with ``ENOTCONN``) gives every blocked reader a clean ``EIO``.
        """
        with trio.move_on_after(limit):
            while self.active_reads or trio.current_time() - self.last_read < quiet:
                await trio.sleep(quiet / 4)

    # ------------------------------------------------------------------ attributes

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.generation = 0
        changing = node.inode == ROOT_INODE or node.placeholder  # a magnet fills in later
        timeout = ROOT_TIMEOUT if changing else LONG_TIMEOUT
        a.entry_timeout = timeout
        a.attr_timeout = timeout
        if node.is_dir:
            a.st_mode = stat.S_IFDIR | 0o555
        else:
            a.st_mode = stat.S_IFREG | 0o444
        a.st_nlink = node.nlink
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_rdev = 0
        a.st_size = node.size
        a.st_blksize = 128 * 1024
        a.st_blocks = (node.size + 511) // 512
        ns = node.mtime * 1_000_000_000
        a.st_atime_ns = ns
        a.st_mtime_ns = ns
        a.st_ctime_ns = ns
        return a

    def _node(self, inode: int) -> Node:
        node = self.tree.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    # ------------------------------------------------------------------ metadata handlers

    @_boundary
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            node: Node | None = self.tree.get(parent_inode)
        elif name == b"..":
            here = self.tree.get(parent_inode)
            node = None if here is None else self.tree.get(here.parent)
        else:
            node = self.tree.lookup(parent_inode, name)
            parent = self.tree.get(parent_inode)
            if node is None and parent is not None and await self._wait_fill(parent):
                node = self.tree.lookup(parent_inode, name)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        self.tree.remember(node.inode)
        return self._attrs(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            for inode, count in inode_list:
                self.tree.forget(inode, count)
        except Exception:
            log.exception("bug in forget (ignored)")

    @_boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self._node(inode))

    @_boundary
    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EROFS)

    @_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @_boundary
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        for child in self.tree.children(fh, after=start_id):
            if not self.readdir_reply(token, child.name, self._attrs(child), child.inode):
                break
            self.tree.remember(child.inode)  # readdirplus entries count as lookups

    @_boundary
    async def releasedir(self, fh: int) -> None:
        return None

    @_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = self.tree.statistics()
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLOCK
        s.f_frsize = BLOCK
        s.f_blocks = (st.total_size + BLOCK - 1) // BLOCK
        s.f_bfree = 0
        s.f_bavail = 0
        usage = self.status.usage() if self.status is not None else None
        if usage is not None:  # df shows the disk budget and its use
            limit, used = usage
            s.f_blocks = limit // BLOCK
            s.f_bfree = s.f_bavail = max(0, limit - used) // BLOCK
        s.f_files = st.files + st.dirs
        s.f_ffree = 0
        s.f_favail = 0
        s.f_namemax = 255
        return s

    # ------------------------------------------------------------------ files

    @_boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if self.closing or not node.attached or node.info_hash is None or node.file is None:
            raise pyfuse3.FUSEError(errno.EIO if self.closing else errno.ENOENT)
        dropper = self.page_dropper
        if dropper is not None and dropper.is_own(ctx.pid):
            return pyfuse3.FileInfo(fh=0, keep_cache=True)  # only to drop pages: no reader
        torrent = self.engine.get(node.info_hash)
        if torrent is None:
            raise TorrentRemoved(f"{node.name!r}: torrent not in the session")
        reader = Reader(
            torrent,
            node.file.offset,
            node.file.length,
            name=self._display_name(node),
            read_timeout=self.read_timeout,
            readahead=self.readahead,
        )
        reader.start()
        fh = next(self._fhs)
        handle = self.handles[fh] = Handle(fh, node, reader)
        complete = torrent.have_range(node.file.offset, node.file.length)
        if self.direct_io and not complete:  # no page cache: nothing to drop behind either
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=True)
        if dropper is not None:
            if not complete:
                handle.behind = dropper.follow(reader.name)
            else:  # complete: its pages stay; drops left by earlier handles are not done
                for other in self.handles.values():
                    if other.node is node and other.behind is not None:
                        other.behind.close()
        # The bytes of an inode never change: the page cache may always be kept.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.last_read = trio.current_time()
        handle = self.handles.get(fh)
        if handle is None or self.closing:
            raise pyfuse3.FUSEError(errno.EIO if self.closing else errno.EBADF)
        with trio.CancelScope() as scope:
            handle.scopes.add(scope)
            self.active_reads += 1
            try:
                data = await handle.reader.read(off, size)
                if handle.behind is not None:
                    handle.behind.on_read(off, len(data))
                self.reads += 1
                self.read_bytes += len(data)
                return data
            finally:
                self.active_reads -= 1
                self.last_read = trio.current_time()
                handle.scopes.discard(scope)
        # Cancelled by shutdown() or removal: the reader is released; the caller gets EIO.
        raise ReaderClosed(f"{handle.reader.name}: read ended by shutdown or removal")

    @_boundary
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None:
            handle.release()

    @_boundary
    async def flush(self, fh: int) -> None:
        return None

    # ------------------------------------------------------------------ extended attributes

    @_boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        node = self._node(inode)
        if node.info_hash is None:
            return [ROOT_STATUS.encode()] if inode == ROOT_INODE and self.status else []
        return [(XATTR_PREFIX + n).encode() for n in XATTRS]

    @_boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(_XATTR_PREFIX_BYTES):  # before any lookup: `ls -l` asks per file
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR if name.startswith(b"user.") else _NO_NS)
        node = self._node(inode)
        key = name.decode("utf-8", "replace")
        if inode == ROOT_INODE and self.status is not None and key.startswith(ROOT_STATUS):
            number = key[len(ROOT_STATUS) + 1 :] if key != ROOT_STATUS else "0"
            page = self.status.page(int(number)) if number.isdigit() else None
            if page is None:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
            return page
        if node.info_hash is None or not key.startswith(XATTR_PREFIX):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        attr = key[len(XATTR_PREFIX) :]
        if attr not in XATTRS:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return self.xattr_value(node, attr).encode()

    def xattr_value(self, node: Node, attr: str) -> str:
        """One ``user.torrentfs.*`` value as text."""
        assert node.info_hash is not None
        info_hash = node.info_hash
        if attr == "infohash":
            return info_hash.hex()
        torrent = self.engine.get(info_hash) if node.attached else None
        if attr == "magnet":
            if info_hash in self.magnets:
                return self.magnets[info_hash]
            if torrent is not None:
                return magnet_from_metainfo(torrent.metainfo)
            return ""
        if attr == "status":
            if not node.attached:
                return "removed"
            if info_hash in self.magnet_errors:
                return f"error: {self.magnet_errors[info_hash]}"
            if node.placeholder:
                return "fetching metadata"
            return _state(torrent)
        if torrent is None:
            return "0"
        if attr == "progress":
            return f"{_progress(torrent, node):.4f}"
        if attr == "peers":
            peers = getattr(torrent, "peers", None)
            if peers is not None:
                return str(len(peers))
            return str(torrent.statistics().peers)
        if attr == "download_rate":
            return str(int(torrent_rate(torrent, trio.current_time())))
        if attr == "pin":
            index = node.file.index if node.file is not None else None
            pinned = self.status is not None and self.status.is_pinned(info_hash, index)
            return "1" if pinned else "0"
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @_boundary
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise pyfuse3.FUSEError(errno.EROFS)

    @_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.EROFS)

    # ------------------------------------------------------------------ helpers

    def _display_name(self, node: Node) -> str:
        parts = []
        n: Node | None = node
        while n is not None and n.inode != ROOT_INODE:
            parts.append(os.fsdecode(n.name))
            n = self.tree.get(n.parent)
        return "/".join(reversed(parts))


def _state(torrent: Any) -> str:
    if torrent is None:
        return "removed"
    state = getattr(torrent, "state", None)
    value = str(state()) if callable(state) else str(torrent.statistics().state)
    return "ready" if value == "idle" else value  # metadata known, nothing being fetched


def _progress(torrent: Any, node: Node) -> float:
    """Verified fraction of a file (by pieces), or of the whole torrent for directories."""
    have = torrent.have
    if node.file is not None:
        if node.file.length == 0:
            return 1.0
        pieces = torrent.geometry.pieces_for_range(node.file.offset, node.file.length)
        return sum(1 for p in pieces if have[p]) / len(pieces)
    total = torrent.metainfo.num_pieces
    return have.count() / total if total else 1.0


def mount_time() -> int:
    return int(time.time())


__all__ = ["ERRNO_TABLE", "FsOperations", "errno_for", "mount_time"]
