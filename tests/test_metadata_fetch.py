"""Magnet metadata (BEP 9): the fetcher's policy (pure), scripted peers on loopback, and the
session against python3-libtorrent (fetching from it, serving it ours, restart without refetch).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from peers.metadata_peer import MetadataPeer, corrupted
from swarm import (
    PeerFactory,
    assert_same_tree,
    free_port,
    make_payload,
    make_torrent,
    next_loopback,
)

from torrentfs import bencode
from torrentfs.errors import ProtocolError, ReadTimeout, TorrentRemoved
from torrentfs.magnet import parse_magnet
from torrentfs.metadata_fetch import FetchConfig, MetadataFetcher, MetadataSwarm
from torrentfs.metainfo import parse_metainfo
from torrentfs.session import SessionConfig, open_session
from torrentfs.storage import metadata_cache
from torrentfs.types import PeerAddress
from torrentfs.wire.ut_metadata import METADATA_PIECE_SIZE, MetadataData, MetadataHashMismatch

ROOT = Path(__file__).resolve().parents[1]
A = PeerAddress("127.0.0.2", 6881)
B = PeerAddress("127.0.0.3", 6881)
C = PeerAddress("127.0.0.4", 6881)


def info_dict(size: int = 40_000) -> tuple[bytes, bytes]:
    """A bencoded info dict of about `size` bytes (3 metadata pieces) and its info-hash."""
    pieces = os.urandom(20 * (size // 20))
    info = bencode.encode(
        {b"name": b"x.bin", b"piece length": 16384, b"length": 16384 * (len(pieces) // 20),
         b"pieces": pieces}
    )  # fmt: skip
    return info, hashlib.sha1(info).digest()


def data(info: bytes, piece: int) -> MetadataData:
    chunk = info[piece * METADATA_PIECE_SIZE : (piece + 1) * METADATA_PIECE_SIZE]
    return MetadataData(piece, len(info), chunk)


def feed(swarm: MetadataSwarm, addr: PeerAddress, source: bytes) -> bytes | None:
    """Let `addr` deliver everything it is asked, from `source`."""
    result = None
    while (piece := swarm.pick(addr)) is not None:
        result = swarm.received(addr, data(source, piece))
    return result


# --------------------------------------------------------------------------- policy (pure)


def test_one_peer_delivers_verified_metadata() -> None:
    info, ih = info_dict()
    swarm = MetadataSwarm(ih)
    swarm.add([A], now=0)
    assert swarm.to_dial(0) == [A]
    swarm.ready(A, len(info), 2)
    assert feed(swarm, A, info) == info
    assert swarm.result == info and swarm.good_peers == [A]


def test_pieces_are_shared_between_peers() -> None:
    info, ih = info_dict()
    swarm = MetadataSwarm(ih)
    swarm.add([A, B], now=0)
    swarm.to_dial(0)
    swarm.ready(A, len(info), 2)
    swarm.ready(B, len(info), 2)
    first, second = swarm.pick(A), swarm.pick(B)
    assert first is not None and second is not None and first != second
    assert swarm.received(A, data(info, first)) is None
    assert swarm.received(B, data(info, second)) is None
    assert feed(swarm, A, info) == info
    assert set(swarm.good_peers) == {A, B}


def test_a_lone_liar_is_banned_and_never_dialed_again() -> None:
    info, ih = info_dict()
    swarm = MetadataSwarm(ih)
    swarm.add([A], now=0)
    swarm.to_dial(0)
    swarm.ready(A, len(info), 2)
    with pytest.raises(MetadataHashMismatch) as exc:
        feed(swarm, A, corrupted(info))
    assert exc.value.peers == frozenset({A})
    swarm.gone(A, now=1, ban=True)
    swarm.add([A], now=2)  # a tracker or PEX names it again
    assert swarm.to_dial(1000) == [] and A in swarm.banned


def test_mixed_mismatch_makes_suspects_fetch_alone_then_names_the_liar() -> None:
    info, ih = info_dict()
    swarm = MetadataSwarm(ih)
    swarm.add([A, B], now=0)
    swarm.to_dial(0)
    swarm.ready(A, len(info), 2)  # honest
    swarm.ready(B, len(info), 2)  # liar
    pa, pb = swarm.pick(A), swarm.pick(B)
    assert pa is not None and pb is not None
    at = pb * METADATA_PIECE_SIZE + 7  # the liar's lie is in the piece it delivers
    bad = info[:at] + bytes([info[at] ^ 1]) + info[at + 1 :]
    swarm.received(A, data(info, pa))
    swarm.received(B, data(bad, pb))
    last = swarm.pick(A)
    assert last is not None
    # Both contributed: the culprit is unknown, nobody is banned, both become suspects.
    assert swarm.received(A, data(info, last)) is None
    assert swarm.suspects == {A, B} and not swarm.banned
    # Alone, the liar is proven wrong and the honest peer delivers.
    with pytest.raises(MetadataHashMismatch) as exc:
        feed(swarm, B, bad)
    assert exc.value.peers == frozenset({B})
    assert feed(swarm, A, info) == info and swarm.good_peers == [A]


def test_a_liar_announcing_another_size_does_not_disturb_the_honest_peers() -> None:
    info, ih = info_dict()
    swarm = MetadataSwarm(ih)
    swarm.add([A, B], now=0)
    swarm.to_dial(0)
    swarm.ready(A, len(info), 2)
    fake = os.urandom(len(info) + 100)
    swarm.ready(B, len(fake), 2)
    with pytest.raises(MetadataHashMismatch):
        feed(swarm, B, fake)
    assert feed(swarm, A, info) == info


def test_malformed_data_and_unusable_peers_are_refused() -> None:
    info, ih = info_dict()
    swarm = MetadataSwarm(ih)
    swarm.add([A, B, C], now=0)
    swarm.to_dial(0)
    with pytest.raises(ProtocolError, match="ut_metadata"):
        swarm.ready(A, len(info), None)
    with pytest.raises(ProtocolError, match="no metadata"):
        swarm.ready(B, None, 2)
    with pytest.raises(ProtocolError, match="out of range"):
        swarm.ready(C, 17 * 1024 * 1024, 2)  # beyond the 16 MiB cap
    swarm.ready(A, len(info), 2)
    piece = swarm.pick(A)
    assert piece is not None
    with pytest.raises(ProtocolError, match="total_size"):
        swarm.received(A, MetadataData(piece, len(info) + 1, b"x" * METADATA_PIECE_SIZE))


def test_honest_failures_back_off_and_free_their_pieces() -> None:
    info, ih = info_dict()
    cfg = FetchConfig(max_peers=1, retry_base=5, retry_max=20)
    swarm = MetadataSwarm(ih, cfg)
    swarm.add([A, B], now=0)
    assert len(swarm.to_dial(0)) == 1  # the connection budget
    first = next(iter(swarm.connected))
    swarm.ready(first, len(info), 2)
    piece = swarm.pick(first)
    swarm.gone(first, now=10)  # timed out: its piece goes back to the pool
    delays = []
    for n in range(4):
        assert swarm.to_dial(10 + 100 * n) != []
        swarm.connected.clear()
        swarm.gone(first, now=10 + 100 * n)
        delays.append(swarm.known[first] - (10 + 100 * n))
    assert delays[-1] == 20 and delays == sorted(delays)
    other = B if first == A else A
    swarm.connected = {other}
    swarm.ready(other, len(info), 2)
    assert swarm.pick(other) == piece


# --------------------------------------------------------------------------- scripted peers


async def test_fetcher_drops_a_lying_peer_and_resolves_from_an_honest_one() -> None:
    info, ih = info_dict(100_000)
    liar = MetadataPeer(ih, corrupted(info), host="127.0.0.1")
    honest = MetadataPeer(ih, info, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        await nursery.start(honest.run)
        fetcher = MetadataFetcher(
            ih, peer_id=b"-TF0100-testtesttest", listen_port=1,
            config=FetchConfig(retry_base=0.2, retry_max=0.5),
        )  # fmt: skip
        a, b = PeerAddress("127.0.0.1", liar.port), PeerAddress("127.0.0.1", honest.port)
        fetcher.add_peers([a, b], "test")
        with trio.fail_after(30):
            result = await fetcher.run()
        nursery.cancel_scope.cancel()
    assert result == info
    assert honest.requests > 0
    assert fetcher.good_peers == [b]
    # The liar served at least once; if it was caught it is banned and was dialed only once.
    if liar.requests:
        assert a in fetcher.swarm.banned or a in fetcher.swarm.suspects
        assert liar.connections == 1


async def test_fetcher_bans_a_peer_announcing_an_oversized_dict() -> None:
    info, ih = info_dict()
    bad = MetadataPeer(ih, info, host="127.0.0.1", announced_size=64 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        await nursery.start(bad.run)
        fetcher = MetadataFetcher(
            ih, peer_id=b"-TF0100-testtesttest", listen_port=1,
            config=FetchConfig(retry_base=0.1, retry_max=0.1),
        )  # fmt: skip
        addr = PeerAddress("127.0.0.1", bad.port)
        fetcher.add_peers([addr], "test")
        with trio.move_on_after(2):
            await fetcher.run()
        nursery.cancel_scope.cancel()
    assert addr in fetcher.swarm.banned
    assert bad.connections == 1 and bad.requests == 0


# --------------------------------------------------------------------------- libtorrent interop


def _config(tmp: Path, host: str) -> SessionConfig:
    return SessionConfig(
        download_dir=tmp / "dl", state_dir=tmp / "state", listen_host=host, listen_port=0
    )


@pytest.mark.interop
async def test_magnet_with_x_pe_resolves_from_libtorrent_despite_a_liar(
    tmp_path: Path, lt_seeder_factory: PeerFactory
) -> None:
    payload = make_payload(tmp_path / "src", "multi", seed=3)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent", piece_length=32768)
    seeder = lt_seeder_factory(torrent, payload.root.parent)
    info = parse_metainfo(torrent.path.read_bytes()).info_bytes
    liar = MetadataPeer(torrent.info_hash, corrupted(info), host="127.0.0.1")
    host = next_loopback()
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        sh, sp = seeder.address
        uri = f"{torrent.magnet()}&dn=Magnetic&x.pe=127.0.0.1:{liar.port}&x.pe={sh}:{sp}"
        async with open_session(_config(tmp_path, host)) as session:
            handle = await session.add_magnet(parse_magnet(uri), download_all=True)
            assert handle.state == "fetching metadata" and session.get(torrent.info_hash) is None
            assert await session.add_magnet(parse_magnet(uri)) is handle  # idempotent
            with trio.fail_after(60):
                t = await handle.wait_torrent(timeout=60)
                await t.wait_complete()
            assert handle.state == "ready" and session.get(torrent.info_hash) is t
            assert t.metainfo.info_bytes == info
            assert PeerAddress(sh, sp) in handle.fetcher.good_peers  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
    assert_same_tree(payload, tmp_path / "dl")
    assert metadata_cache.load(tmp_path / "state", torrent.info_hash) == info
    # Restart: the metadata comes from the state dir; no peer is asked.
    async with open_session(_config(tmp_path, host)) as session:
        handle = await session.add_magnet(parse_magnet(f"{torrent.magnet()}&dn=Magnetic"))
        assert handle.from_cache and handle.fetcher is None and handle.state == "ready"
        assert session.get(torrent.info_hash) is handle.torrent
        assert handle.torrent is not None and handle.torrent.complete


@pytest.mark.interop
async def test_libtorrent_resolves_a_magnet_from_our_seeder(
    tmp_path: Path, lt_leecher_factory: PeerFactory
) -> None:
    payload = make_payload(tmp_path / "src", 300_000, seed=5)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent", piece_length=32768)
    host = next_loopback()
    config = SessionConfig(
        download_dir=payload.root.parent, state_dir=tmp_path / "state", listen_host=host,
        listen_port=free_port(host),
    )  # fmt: skip
    async with open_session(config) as session:
        t = await session.add_torrent(parse_metainfo(torrent.path.read_bytes()), recheck=True)
        assert t.complete
        leecher = lt_leecher_factory(
            torrent.magnet(), tmp_path / "lt-out", peers=[(host, session.listen_port)]
        )
        await trio.to_thread.run_sync(lambda: leecher.wait_done(timeout=60))
    assert_same_tree(payload, tmp_path / "lt-out")


async def test_removing_a_magnet_cancels_its_fetch(tmp_path: Path) -> None:
    _, ih = info_dict()
    async with open_session(_config(tmp_path, "127.0.0.1")) as session:
        handle = await session.add_magnet(parse_magnet(f"magnet:?xt=urn:btih:{ih.hex()}"))
        with pytest.raises(ReadTimeout):
            await handle.wait_torrent(timeout=0.2)
        await session.remove_torrent(ih)
        with pytest.raises(TorrentRemoved):
            await handle.wait_torrent(timeout=5)
        assert ih not in session.magnets


@pytest.mark.interop
def test_download_command_takes_a_magnet(tmp_path: Path, lt_seeder_factory: PeerFactory) -> None:
    payload = make_payload(tmp_path / "src", "multi", seed=9)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent", piece_length=32768)
    seeder = lt_seeder_factory(torrent, payload.root.parent)
    magnet_file = tmp_path / "x.magnet"
    magnet_file.write_text(f"# a magnet file\n{torrent.magnet()}&x.pe={seeder.address_text}\n")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torrentfs", "download", str(magnet_file), "-o", str(out),
        "--listen", f"{next_loopback()}:0", "--no-dht", "--state-dir", str(tmp_path / "state"),
        "--json-stats",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["metadata_seconds"] is not None and stats["hash_failures"] == 0
    assert_same_tree(payload, out)
    bad = subprocess.run(
        [sys.executable, "-m", "torrentfs", "download", "magnet:?xt=urn:btih:nothex", "-o",
         str(out)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
