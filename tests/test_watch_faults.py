"""Faults of the metainfo folder (issue 7): deleted, replaced or unreadable while watched, and
wall-clock jumps. Real directories and the real watcher; only the target is a recorder."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import figures
import pytest
import trio
from fsutil import torrent_bytes
from test_watch import T1, T2, T3, Target, write_old

from torrentfs.watch import MetainfoWatcher


async def watching_one(tmp_path: Path) -> tuple[Path, Target, MetainfoWatcher]:
    """A folder ``meta`` with one torrent, watched (first pass done)."""
    folder = tmp_path / "meta"
    folder.mkdir()
    write_old(folder / "a.torrent", torrent_bytes(T1))
    target = Target()
    w = MetainfoWatcher(folder, target)
    await w.scan()
    assert target.names() == {"one"}
    return folder, target, w


async def test_deleted_folder_keeps_the_torrents_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, target, w = await watching_one(tmp_path)
    os.rename(folder, tmp_path / "elsewhere")  # the folder is gone from its path
    figures.record("faults injected")
    with caplog.at_level(logging.INFO, logger="torrentfs.watch"):
        for _ in range(5):
            await w.scan()
    assert target.names() == {"one"}  # nothing removed: an unlistable folder changes nothing
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "keeping its 1 torrents" in errors[0].getMessage()
    # A new folder appears at the same path, with other contents: reconciled with it.
    folder.mkdir()
    write_old(folder / "b.torrent", torrent_bytes(T2))
    with caplog.at_level(logging.INFO, logger="torrentfs.watch"):
        await w.scan()
    assert target.names() == {"two"}
    assert any("can be listed again" in r.getMessage() for r in caplog.records)


async def test_unreadable_folder_changes_nothing(tmp_path: Path) -> None:
    folder, target, w = await watching_one(tmp_path)
    # A file where the folder was (ENOTDIR), then the folder back.
    os.rename(folder, tmp_path / "old")
    folder.write_bytes(b"not a directory")
    figures.record("faults injected")
    await w.scan()
    assert target.names() == {"one"}
    folder.unlink()
    os.rename(tmp_path / "old", folder)
    await w.scan()
    assert target.names() == {"one"}
    assert target.log == [("add", "one")]


async def test_replaced_folder_is_watched_by_inotify_again(tmp_path: Path) -> None:
    """After ``rm -r meta; mkdir meta`` a new file is seen by inotify, not only by the rescan."""
    folder = tmp_path / "meta"
    folder.mkdir()
    target = Target()
    w = MetainfoWatcher(folder, target, rescan=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)
        os.rmdir(folder)
        folder.mkdir()
        figures.record("faults injected")
        # Let one rescan notice the new directory and re-arm the watch, then slow the rescans
        # down so that only inotify can deliver the next change quickly.
        passes = w.passes
        with trio.fail_after(30):
            while w.passes < passes + 2:
                await trio.sleep(0.1)
        w.rescan = 3600
        w.wake()  # the pass now sleeping with rescan=0.5 ends; the next one waits 3600 s
        await trio.sleep(1.0)
        write_old(folder / "new.torrent", torrent_bytes(T3))
        with trio.fail_after(30):
            while "three" not in target.names():
                await target.changed.wait()
                target.changed = trio.Event()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("jump", [-3600.0, -86400.0 * 365, 86400.0])
async def test_wall_clock_jumps_do_not_stall_settling(tmp_path: Path, jump: float) -> None:
    """A new file settles after ``settle`` seconds of real (monotonic) time, whatever the wall
    clock does between passes (NTP step, a wrong RTC fixed at boot...)."""
    offset = 0.0
    target = Target()
    w = MetainfoWatcher(tmp_path, target, settle=0.3, wall_clock=lambda: time.time() + offset)
    await w.scan()
    (tmp_path / "new.torrent").write_bytes(torrent_bytes(T1))  # fresh: must settle first
    assert await w.scan()  # pending
    offset = jump
    figures.record("faults injected")
    deadline = trio.current_time() + 10
    while "one" not in target.names():
        assert trio.current_time() < deadline, f"never settled after a {jump:+g} s clock jump"
        await trio.sleep(0.1)
        await w.scan()
