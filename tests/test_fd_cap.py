"""Open files stay bounded across torrents: the process-wide descriptor LRU (storage `FdCache`).

Each `FileStore` keeps at most 64 data files open, but a mount with a thousand torrents would
still hold a thousand descriptors (and run into ``RLIMIT_NOFILE`` next to its sockets) without
a cap over all of them. These tests drive many stores at once -- in-process, and a real mount
with 1,000 torrents whose files are all read -- and count the descriptors actually open (the
cache's own count, and ``/proc/PID/fd`` links into the download dir), every byte compared.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
from pathlib import Path
from typing import Any

import figures
import pytest
import test_mount
import trio
from test_mount import TorrentfsMount, wait_for

from torrentfs.errors import StorageError
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.storage.files import MAX_OPEN_FILES, FdCache, FileStore

mount_factory = test_mount.mount_factory  # the fixture, shared

PIECE = 16384


def small_torrent(name: str, data: bytes) -> Metainfo:
    pieces = b"".join(
        hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)
    )
    info = {b"name": name.encode(), b"piece length": PIECE, b"pieces": pieces, b"length": len(data)}
    from torrentfs import bencode

    return parse_metainfo(bencode.encode({b"info": info}))


def data_fds(pid: int | str, root: Path) -> int:
    """Descriptors of process `pid` open on files under `root`."""
    count = 0
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            if os.readlink(f"{base}/{fd}").startswith(str(root) + "/"):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


async def test_a_thousand_stores_share_one_bounded_lru(tmp_path: Path) -> None:
    cache = FdCache(max_open=32)
    rng = random.Random(5)
    contents = [rng.randbytes(PIECE + 100) for _ in range(1000)]
    stores = [
        FileStore(tmp_path, small_torrent(f"t{i:04d}", contents[i]), fd_cache=cache)
        for i in range(1000)
    ]
    for i, store in enumerate(stores):
        await store.write_piece(0, contents[i][:PIECE])
        await store.write_piece(1, contents[i][PIECE:])
        assert cache.open_count() <= 32
    peak_in_use = 0
    verified = 0

    async def reader(order: list[int]) -> None:
        nonlocal peak_in_use, verified
        for i in order:
            assert await stores[i].read_range(0, len(contents[i])) == contents[i]
            verified += len(contents[i])
            peak_in_use = max(peak_in_use, cache.open_count())

    # Eight concurrent readers (worker threads): a handle in use may pass the cap, only that.
    async with trio.open_nursery() as nursery:
        for k in range(8):
            order = list(range(1000))
            random.Random(k).shuffle(order)
            nursery.start_soon(reader, order)
    assert peak_in_use <= 32 + 8, peak_in_use
    assert cache.open_count() <= 32
    assert data_fds("self", tmp_path) == cache.open_count()
    for store in stores:
        await store.sync()  # evicted dirty handles were synced on close: nothing is missed
        await store.aclose()
    assert cache.open_count() == 0 and data_fds("self", tmp_path) == 0
    figures.record("bytes verified", verified)
    print(f"1,000 stores, 8 readers: at most {peak_in_use} descriptors open (cap 32)")


async def test_the_process_cache_is_the_default_and_per_store_cap_still_holds(
    tmp_path: Path,
) -> None:
    files = [(f"f{i}", 100) for i in range(10)]
    data = random.Random(1).randbytes(1000)
    info = {
        b"name": b"multi",
        b"piece length": PIECE,
        b"pieces": hashlib.sha1(data).digest(),
        b"files": [{b"length": n, b"path": [p.encode()]} for p, n in files],
    }
    from torrentfs import bencode

    m = parse_metainfo(bencode.encode({b"info": info}))
    a = FileStore(tmp_path / "a", m, max_open_files=3)
    b = FileStore(tmp_path / "b", m, max_open_files=3)
    assert a._fd_cache is b._fd_cache and a._fd_cache.max_open == MAX_OPEN_FILES
    await a.write_piece(0, data)
    await b.write_piece(0, data)
    assert a.open_file_count() <= 3 and b.open_file_count() <= 3
    assert await a.read_range(0, 1000) == data == await b.read_range(0, 1000)
    await a.aclose()
    await b.aclose()


async def test_evicting_another_torrents_dirty_file_keeps_its_sync_honest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dirty handle closed to make room for another torrent is fdatasync'd first; when that
    fails, the owner's next sync() fails (sticky), not the torrent that caused the eviction."""
    cache = FdCache(max_open=1)
    data = [random.Random(i).randbytes(PIECE) for i in range(2)]
    first = FileStore(tmp_path, small_torrent("first", data[0]), fd_cache=cache)
    second = FileStore(tmp_path, small_torrent("second", data[1]), fd_cache=cache)
    await first.write_piece(0, data[0])
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    await second.write_piece(0, data[1])  # evicts first's dirty handle: its fdatasync fails
    monkeypatch.setattr(os, "fdatasync", real)
    assert cache.open_count() == 1 and first.open_file_count() == 0
    await second.sync()
    with pytest.raises(StorageError, match="earlier write-back failed"):
        await first.sync()
    await first.aclose()
    await second.aclose()


@pytest.mark.mount
def test_a_mount_reading_a_thousand_torrents_keeps_files_open_bounded(
    tmp_path: Path, mount_factory: Any
) -> None:
    """1,000 complete torrents (found by recheck), every file read through the mount by 8
    threads: the mount process never has more than `MAX_OPEN_FILES` data files open (plus one
    per worker thread busy at that moment), sampled all along."""
    from torrentfs.create import make_torrent as make

    src = tmp_path / "one.bin"
    payload = os.urandom(40_000)
    src.write_bytes(payload)
    m: TorrentfsMount = mount_factory("--read-timeout", "30", "--cache-size", "1G")
    m.stop()
    names = [f"t{i:04d}.bin" for i in range(1000)]
    for name in names:
        data, _ = make(src, name=name, trackers=["http://127.0.0.1:9/announce"])
        (m.metainfo_dir / name.replace(".bin", ".torrent")).write_bytes(data)
        shutil.copyfile(src, m.download_dir / name)
    m.start()
    assert m.proc is not None
    pid = m.proc.pid
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], data_fds(pid, m.download_dir))
            except OSError:
                return  # the process is gone: the test fails on its own below
            stop.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        wait_for("1,000 entries", lambda: len(os.listdir(m.mountpoint)) == 1000, 300)
        wrong: list[str] = []

        def read_all(k: int) -> None:
            order = list(names)
            random.Random(k).shuffle(order)
            for name in order:
                if (m.mountpoint / name).read_bytes() != payload:
                    wrong.append(name)

        readers = [threading.Thread(target=read_all, args=(k,)) for k in range(8)]
        for r in readers:
            r.start()
        for r in readers:
            r.join(600)
            assert not r.is_alive(), "a reader is stuck"
        assert not wrong, wrong[:5]
    finally:
        stop.set()
        sampler.join()
    assert m.proc.poll() is None, m.log()
    figures.record("bytes verified", 8 * 1000 * len(payload))
    print(f"1,000 torrents read by 8 threads: at most {peak[0]} data files open at once")
    assert 0 < peak[0] <= MAX_OPEN_FILES + 40, peak[0]  # + trio's 40 worker threads at most
