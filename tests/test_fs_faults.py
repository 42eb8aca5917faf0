"""Regression (issue 7, found by the churn test): dropping a removed torrent's cached pages must
not run on the thread that answers FUSE requests, or the mount deadlocks."""

from __future__ import annotations

import threading
from typing import Any

import trio
from test_fs_operations import CTX, env, fuse_errno

from torrentfs.fs.operations import FsOperations, PageInvalidator
from torrentfs.fs.tree import ROOT_INODE
from torrentfs.metainfo import Metainfo

__all__ = ["env"]  # the fixture, shared with test_fs_operations


async def test_removal_invalidates_pages_off_the_request_thread(
    env: tuple[FsOperations, Any, Metainfo],
) -> None:
    ops, session, mi = env
    ops.mounted = True
    ops.invalidate_entry = lambda *a, **k: None
    calls: list[tuple[int, bool, int]] = []
    done = threading.Event()

    def invalidate(inode: int, *, attr_only: bool) -> None:
        # The kernel would wait here for reads in flight, answered only by the trio thread.
        calls.append((inode, attr_only, threading.get_ident()))
        done.set()

    ops.page_invalidator = PageInvalidator(lambda: ops.mounted and not ops.closing, invalidate)
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    fh = (await ops.open(a.st_ino, 0, CTX)).fh
    session.torrents[mi.info_hash].block = True
    codes: list[int] = []

    async def blocked_read() -> None:
        codes.append(await fuse_errno(ops.read(fh, 0, 10)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_read)
        await trio.sleep(0.2)
        assert ops.remove_torrent(mi.info_hash)
    assert await trio.to_thread.run_sync(done.wait, 10)
    assert [(inode, attr_only) for inode, attr_only, _ in calls] == [(a.st_ino, False)]
    assert calls[0][2] != threading.get_ident()
    assert codes != []
    ops.shutdown()  # stops the thread


async def test_drop_torrent_drops_pages_before_the_entries_vanish(
    env: tuple[FsOperations, Any, Metainfo],
) -> None:
    """An open handle must not read cached pages once the torrent is gone from the listing: the
    pages are dropped (off this thread) before the tree forgets the torrent."""
    ops, _session, mi = env
    ops.mounted = True
    ops.invalidate_entry = lambda *a, **k: None
    order: list[str] = []

    def invalidate(inode: int, *, attr_only: bool) -> None:
        attached = ops.tree.top(mi.info_hash) is not None
        order.append(f"pages dropped while {'shown' if attached else 'gone'}")

    ops.page_invalidator = PageInvalidator(lambda: ops.mounted and not ops.closing, invalidate)
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    fh = (await ops.open(a.st_ino, 0, CTX)).fh
    assert await ops.drop_torrent(mi.info_hash)
    assert order[0] == "pages dropped while shown"
    assert ops.tree.top(mi.info_hash) is None
    assert await fuse_errno(ops.read(fh, 0, 10)) != 0
    ops.shutdown()
