"""The metainfo folder watcher (watch.py): add/replace/remove/rename, settling, bad files."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import trio
from fsutil import make_metainfo, torrent_bytes

from torrentfs.watch import MetainfoItem, MetainfoWatcher, load_file


class Target:
    def __init__(self) -> None:
        self.shown: dict[bytes, MetainfoItem] = {}
        self.log: list[tuple[str, str]] = []
        self.changed = trio.Event()

    async def add(self, item: MetainfoItem) -> None:
        assert item.key not in self.shown
        self.shown[item.key] = item
        self.log.append(("add", item.name))
        self.changed.set()

    async def remove(self, item: MetainfoItem) -> None:
        del self.shown[item.key]
        self.log.append(("remove", item.name))
        self.changed.set()

    def names(self) -> set[str]:
        return {i.name for i in self.shown.values()}


def write_old(path: Path, data: bytes, age: float = 60) -> None:
    """Write a file whose mtime is in the past (a settled file)."""
    path.write_bytes(data)
    old = time.time() - age
    os.utime(path, (old, old))


T1 = make_metainfo("one", length=10, salt="1")
T2 = make_metainfo("two", [("a", 1), ("b/c", 2)], salt="2")
T3 = make_metainfo("three", length=5, salt="3")


async def test_initial_files_then_add_replace_remove(tmp_path: Path) -> None:
    write_old(tmp_path / "a.torrent", torrent_bytes(T1))
    write_old(tmp_path / "b.TORRENT", torrent_bytes(T2))
    write_old(tmp_path / "notes.txt", b"not a torrent")
    target = Target()
    w = MetainfoWatcher(tmp_path, target)
    assert not await w.scan()
    assert target.log == [("add", "one"), ("add", "two")]  # sorted file-name order
    write_old(tmp_path / "a.torrent", torrent_bytes(T3))  # replaced in place
    await w.scan()
    assert target.names() == {"two", "three"}
    (tmp_path / "b.TORRENT").unlink()
    await w.scan()
    assert target.names() == {"three"}
    assert target.log[-1] == ("remove", "two")


async def test_half_written_files_wait_until_they_settle(tmp_path: Path) -> None:
    target = Target()
    w = MetainfoWatcher(tmp_path, target, settle=3600)
    data = torrent_bytes(T1)
    path = tmp_path / "slow.torrent"
    path.write_bytes(data[:10])  # fresh mtime: still being written
    assert await w.scan()
    assert target.log == []
    path.write_bytes(data)
    assert await w.scan()
    assert target.log == []
    old = time.time() - 7200
    os.utime(path, (old, old))  # done long ago now
    assert not await w.scan()
    assert target.names() == {"one"}


async def test_renamed_into_place_is_picked_up_at_once(tmp_path: Path) -> None:
    target = Target()
    w = MetainfoWatcher(tmp_path, target, settle=3600)
    write_old(tmp_path / ".partial.tmp", torrent_bytes(T2), age=7200)
    await w.scan()
    assert target.log == []
    os.rename(tmp_path / ".partial.tmp", tmp_path / "x.torrent")
    await w.scan()
    assert target.names() == {"two"}


async def test_bad_files_are_logged_once_and_affect_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_old(tmp_path / "good.torrent", torrent_bytes(T1))
    write_old(tmp_path / "bad.torrent", b"d4:infod4:name3:abcee")
    write_old(tmp_path / "bad.magnet", b"magnet:?xt=urn:btih:nothex\n")
    target = Target()
    w = MetainfoWatcher(tmp_path, target)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            await w.scan()
    assert target.names() == {"one"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("bad.torrent" in m for m in warnings) and any("bad.magnet" in m for m in warnings)
    # A good torrent turning corrupt drops its torrent; fixed again, it comes back.
    write_old(tmp_path / "good.torrent", b"garbage")
    await w.scan()
    assert target.names() == set()
    write_old(tmp_path / "good.torrent", torrent_bytes(T1), age=30)
    await w.scan()
    assert target.names() == {"one"}


async def test_magnet_files(tmp_path: Path) -> None:
    h1, h2 = "aa" * 20, "bb" * 20
    write_old(
        tmp_path / "list.magnet",
        (
            "# my shows\n\n"
            f"magnet:?xt=urn:btih:{h1}&dn=Show%20One\n"
            f"  magnet:?xt=urn:btih:{h2}  \n"
            f"magnet:?xt=urn:btih:{h1}&dn=dup\n"
        ).encode(),
    )
    target = Target()
    await MetainfoWatcher(tmp_path, target).scan()
    assert target.names() == {"Show One", h2}
    item = target.shown[bytes.fromhex(h2)]
    assert item.magnet is not None and item.uri == f"magnet:?xt=urn:btih:{h2}"


def test_load_file_limits(tmp_path: Path) -> None:
    from torrentfs.errors import TorrentfsError

    p = tmp_path / "empty.magnet"
    p.write_bytes(b"# nothing\n")
    with pytest.raises(TorrentfsError, match="no magnet"):
        load_file(p)
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(TorrentfsError, match="UTF-8"):
        load_file(p)
    with pytest.raises(TorrentfsError, match="cannot read"):
        load_file(tmp_path / "missing.torrent")


async def test_the_same_torrent_in_two_files_is_shown_once(tmp_path: Path) -> None:
    write_old(tmp_path / "a.torrent", torrent_bytes(T1))
    write_old(tmp_path / "b.torrent", torrent_bytes(T1))
    target = Target()
    w = MetainfoWatcher(tmp_path, target)
    await w.scan()
    assert target.log == [("add", "one")]
    (tmp_path / "a.torrent").unlink()
    await w.scan()
    assert target.log == [("add", "one")]


async def test_watchdog_events_wake_the_watcher(tmp_path: Path) -> None:
    target = Target()
    w = MetainfoWatcher(tmp_path, target, rescan=3600)  # only an inotify event can wake it
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)
        passes = w.passes
        write_old(tmp_path / "new.torrent", torrent_bytes(T3))
        with trio.fail_after(30):
            while "three" not in target.names():
                await target.changed.wait()
                target.changed = trio.Event()
        assert w.passes > passes
        nursery.cancel_scope.cancel()


async def test_a_torrent_supersedes_a_magnet_of_the_same_hash(tmp_path: Path) -> None:
    log: list[tuple[str, bool]] = []

    class Upgrades:
        async def add(self, item: MetainfoItem) -> None:
            log.append(("add", item.metainfo is not None))

        async def remove(self, item: MetainfoItem) -> None:
            log.append(("remove", item.metainfo is not None))

    write_old(tmp_path / "z.magnet", f"magnet:?xt=urn:btih:{T1.info_hash.hex()}\n".encode())
    w = MetainfoWatcher(tmp_path, Upgrades())
    await w.scan()
    assert log == [("add", False)]
    write_old(tmp_path / "a.torrent", torrent_bytes(T1))
    await w.scan()
    assert log[-1] == ("add", True)  # the .torrent replaces the magnet (sorts before it too)
    (tmp_path / "a.torrent").unlink()
    await w.scan()
    assert log[-2:] == [("remove", True), ("add", False)]  # back to the magnet
