"""FileStore / MemoryStore: layout, sparse files, spanning pieces, pads, symlink escapes, caps."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import fastbencode
import pytest

from torrentfs.errors import StorageError
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.storage import FileStore, MemoryStore, Presence, StoreClosed, UnsafePath
from torrentfs.storage.files import storage_components

# -- helpers --------------------------------------------------------------------------------

PAD = "<pad>"


def build_torrent(
    files: list[tuple[str, int]],
    piece_length: int,
    *,
    name: str = "t",
    single: bool = False,
    seed: int = 1,
    zero: bool = False,
) -> tuple[Metainfo, bytes]:
    """A real parsed torrent and its concatenated data; ``(PAD, n)`` entries are BEP 47 pads."""
    rng = random.Random(seed)
    data = bytearray()
    entries = []
    for path, length in files:
        if path == PAD:
            data += bytes(length)
            entries.append({b"length": length, b"path": [b".pad", b"%d" % length], b"attr": b"p"})
        else:
            data += bytes(length) if zero else rng.randbytes(length)
            entries.append({b"length": length, b"path": [p.encode() for p in path.split("/")]})
    pieces = b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )
    info: dict[bytes, object] = {
        b"name": name.encode(),
        b"piece length": piece_length,
        b"pieces": pieces,
    }
    if single:
        info[b"length"] = len(data)
    else:
        info[b"files"] = entries
    return parse_metainfo(fastbencode.bencode({b"info": info})), bytes(data)


def piece_data(m: Metainfo, data: bytes, i: int) -> bytes:
    return data[i * m.piece_length : i * m.piece_length + m.piece_size(i)]


async def write_all(
    store: FileStore | MemoryStore, m: Metainfo, data: bytes, seed: int = 0
) -> None:
    order = list(range(m.num_pieces))
    random.Random(seed).shuffle(order)
    for i in order:
        await store.write_piece(i, piece_data(m, data, i))


# A layout with pads, zero-length files, nesting, and pieces spanning up to 4 files.
LAYOUT = [
    ("a.bin", 5000),
    ("empty1", 0),
    (PAD, 3192),  # a is padded to 8192
    ("dir/b.bin", 100),
    ("dir/c.bin", 7),
    ("dir/sub/empty2", 0),
    ("dir/d.bin", 20000),
    (PAD, 1461),
    ("e.bin", 1),
]


# -- round trips ----------------------------------------------------------------------------


async def test_has_data_files(tmp_path: Path) -> None:
    """What the session asks before a recheck: does any (non-pad) data file exist yet?"""
    m, data = build_torrent(LAYOUT, 8192)
    store = FileStore(tmp_path, m)
    assert not await store.has_data_files()
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / ".pad").mkdir()
    (tmp_path / "t" / ".pad" / "3192").write_bytes(b"")  # a pad file on disk is no data file
    assert not await store.has_data_files()
    await store.write_piece(3, piece_data(m, data, 3))
    assert await store.has_data_files()
    await store.aclose()
    single, _ = build_torrent([("x", 100)], 16384, single=True, name="one")
    assert not await FileStore(tmp_path, single).has_data_files()
    (tmp_path / "one").symlink_to(tmp_path / "t" / "e.bin")  # never followed
    assert not await FileStore(tmp_path, single).has_data_files()


async def test_multi_file_round_trip(tmp_path: Path) -> None:
    m, data = build_torrent(LAYOUT, 4096)
    store = FileStore(tmp_path, m)
    await write_all(store, m, data)
    await store.sync()
    for i in range(m.num_pieces):
        assert await store.read_piece(i) == piece_data(m, data, i)
        assert await store.read(i, 7, 100) == piece_data(m, data, i)[7:107]
    rng = random.Random(3)
    for _ in range(200):
        offset = rng.randrange(m.total_size)
        length = rng.randrange(m.total_size - offset + 1)
        assert await store.read_range(offset, length) == data[offset : offset + length]
    assert await store.read_range(m.total_size, 0) == b""
    await store.aclose()

    top = tmp_path / "t"
    on_disk = sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())
    assert on_disk == [
        "a.bin",
        "dir/b.bin",
        "dir/c.bin",
        "dir/d.bin",
        "dir/sub/empty2",
        "e.bin",
        "empty1",
    ]
    for entry in m.files:
        if entry.pad:
            continue
        path = store.file_path(entry.index)
        assert path == top.joinpath(*entry.path)
        assert path.read_bytes() == data[entry.offset : entry.offset + entry.length]
    assert not (top / ".pad").exists()  # pad files are never created


async def test_single_file_layout(tmp_path: Path) -> None:
    m, data = build_torrent([("ignored", 70000)], 16384, name="movie.mkv", single=True)
    assert not m.multi_file
    store = FileStore(tmp_path, m)
    await write_all(store, m, data)
    await store.aclose()
    assert sorted(os.listdir(tmp_path)) == ["movie.mkv"]
    assert (tmp_path / "movie.mkv").read_bytes() == data


async def test_files_are_sparse_and_sized_on_first_write(tmp_path: Path) -> None:
    size = 8 * 1024 * 1024
    m, data = build_torrent([("big", size)], 65536, zero=True)
    store = FileStore(tmp_path, m)
    await store.write_piece(5, piece_data(m, data, 5))
    await store.sync()
    st = os.stat(tmp_path / "t" / "big")
    assert st.st_size == size  # final size at once
    assert st.st_blocks * 512 < size // 4  # but only the written piece occupies disk
    assert await store.piece_presence(5) is Presence.DATA
    assert await store.piece_presence(6) is Presence.HOLE
    await store.aclose()


async def test_piece_spanning_many_files(tmp_path: Path) -> None:
    layout = [("x/1", 3), ("x/2", 0), ("x/3", 5), ("x/4", 1), ("x/5", 20)]
    m, data = build_torrent(layout, 16)
    assert len(m.geometry.piece_file_slices(0)) == 4
    store = FileStore(tmp_path, m)
    await store.write_piece(0, piece_data(m, data, 0))
    assert await store.read_piece(0) == data[:16]
    assert (tmp_path / "t" / "x" / "1").read_bytes() == data[:3]
    assert (tmp_path / "t" / "x" / "2").read_bytes() == b""
    assert (tmp_path / "t" / "x" / "4").read_bytes() == data[8:9]
    # file 5 is sized in full, holding only its first 7 bytes so far
    assert (tmp_path / "t" / "x" / "5").read_bytes() == data[9:16] + bytes(13)
    await store.aclose()


async def test_pad_regions_read_as_zeros_without_files(tmp_path: Path) -> None:
    m, data = build_torrent([("a", 10), (PAD, 6), ("b", 16)], 16)
    store = FileStore(tmp_path, m)
    await write_all(store, m, data)
    assert await store.read_range(10, 6) == bytes(6)
    assert await store.read_range(8, 10) == data[8:18]
    assert sorted(os.listdir(tmp_path / "t")) == ["a", "b"]
    await store.aclose()


async def test_cap_of_two_open_files_with_many_files(tmp_path: Path) -> None:
    layout = [(f"f{i:02}", 1 + (i * 37) % 50) for i in range(40)]
    m, data = build_torrent(layout, 64)
    store = FileStore(tmp_path, m, max_open_files=2)
    await write_all(store, m, data)
    assert store.open_file_count() <= 2
    await store.sync()
    for i in reversed(range(m.num_pieces)):
        assert await store.read_piece(i) == piece_data(m, data, i)
        assert store.open_file_count() <= 2
    assert await store.read_range(0, m.total_size) == data
    await store.aclose()
    for entry in m.files:
        assert (tmp_path / "t" / entry.path[0]).read_bytes() == data[
            entry.offset : entry.offset + entry.length
        ]


async def test_reading_a_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    m, _ = build_torrent(LAYOUT, 4096)
    store = FileStore(tmp_path, m)
    with pytest.raises(StorageError) as info:
        await store.read_piece(0)
    assert info.value.errno == errno.ENOENT
    assert not (tmp_path / "t").exists()  # reads never create anything
    assert await store.piece_presence(0) is Presence.ABSENT
    await store.aclose()


async def test_truncated_file_short_read_is_a_storage_error(tmp_path: Path) -> None:
    m, data = build_torrent([("a", 100)], 64)
    store = FileStore(tmp_path, m)
    await write_all(store, m, data)
    os.truncate(tmp_path / "t" / "a", 70)
    with pytest.raises(StorageError) as info:
        await store.read_piece(1)
    assert info.value.errno == errno.EIO
    assert await store.piece_presence(1) is Presence.ABSENT
    assert await store.piece_presence(0) is Presence.DATA
    await store.aclose()


async def test_existing_data_is_reused_not_truncated(tmp_path: Path) -> None:
    m, data = build_torrent(LAYOUT, 4096)
    first = FileStore(tmp_path, m)
    await write_all(first, m, data)
    await first.aclose()
    second = FileStore(tmp_path, m)
    await second.write_piece(0, piece_data(m, data, 0))
    assert await second.read_range(0, m.total_size) == data
    await second.aclose()


async def test_evict_piece_punches_a_hole_and_keeps_neighbours(tmp_path: Path) -> None:
    m, data = build_torrent([("a", 4096 * 6)], 4096 * 2)
    store = FileStore(tmp_path, m)
    await write_all(store, m, data)
    await store.sync()
    await store.evict_piece(1)
    assert await store.read_piece(0) == piece_data(m, data, 0)
    assert await store.read_piece(2) == piece_data(m, data, 2)
    assert await store.read_piece(1) == bytes(m.piece_length)
    assert await store.piece_presence(1) is Presence.HOLE
    await store.aclose()


async def test_sync_failure_is_sticky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, data = build_torrent([("a", 100)], 64)
    store = FileStore(tmp_path, m)
    await store.write_piece(0, piece_data(m, data, 0))
    real = os.fdatasync
    calls = 0

    def failing(fd: int) -> None:
        nonlocal calls
        calls += 1
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(StorageError) as info:
        await store.sync()
    assert info.value.errno == errno.EIO
    monkeypatch.setattr(os, "fdatasync", real)
    # Linux reports a write-back error only once: the store must keep refusing.
    with pytest.raises(StorageError) as info:
        await store.sync()
    assert info.value.errno == errno.EIO
    assert calls == 1
    await store.aclose()


async def test_closed_store_refuses_io(tmp_path: Path) -> None:
    m, data = build_torrent([("a", 100)], 64)
    store = FileStore(tmp_path, m)
    await store.write_piece(0, piece_data(m, data, 0))
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreClosed):
        await store.read_piece(0)
    with pytest.raises(StoreClosed):
        await store.sync()


async def test_bad_arguments_are_bugs(tmp_path: Path) -> None:
    m, _ = build_torrent([("a", 100)], 64)
    store = FileStore(tmp_path, m)
    with pytest.raises(ValueError):
        await store.write_piece(0, b"short")
    with pytest.raises(IndexError):
        await store.write_piece(2, b"")
    with pytest.raises(ValueError):
        await store.read(1, 30, 10)
    with pytest.raises(ValueError):
        await store.read_range(90, 11)
    await store.aclose()


# -- never outside root -----------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


async def assert_refused(store: FileStore, m: Metainfo, data: bytes) -> None:
    with pytest.raises(UnsafePath):
        await write_all(store, m, data)


async def test_symlinked_torrent_dir_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "t").symlink_to(outside)
    m, data = build_torrent(LAYOUT, 4096)
    store = FileStore(root, m)
    await assert_refused(store, m, data)
    with pytest.raises(UnsafePath):
        await store.read_range(0, 10)
    await store.aclose()
    assert list(outside.iterdir()) == []


async def test_symlinked_subdir_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    (root / "t").mkdir(parents=True)
    (root / "t" / "dir").symlink_to(outside)
    m, data = build_torrent([("dir/x", 50)], 64)
    store = FileStore(root, m)
    await assert_refused(store, m, data)
    await store.aclose()
    assert list(outside.iterdir()) == []


async def test_symlinked_data_file_is_refused(tmp_path: Path, outside: Path) -> None:
    victim = outside / "victim"
    victim.write_bytes(b"precious")
    root = tmp_path / "root"
    (root / "t").mkdir(parents=True)
    (root / "t" / "x").symlink_to(victim)
    m, data = build_torrent([("x", 50)], 64)
    store = FileStore(root, m)
    await assert_refused(store, m, data)
    with pytest.raises(UnsafePath):
        await store.read_piece(0)
    await store.aclose()
    assert victim.read_bytes() == b"precious"


async def test_dangling_symlink_is_not_followed_to_create(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    (root / "t").mkdir(parents=True)
    (root / "t" / "x").symlink_to(outside / "created")
    m, data = build_torrent([("x", 50)], 64)
    store = FileStore(root, m)
    await assert_refused(store, m, data)
    await store.aclose()
    assert list(outside.iterdir()) == []


async def test_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    os.mkfifo(tmp_path / "t" / "x")
    m, data = build_torrent([("x", 50)], 64)
    store = FileStore(tmp_path, m)
    await assert_refused(store, m, data)
    await store.aclose()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "t" / "x").st_mode)


def test_unsafe_components_are_refused() -> None:
    m, _ = build_torrent([("x", 50)], 64)
    for bad in ("..", ".", "", "a/b", "a\0b"):
        entry = replace(m.files[0], path=(bad,))
        with pytest.raises(UnsafePath):
            storage_components(m, entry)
    with pytest.raises(UnsafePath):
        storage_components(replace(m, name=".."), m.files[0])


# -- full disk --------------------------------------------------------------------------------

ENOSPC_SCRIPT = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from torrentfs.errors import StorageError
    from torrentfs.storage import FileStore
    from test_storage import build_torrent, piece_data

    async def main():
        m, data = build_torrent([("big", 1024 * 1024)], 16384)
        store = FileStore(Path(sys.argv[1]), m)
        try:
            for i in range(m.num_pieces):
                await store.write_piece(i, piece_data(m, data, i))
            await store.sync()
        except StorageError as exc:
            print("errno", exc.errno)
        else:
            print("no error")
        finally:
            await store.aclose()

    trio.run(main)
    """
)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root")
def test_full_disk_raises_enospc(tmp_path: Path) -> None:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    shell = 'mount -t tmpfs -o size=64k tmpfs "$1" && exec "$2" -c "$3" "$1"'
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            shell,
            "sh",
            str(mountpoint),
            sys.executable,
            ENOSPC_SCRIPT,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["errno", str(errno.ENOSPC)]


