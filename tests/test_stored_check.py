"""Data found on disk at start: resume state trusted only for unchanged files, the rest hashed
in the torrent's own task while the torrent is already usable (`torrentfs.stored_check`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import trio
import trio.testing
from test_resume import LAYOUT, PIECE, bits, build_torrent, piece_data

from torrentfs.bitfield import Bitfield
from torrentfs.metainfo import Metainfo
from torrentfs.session import SessionConfig, open_session
from torrentfs.storage import FileStore, MemoryStore, ResumeWriter, resume_path
from torrentfs.stored_check import StoredCheck


class FakeTorrent:
    """What `StoredCheck` sees of a torrent: holds, verdicts, waiting readers."""

    def __init__(self, metainfo: Metainfo) -> None:
        self.metainfo = metainfo
        self.held: set[int] = set()
        self.verdicts: list[tuple[int, bool]] = []
        self.waiting: list[int] = []

    def hold_for_check(self, pieces: Iterable[int]) -> None:
        self.held |= set(pieces)

    def stored_pieces_checked(self, pieces: Iterable[int], ok: bool) -> None:
        for piece in pieces:
            assert piece in self.held, piece
            self.held.discard(piece)
            self.verdicts.append((piece, ok))

    def waited_pieces(self) -> Iterable[int]:
        return self.waiting


async def memory_store(m: Metainfo, data: bytes, pieces: Iterable[int]) -> MemoryStore:
    store = MemoryStore(m.piece_length, m.total_size)
    for i in pieces:
        await store.write_piece(i, piece_data(m, data, i))
    return store


async def test_good_pieces_are_found_bad_and_absent_ones_released() -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    store = await memory_store(m, data, [0, 2, 3])
    await store.write_piece(1, bytes(m.piece_size(1)))  # wrong data
    torrent = FakeTorrent(m)
    check = StoredCheck(torrent, store, range(m.num_pieces))
    assert torrent.held == set(range(m.num_pieces))  # held from the start
    await check.run()
    assert dict(torrent.verdicts) == {0: True, 1: False, 2: True, 3: True, 4: False, 5: False}
    assert (check.found, check.hashed, check.trusted) == (3, 4, 0)
    assert not torrent.held and check.done.is_set()


async def test_a_waited_piece_is_hashed_first() -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    store = await memory_store(m, data, range(m.num_pieces))
    torrent = FakeTorrent(m)
    torrent.waiting = [4]
    await StoredCheck(torrent, store, range(m.num_pieces), concurrency=1).run()
    assert [p for p, _ in torrent.verdicts] == [4, 0, 1, 2, 3, 5]


async def test_a_cancelled_check_gives_every_piece_back_unverified() -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    store = await memory_store(m, data, range(m.num_pieces))
    torrent = FakeTorrent(m)
    check = StoredCheck(torrent, store, range(m.num_pieces))
    with trio.CancelScope() as scope:
        scope.cancel()
        await check.run()
    assert sorted(torrent.verdicts) == [(i, False) for i in range(m.num_pieces)]
    assert not torrent.held and check.done.is_set()


async def test_after_a_crash_unchanged_files_are_trusted_and_only_the_rest_is_hashed(
    tmp_path: Path,
) -> None:
    """Pieces 0-5; a: 0-1, b: 1, sub/c: 1-3, d: 4-5. Saved: 0, 4 and 5. Then (the download
    went on, and crashed before the next save) piece 2 was written: sub/c changed. At restart
    pieces 4-5 (d unchanged) are verified at once; 0 (touching only a) is too; 1-3 wait for
    their hash."""
    m, data = build_torrent(LAYOUT, PIECE)
    dl = tmp_path / "dl"
    store = FileStore(dl, m)
    for i in (0, 4, 5):
        await store.write_piece(i, piece_data(m, data, i))
    path = resume_path(tmp_path / "state", m.info_hash)
    writer = ResumeWriter(path, m, dl, bits(m, [0, 4, 5]))
    await writer.flush(store)
    await store.write_piece(2, piece_data(m, data, 2))  # verified after the save: c changes
    c = dl / "t" / "sub" / "c"
    os.utime(c, ns=(os.stat(c).st_atime_ns, os.stat(c).st_mtime_ns + 10**9))
    await store.aclose()
    async with open_session(_config(tmp_path)) as session:
        torrent = await session.add_torrent(m, wait_checked=False)
        check = session.checks[m.info_hash]
        # Usable at once: what resume vouches for is there before any hashing.
        assert {i for i in range(m.num_pieces) if torrent.have[i]} == {0, 4, 5}
        assert check.trusted == 3 and not check.done.is_set()
        assert await session.wait_checked(m.info_hash) is check
        assert torrent.have == bits(m, [0, 2, 4, 5])
        # Read and hashed: 2 and 3 (its bytes share c's one disk block with 2's); 1 lacks b.
        assert (check.hashed, check.found) == (2, 1)
        assert await torrent.read(2 * PIECE, PIECE, timeout=5) == piece_data(m, data, 2)
    # The found piece is recorded at the next save.
    assert await trio.to_thread.run_sync(_claims, path, m, dl) == bits(m, [0, 2, 4, 5])


def _config(tmp_path: Path) -> SessionConfig:
    return SessionConfig(
        download_dir=tmp_path / "dl", state_dir=tmp_path / "state", listen_host="127.0.0.1",
        listen_port=0, trackers=False,
    )  # fmt: skip


def _claims(path: Path, m: Metainfo, root: Path) -> Bitfield:
    from torrentfs.storage.resume import load_resume

    return load_resume(path, m, root)


async def test_an_idle_torrent_with_clean_resume_state_writes_nothing(tmp_path: Path) -> None:
    m, data = build_torrent(LAYOUT, PIECE)
    dl = tmp_path / "dl"
    store = FileStore(dl, m)
    for i in range(m.num_pieces):
        await store.write_piece(i, piece_data(m, data, i))
    path = resume_path(tmp_path / "state", m.info_hash)
    await ResumeWriter(path, m, dl, bits(m, range(m.num_pieces))).flush(store)
    await store.aclose()
    before = os.stat(path).st_mtime_ns
    async with open_session(_config(tmp_path)) as session:
        torrent = await session.add_torrent(m)
        assert torrent.complete
        check = await session.wait_checked(m.info_hash)
        assert check is not None and check.hashed == 0
    assert os.stat(path).st_mtime_ns == before  # not rewritten (nor fsync'd) at start or stop
