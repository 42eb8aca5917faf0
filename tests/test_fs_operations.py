"""FUSE handlers (fs/operations.py) called directly, without a mount: the errno boundary."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pyfuse3
import pytest
import trio
from fsutil import make_metainfo

from torrentfs.bitfield import Bitfield
from torrentfs.errors import ReadTimeout, StorageError, TorrentRemoved
from torrentfs.fs.operations import XATTRS, FsOperations, errno_for
from torrentfs.fs.tree import ROOT_INODE, FsTree
from torrentfs.metainfo import Metainfo
from torrentfs.readahead import ReadaheadPolicy

CTX: Any = None
PIECE = 16384


class FakeWant:
    def __init__(self, t: FakeTorrent) -> None:
        self.t = t

    def update(self, offset: int, length: int, **kw: Any) -> None:
        self.t.wants.add(self)

    def drop(self) -> None:
        self.t.wants.discard(self)


class FakeTorrent:
    def __init__(self, metainfo: Metainfo, data: bytes) -> None:
        self.metainfo = metainfo
        self.geometry = metainfo.geometry
        self.data = data
        self.have = Bitfield(metainfo.num_pieces)
        for i in range(metainfo.num_pieces):
            self.have.set(i)
        self.wants: set[FakeWant] = set()
        self.open_handles = 0
        self.peers: dict[object, None] = {object(): None, object(): None}
        self.fail: BaseException | None = None
        self.block = False
        self.removed = trio.Event()

    def new_want(self) -> FakeWant:
        return FakeWant(self)

    def open_handle(self) -> None:
        self.open_handles += 1

    def close_handle(self) -> None:
        self.open_handles -= 1

    def have_range(self, offset: int, length: int) -> bool:
        return all(self.have[p] for p in self.geometry.pieces_for_range(offset, max(1, length)))

    async def read(self, offset: int, length: int, *, timeout: float) -> bytes:
        if self.fail is not None:
            raise self.fail
        if self.block:
            with trio.move_on_after(timeout):
                await self.removed.wait()
                raise TorrentRemoved("removed")
            raise ReadTimeout("piece 0 not available after 1 s (0 peers)")
        return self.data[offset : offset + length]

    def state(self) -> str:
        return "downloading"

    def statistics(self) -> Any:
        raise AssertionError("not needed for the fast paths")


class FakeSession:
    def __init__(self) -> None:
        self.torrents: dict[bytes, FakeTorrent] = {}

    def get(self, info_hash: bytes) -> FakeTorrent | None:
        return self.torrents.get(info_hash)


FILES = [("a.bin", 40_000), ("empty.txt", 0), ("sub/ü.txt", 100)]
DATA = bytes((i * 7) % 251 for i in range(40_100))


@pytest.fixture
def env() -> tuple[FsOperations, FakeSession, Metainfo]:
    mi = make_metainfo("multi", FILES, piece_length=PIECE)
    session = FakeSession()
    session.torrents[mi.info_hash] = FakeTorrent(mi, DATA)
    ops = FsOperations(
        FsTree(mount_time=1000),
        session,
        read_timeout=5.0,
        readahead=ReadaheadPolicy(min_bytes=PIECE, max_bytes=4 * PIECE),
        uid=1234,
        gid=5678,
    )
    ops.add_torrent(mi)
    return ops, session, mi


async def fuse_errno(coro: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await coro
    return info.value.errno


async def listing(ops: FsOperations, inode: int) -> list[tuple[bytes, int]]:
    got: list[tuple[bytes, int]] = []

    def reply(token: Any, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        got.append((name, attr.st_size))
        return True

    ops.readdir_reply = reply
    fh = await ops.opendir(inode, CTX)
    await ops.readdir(fh, 0, None)
    await ops.releasedir(fh)
    return got


async def test_tree_through_the_handlers(env: tuple[FsOperations, FakeSession, Metainfo]) -> None:
    ops, _, _ = env
    assert await listing(ops, ROOT_INODE) == [(b"multi", 0)]
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    assert top.st_mode == 0o40555 and top.st_uid == 1234 and top.st_gid == 5678
    assert top.entry_timeout >= 3600 and top.st_mtime_ns == 1_600_000_000 * 10**9
    names = await listing(ops, top.st_ino)
    assert names == [(b"a.bin", 40_000), (b"empty.txt", 0), (b"sub", 0)]
    sub = await ops.lookup(top.st_ino, b"sub", CTX)
    f = await ops.lookup(sub.st_ino, "ü.txt".encode(), CTX)
    assert f.st_mode == 0o100444 and f.st_size == 100 and f.st_nlink == 1
    assert (await ops.getattr(f.st_ino, CTX)).st_size == 100
    assert (await ops.lookup(sub.st_ino, b"..", CTX)).st_ino == top.st_ino
    assert (await ops.getattr(ROOT_INODE, CTX)).attr_timeout <= 1
    assert await fuse_errno(ops.lookup(ROOT_INODE, b"nope", CTX)) == errno.ENOENT
    assert await fuse_errno(ops.getattr(99999, CTX)) == errno.ENOENT
    assert await fuse_errno(ops.opendir(f.st_ino, CTX)) == errno.ENOTDIR
    node = ops.tree.get(f.st_ino)
    assert node is not None and node.nlookup == 1


async def test_readdir_counts_lookups_and_stops_when_the_buffer_is_full(
    env: tuple[FsOperations, FakeSession, Metainfo],
) -> None:
    ops, _, _ = env
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    calls: list[int] = []

    def reply(token: Any, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        calls.append(next_id)
        return len(calls) < 2

    ops.readdir_reply = reply
    await ops.readdir(top.st_ino, 0, None)
    first = ops.tree.get(calls[0])
    second = ops.tree.get(calls[1])
    assert first is not None and first.nlookup == 1
    assert second is not None and second.nlookup == 0  # not delivered: not counted
    calls.clear()
    await ops.readdir(top.st_ino, first.inode, None)
    assert calls[0] == second.inode


async def test_open_and_read_exact_bytes(env: tuple[FsOperations, FakeSession, Metainfo]) -> None:
    ops, _, _ = env
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    info = await ops.open(a.st_ino, 0, CTX)  # O_RDONLY
    assert info.keep_cache
    assert await ops.read(info.fh, 0, 100) == DATA[:100]
    assert await ops.read(info.fh, 39_990, 4096) == DATA[39_990:40_000]
    assert await ops.read(info.fh, 40_000, 4096) == b""
    await ops.release(info.fh)
    assert await fuse_errno(ops.read(info.fh, 0, 1)) == errno.EBADF
    sub = await ops.lookup(top.st_ino, b"sub", CTX)
    u = await ops.lookup(sub.st_ino, "ü.txt".encode(), CTX)
    fh = (await ops.open(u.st_ino, 0, CTX)).fh
    assert await ops.read(fh, 0, 4096) == DATA[40_000:40_100]
    e = await ops.lookup(top.st_ino, b"empty.txt", CTX)
    fh = (await ops.open(e.st_ino, 0, CTX)).fh
    assert await ops.read(fh, 0, 4096) == b""


async def test_read_only(env: tuple[FsOperations, FakeSession, Metainfo]) -> None:
    import os

    ops, _, _ = env
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    assert await fuse_errno(ops.open(a.st_ino, os.O_WRONLY, CTX)) == errno.EROFS
    assert await fuse_errno(ops.open(a.st_ino, os.O_RDWR, CTX)) == errno.EROFS
    assert await fuse_errno(ops.open(top.st_ino, 0, CTX)) == errno.EISDIR
    assert await fuse_errno(ops.setxattr(a.st_ino, b"user.x", b"1", CTX)) == errno.EROFS


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ReadTimeout("slow"), errno.EIO),
        (TorrentRemoved("gone"), errno.EIO),
        (StorageError("full", errno=errno.ENOSPC), errno.ENOSPC),
        (StorageError("broken"), errno.EIO),
        (RuntimeError("a bug"), errno.EIO),
        (KeyError("another bug"), errno.EIO),
    ],
)
async def test_every_error_becomes_an_errno(
    env: tuple[FsOperations, FakeSession, Metainfo],
    error: Exception,
    code: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ops, session, mi = env
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    fh = (await ops.open(a.st_ino, 0, CTX)).fh
    session.torrents[mi.info_hash].fail = error
    with caplog.at_level(logging.ERROR):
        assert await fuse_errno(ops.read(fh, 0, 10)) == code
    bug = not isinstance(error, ReadTimeout | TorrentRemoved | StorageError)
    assert any("bug in read" in r.getMessage() for r in caplog.records) == bug
    session.torrents[mi.info_hash].fail = None
    assert await ops.read(fh, 100, 10) == DATA[100:110]  # the handle (and mount) still work


def test_errno_table() -> None:
    assert errno_for(StorageError("x", errno=errno.EACCES)) == errno.EACCES
    assert errno_for(ValueError()) == errno.EIO


async def test_forget_never_raises(env: tuple[FsOperations, FakeSession, Metainfo]) -> None:
    ops, _, _ = env
    await ops.forget([(ROOT_INODE, 1), (424242, 3)])
    await ops.forget([("garbage", None)])  # type: ignore[list-item]


async def test_removal_hides_entries_and_fails_open_handles(
    env: tuple[FsOperations, FakeSession, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    ops, session, mi = env
    invalidated: list[tuple[int, bytes]] = []
    ops.mounted = True
    ops.invalidate_entry = lambda parent, name, *a, **k: invalidated.append((parent, name))
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    fh = (await ops.open(a.st_ino, 0, CTX)).fh
    torrent = session.torrents[mi.info_hash]
    torrent.block = True
    codes: list[int] = []

    async def blocked_read() -> None:
        codes.append(await fuse_errno(ops.read(fh, 0, 10)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_read)
        await trio.sleep(0.5)
        assert ops.remove_torrent(mi.info_hash)
    assert codes == [errno.EIO] and trio.current_time() < 1.0  # not the 5 s timeout
    assert invalidated == [(ROOT_INODE, b"multi")]
    assert torrent.wants == set()
    assert await fuse_errno(ops.lookup(ROOT_INODE, b"multi", CTX)) == errno.ENOENT
    assert await fuse_errno(ops.read(fh, 0, 10)) == errno.EIO
    assert await listing(ops, ROOT_INODE) == []
    assert (await ops.getattr(a.st_ino, CTX)).st_size == 40_000  # still known to the kernel
    assert await ops.getxattr(a.st_ino, b"user.torrentfs.status", CTX) == b"removed"
    assert not ops.remove_torrent(mi.info_hash)


async def test_shutdown_ends_blocked_reads_at_once(
    env: tuple[FsOperations, FakeSession, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    ops, session, mi = env
    session.torrents[mi.info_hash].block = True
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    fhs = [(await ops.open(a.st_ino, 0, CTX)).fh for _ in range(3)]
    codes: list[int] = []

    async def blocked_read(fh: int) -> None:
        codes.append(await fuse_errno(ops.read(fh, 0, 10)))

    async with trio.open_nursery() as nursery:
        for fh in fhs:
            nursery.start_soon(blocked_read, fh)
        await trio.sleep(1.0)
        ops.shutdown()
    assert codes == [errno.EIO] * 3 and trio.current_time() < 2.0
    assert await fuse_errno(ops.read(fhs[0], 0, 10)) == errno.EIO
    assert await fuse_errno(ops.open(a.st_ino, 0, CTX)) == errno.EIO


async def test_read_timeout_is_eio(
    env: tuple[FsOperations, FakeSession, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    ops, session, mi = env
    session.torrents[mi.info_hash].block = True
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    fh = (await ops.open(a.st_ino, 0, CTX)).fh
    assert await fuse_errno(ops.read(fh, 0, 10)) == errno.EIO
    assert trio.current_time() == pytest.approx(5.0)


async def test_xattrs(env: tuple[FsOperations, FakeSession, Metainfo]) -> None:
    ops, session, mi = env
    top = await ops.lookup(ROOT_INODE, b"multi", CTX)
    a = await ops.lookup(top.st_ino, b"a.bin", CTX)
    names = await ops.listxattr(a.st_ino, CTX)
    assert names == [f"user.torrentfs.{n}".encode() for n in XATTRS]
    assert await ops.listxattr(ROOT_INODE, CTX) == []
    torrent = session.torrents[mi.info_hash]
    torrent.have.clear(1)  # a.bin spans pieces 0-2
    values = {n: await ops.getxattr(a.st_ino, f"user.torrentfs.{n}".encode(), CTX) for n in XATTRS}
    assert values["infohash"] == mi.info_hash.hex().encode()
    assert values["progress"] == b"0.6667"
    assert values["peers"] == b"2"
    assert values["download_rate"] == b"0"
    assert values["magnet"].startswith(b"magnet:?xt=urn:btih:" + mi.info_hash.hex().encode())
    assert values["status"] == b"downloading"
    assert await ops.getxattr(top.st_ino, b"user.torrentfs.progress", CTX) == b"0.6667"
    assert await fuse_errno(ops.getxattr(a.st_ino, b"user.other", CTX)) == pyfuse3.ENOATTR
    # Namespaces torrentfs has none of: ENOTSUP, so ls -l stops asking (even for a bad inode).
    for name in (b"security.selinux", b"system.posix_acl_access", b"trusted.x"):
        assert await fuse_errno(ops.getxattr(a.st_ino, name, CTX)) == errno.EOPNOTSUPP
        assert await fuse_errno(ops.getxattr(999_999, name, CTX)) == errno.EOPNOTSUPP
    assert await fuse_errno(ops.getxattr(ROOT_INODE, b"user.torrentfs.peers", CTX)) == (
        pyfuse3.ENOATTR
    )


async def test_placeholder_for_a_magnet(env: tuple[FsOperations, FakeSession, Metainfo]) -> None:
    ops, _, _ = env
    ih = bytes(range(20))
    ops.add_placeholder(ih, "Some Show", "magnet:?xt=urn:btih:" + ih.hex())
    node = await ops.lookup(ROOT_INODE, b"Some Show", CTX)
    assert node.st_mode == 0o40555
    assert await listing(ops, node.st_ino) == []
    assert await ops.getxattr(node.st_ino, b"user.torrentfs.status", CTX) == (b"fetching metadata")
    assert await ops.getxattr(node.st_ino, b"user.torrentfs.magnet", CTX) == (
        b"magnet:?xt=urn:btih:" + ih.hex().encode()
    )
    assert await ops.getxattr(node.st_ino, b"user.torrentfs.progress", CTX) == b"0"


async def test_a_magnet_fills_in_and_waiting_lookups_resume(
    env: tuple[FsOperations, FakeSession, Metainfo], autojump_clock: Any
) -> None:
    ops, _, metainfo = env
    ih = metainfo.info_hash
    ops.remove_torrent(ih)
    ops.add_placeholder(ih, "Magnetic", "magnet:?xt=urn:btih:" + ih.hex())
    top = await ops.lookup(ROOT_INODE, b"Magnetic", CTX)
    first = metainfo.visible_files()[0].path
    found: list[Any] = []

    async def look() -> None:
        node = top.st_ino
        for part in first:
            found.append(await ops.lookup(node, part.encode(), CTX))
            node = found[-1].st_ino

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
        await trio.sleep(2)  # the lookup waits for the metadata (read timeout: 5 s)
        assert found == []
        ops.fill_magnet(ih, metainfo)
    assert found[-1].st_size == metainfo.visible_files()[0].length
    top_again = await ops.lookup(ROOT_INODE, b"Magnetic", CTX)
    assert top_again.st_ino == top.st_ino  # same directory, filled in place
    assert await ops.getxattr(top.st_ino, b"user.torrentfs.status", CTX) == b"downloading"
    # Without metadata a lookup ends after the read timeout with ENOENT.
    other = bytes(20)
    ops.add_placeholder(other, "Never", "magnet:?xt=urn:btih:" + other.hex())
    never = await ops.lookup(ROOT_INODE, b"Never", CTX)
    assert await fuse_errno(ops.lookup(never.st_ino, b"x", CTX)) == errno.ENOENT
    ops.magnet_failed(other, "v2-only torrent")
    assert await ops.getxattr(never.st_ino, b"user.torrentfs.status", CTX) == (
        b"error: v2-only torrent"
    )


async def test_statfs(env: tuple[FsOperations, FakeSession, Metainfo]) -> None:
    ops, _, _ = env
    st = await ops.statfs(CTX)
    assert st.f_bsize == 4096 and st.f_blocks == (40_100 + 4095) // 4096
    assert st.f_files == 3 + 3 and st.f_bavail == 0 and st.f_namemax == 255