# -- MemoryStore ------------------------------------------------------------------------------


async def test_memory_store_round_trip_and_crash_model() -> None:
    m, data = build_torrent(LAYOUT, 4096)
    store = MemoryStore(m.piece_length, m.total_size)
    await write_all(store, m, data)
    assert await store.read_range(0, m.total_size) == data
    assert await store.read(1, 10, 20) == piece_data(m, data, 1)[10:30]
    assert store.durable == frozenset()
    await store.sync()
    assert store.durable == frozenset(range(m.num_pieces))
    await store.evict_piece(0)
    assert await store.piece_presence(0) is Presence.ABSENT
    with pytest.raises(StorageError):
        await store.read_piece(0)
    await store.write_piece(0, piece_data(m, data, 0))
    store.simulate_crash()
    assert store.written == frozenset(range(1, m.num_pieces))
    await store.aclose()
    with pytest.raises(StoreClosed):
        await store.read_piece(1)


# -- write-behind (drop_written) ---------------------------------------------------------------


def record_advice(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int, int]]:
    """Every ``posix_fadvise`` call (the real one still runs): ``(ino, offset, length, advice)``."""
    calls: list[tuple[int, int, int, int]] = []
    real = os.posix_fadvise

    def advise(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((os.fstat(fd).st_ino, offset, length, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", advise)
    return calls


async def test_drop_written_starts_writeback_then_drops_old_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each written file range is advised DONTNEED twice: at once (starts its writeback) and
    once DROP_LAG bytes were written after it (drops its clean pages); never a pad."""
    from torrentfs.storage import files

    monkeypatch.setattr(files, "DROP_LAG", 8192)
    calls = record_advice(monkeypatch)
    m, data = build_torrent(LAYOUT, 4096)
    store = FileStore(tmp_path, m, drop_written=True)
    order = list(range(m.num_pieces))
    random.Random(5).shuffle(order)
    written: list[tuple[int, int, int]] = []  # (ino, offset, length) in write order
    for i in order:
        await store.write_piece(i, piece_data(m, data, i))
        for s in m.geometry.piece_file_slices(i):
            path = store.file_path(s.file_index)
            if path is not None:
                written.append((path.stat().st_ino, s.file_offset, s.length))
    assert all(advice == os.POSIX_FADV_DONTNEED for *_, advice in calls)
    seen = [c[:3] for c in calls]
    assert sorted(set(seen)) == sorted(set(written))
    # The first call for each range precedes the second; only ranges with more than
    # DROP_LAG bytes written after them were dropped.
    dropped = {r for r in written if seen.count(r) == 2}
    tail = 0
    for r in reversed(written):
        assert (r in dropped) == (tail >= 8192)
        tail += r[2]
    await store.sync()
    assert await store.read_range(0, m.total_size) == data  # dropped pages read back from disk
    await store.aclose()


async def test_drop_written_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_advice(monkeypatch)
    m, data = build_torrent(LAYOUT, 4096)
    store = FileStore(tmp_path, m)
    await write_all(store, m, data)
    assert calls == []
    assert await store.read_range(0, m.total_size) == data
    await store.aclose()


async def test_drop_written_skips_closed_handles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one open file at most, old ranges of closed files are not reopened to be dropped."""
    from torrentfs.storage import files

    monkeypatch.setattr(files, "DROP_LAG", 150)
    layout = [(f"f{i:02}", 100) for i in range(10)]
    m, data = build_torrent(layout, 100)
    calls = record_advice(monkeypatch)
    store = FileStore(tmp_path, m, max_open_files=1, drop_written=True)
    for i in range(m.num_pieces):
        await store.write_piece(i, piece_data(m, data, i))
    assert len(calls) == m.num_pieces  # only the writeback starts: every older file was closed
    assert store.open_file_count() <= 1
    assert await store.read_range(0, m.total_size) == data
    await store.aclose()


async def test_drop_lag_is_the_stores_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mount's stores drop pages later (past its readahead): `drop_lag` overrides
    DROP_LAG; below it nothing is dropped, only the writeback is started."""
    calls = record_advice(monkeypatch)
    m, data = build_torrent(LAYOUT, 4096)
    store = FileStore(tmp_path, m, drop_written=True, drop_lag=m.total_size)
    await write_all(store, m, data)
    seen = [c[:3] for c in calls]
    assert seen and len(seen) == len(set(seen))  # each range advised once: nothing dropped
    assert await store.read_range(0, m.total_size) == data
    await store.aclose()


async def test_write_verified_stores_only_a_matching_piece(tmp_path: Path) -> None:
    """Hash and write in one step (the engine's path): a wrong digest writes nothing at all."""
    m, data = build_torrent(LAYOUT, 4096)
    stores: list[FileStore | MemoryStore] = [
        FileStore(tmp_path, m, drop_written=True),
        MemoryStore(m.piece_length, m.total_size),
    ]
    for store in stores:
        for i in range(m.num_pieces):
            bad = bytearray(piece_data(m, data, i))
            bad[-1] ^= 1
            assert not await store.write_verified(i, bad, m.piece_hash(i))
        # Nothing was written: no data file was even created.
        assert await store.pieces_presence(range(m.num_pieces)) == {}
        for i in range(m.num_pieces):
            good = bytearray(piece_data(m, data, i))
            assert await store.write_verified(i, good, m.piece_hash(i))
            good[:] = bytes(len(good))  # the caller reuses its buffer: the store kept a copy
        assert await store.read_range(0, m.total_size) == data
        with pytest.raises(ValueError):
            await store.write_verified(0, bytearray(3), m.piece_hash(0))
        await store.aclose()
