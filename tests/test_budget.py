"""The disk budget in the engine (`torrentfs.budget`): two of our sessions on loopback, one
seeding, one reading through a `cache_size` far smaller than the torrent.

Checked: the download dir's real disk use (``st_blocks``, sampled after every read) never
exceeds the budget plus one piece; evicted pieces are fetched again and read back correctly;
media heads and tails and pinned torrents are kept; the resume state never claims a punched
piece; ``statfs``-style usage figures are the measured ones.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from torrentfs.budget import DiskCache
from torrentfs.create import make_torrent
from torrentfs.eviction import SourcePin, edge_pieces
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.picker import Priority
from torrentfs.session import Session, SessionConfig, open_session
from torrentfs.storage.resume import load_resume, resume_path
from torrentfs.torrent import Torrent
from torrentfs.types import PeerAddress

KiB = 1 << 10
MiB = 1 << 20


def disk_usage(root: Path) -> int:
    """What ``du`` would say: allocated bytes of every file under ``root``."""
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def source(tmp: Path, name: str, size: int, piece_length: int) -> tuple[bytes, Metainfo]:
    data = random.Random(name).randbytes(size)
    path = tmp / "seed" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    torrent, _ = make_torrent(path, piece_length=piece_length)
    return data, parse_metainfo(torrent)


@asynccontextmanager
async def swarm(
    tmp: Path, limit: int | None, pins: tuple[str, ...] = ()
) -> AsyncIterator[tuple[Session, Session]]:
    """A seeding session over ``tmp/seed`` and a budgeted one over ``tmp/cache``."""

    def config(data: str, state: str, **kw: object) -> SessionConfig:
        return SessionConfig(
            download_dir=tmp / data, state_dir=tmp / state, listen_host="127.0.0.1",
            listen_port=0, trackers=False, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    async with (
        open_session(config("seed", "seed-state")) as seeder,
        open_session(
            config("cache", "state", disk_cache=True, cache_size=limit, pins=pins)
        ) as leecher,
    ):
        yield seeder, leecher


async def connect(seeder: Session, leecher: Session, m: Metainfo) -> Torrent:
    seeding = await seeder.add_torrent(m)
    assert seeding.complete
    torrent = await leecher.add_torrent(m)
    torrent.add_peers([PeerAddress("127.0.0.1", seeder.listen_port)])
    return torrent


async def stream(torrent: Torrent, data: bytes, root: Path, chunk: int = 64 * KiB) -> int:
    """Read the whole torrent in order like a player (checking every byte); peak disk use."""
    peak = 0
    want = torrent.new_want()
    for offset in range(0, len(data), chunk):
        want.update(offset, 4 * chunk, priority=Priority.HIGH, deadline=None)
        got = await torrent.read(offset, chunk, timeout=60)
        assert got == data[offset : offset + chunk], offset
        peak = max(peak, disk_usage(root))
    want.drop()
    return peak


def _cache(session: Session) -> DiskCache:
    assert session.cache is not None
    return session.cache


async def test_streaming_stays_within_the_budget_and_evicted_data_comes_back(
    tmp_path: Path,
) -> None:
    piece, size, limit = 32 * KiB, 4 * MiB, 1 * MiB
    data, m = source(tmp_path, "movie.bin", size, piece)
    async with swarm(tmp_path, limit) as (seeder, leecher):
        torrent = await connect(seeder, leecher, m)
        cache = _cache(leecher)
        peak = await stream(torrent, data, tmp_path / "cache")
        print(f"peak {peak / KiB:.0f} KiB of a {limit / KiB:.0f} KiB budget")
        assert 0 < peak <= limit + piece
        assert cache.evicted_pieces >= (size - limit) // piece
        await cache.refresh()
        assert cache.used == disk_usage(tmp_path / "cache") <= limit + piece
        # The start was evicted long ago: reading it fetches it again, verified.
        assert not torrent.have[0]
        downloaded = torrent.downloaded
        assert await torrent.read(0, 100_000, timeout=60) == data[:100_000]
        assert torrent.downloaded > downloaded and torrent.downloaded > size
        kept = set(torrent.have.iter_set())
    # The resume state claims only pieces whose bytes are really there.
    claimed = load_resume(resume_path(tmp_path / "state", m.info_hash), m, tmp_path / "cache")
    assert set(claimed.iter_set()) <= kept
    on_disk = (tmp_path / "cache" / "movie.bin").read_bytes()
    for p in claimed.iter_set():
        chunk = on_disk[p * piece : p * piece + m.piece_size(p)]
        assert hashlib.sha1(chunk).digest() == m.piece_hash(p)


async def test_media_head_and_tail_are_kept(tmp_path: Path) -> None:
    piece, size, limit = 64 * KiB, 8 * MiB, 6 * MiB
    data, m = source(tmp_path, "film.mkv", size, piece)
    edges = edge_pieces(m)
    assert len(edges) * piece == 4 * MiB
    async with swarm(tmp_path, limit) as (seeder, leecher):
        torrent = await connect(seeder, leecher, m)
        peak = await stream(torrent, data, tmp_path / "cache")
        assert peak <= limit + piece
        assert _cache(leecher).evicted_pieces > 0
        assert all(torrent.have[p] for p in edges)


async def test_a_pinned_torrent_is_downloaded_whole_and_never_evicted(tmp_path: Path) -> None:
    piece, limit = 32 * KiB, 2 * MiB
    keep_data, keep = source(tmp_path, "keep.bin", 1 * MiB, piece)
    data, other = source(tmp_path, "other.bin", 4 * MiB, piece)
    async with swarm(tmp_path, limit, pins=("keep.*",)) as (seeder, leecher):
        kept = await connect(seeder, leecher, keep)
        cache = _cache(leecher)
        assert cache.is_pinned(keep.info_hash)
        with trio.fail_after(60):
            await kept.wait_complete()  # pinned: fetched without any reader
        torrent = await connect(seeder, leecher, other)
        peak = await stream(torrent, data, tmp_path / "cache")
        assert peak <= limit + piece
        assert kept.complete  # never evicted, though the budget was tight
        assert cache.evicted_pieces > 0
        # A pin written on the metainfo file works the same way, and can be taken back.
        cache.set_source_pin(other.info_hash, SourcePin(whole=True))
        assert cache.is_pinned(other.info_hash)
        cache.set_source_pin(other.info_hash, None)
        assert not cache.is_pinned(other.info_hash)
        assert await kept.read(0, len(keep_data), timeout=10) == keep_data
