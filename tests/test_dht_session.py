"""The session's DHT (BEP 5): a tracker-less torrent found and downloaded through our own nodes.

Real sessions on their own 127.0.0.x addresses, a real DHT node as the only bootstrap node, no
tracker, no peer given: the leecher can only learn the seeder from the DHT. Also: the handshake
DHT bit and ``port`` message (BEP 5), `Session.dht_peers`, and no DHT for private torrents
(BEP 27). Waits are hang guards only.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from swarm import make_payload, make_torrent, next_loopback

from torrentfs.engine_cli import add_engine_options, session_config
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.net.dht_node import DEFAULT_BOOTSTRAP, DhtConfig, DhtError, DhtNode
from torrentfs.session import Session, SessionConfig, open_session
from torrentfs.types import PeerAddress

HANG_GUARD = 90.0


@asynccontextmanager
async def session(tmp: Path, bootstrap: DhtNode, **kw: object) -> AsyncIterator[Session]:
    config = SessionConfig(
        download_dir=tmp / "data",
        state_dir=tmp / "state",
        listen_host=next_loopback(),
        listen_port=0,
        dht=True,
        dht_bootstrap=(bootstrap.address,),
        trackers=False,
        **kw,  # type: ignore[arg-type]
    )
    async with open_session(config) as s:
        yield s


@asynccontextmanager
async def router() -> AsyncIterator[DhtNode]:
    async with trio.open_nursery() as nursery:
        node = DhtNode(DhtConfig(host=next_loopback(), query_timeout=2.0))
        await nursery.start(node.run)
        yield node
        nursery.cancel_scope.cancel()


def torrent(tmp: Path, *, private: bool = False) -> tuple[Metainfo, Path]:
    payload = make_payload(tmp / "seed" / "data", 700_000, seed=5)
    tf = make_torrent(payload.root, tmp / "t.torrent", private=private)
    return parse_metainfo(tf.path.read_bytes()), payload.root


async def test_trackerless_download_through_the_dht(tmp_path: Path) -> None:
    metainfo, data = torrent(tmp_path)
    async with router() as r, session(tmp_path / "seed", r) as seeder:
        assert seeder.dht is not None
        assert seeder.dht.address == PeerAddress(
            seeder.config.listen_host or "", seeder.listen_port
        )
        await seeder.add_torrent(metainfo)  # complete data: it seeds and announces itself
        with trio.fail_after(HANG_GUARD):
            while not r.peer_store.get(metainfo.info_hash, trio.current_time(), r._rng):
                await trio.sleep(0.05)
        me = PeerAddress(seeder.config.listen_host or "", seeder.listen_port)
        async with session(tmp_path / "leech", r) as leecher:
            with trio.fail_after(HANG_GUARD):
                assert await leecher.dht_peers(metainfo.info_hash) == [me]
            t = await leecher.add_torrent(metainfo, download_all=True)
            with trio.fail_after(HANG_GUARD):
                await t.wait_complete()
            got = (tmp_path / "leech" / "data" / metainfo.name).read_bytes()
            assert got == data.read_bytes()
            # BEP 5: both set the DHT bit, so each sent a port message: the other's node pinged
            # the address it named.
            assert seeder.dht.statistics().queries_received.get("ping", 0) >= 1
            assert leecher.dht is not None
            assert leecher.dht.table.get(seeder.dht.node_id) is not None


async def test_private_torrent_stays_off_the_dht(tmp_path: Path) -> None:
    metainfo, _ = torrent(tmp_path, private=True)
    async with router() as r, session(tmp_path / "seed", r) as seeder:
        t = await seeder.add_torrent(metainfo)
        assert t.dht is None and not t._our_handshake().supports_dht
        await seeder.add_torrent(parse_metainfo(make_torrent_public(tmp_path)))
        # The public one is announced; the private one never is.
        with trio.fail_after(HANG_GUARD):
            while not len(r.peer_store):
                await trio.sleep(0.05)
        assert r.peer_store.get(metainfo.info_hash, trio.current_time(), r._rng) == []


def make_torrent_public(tmp: Path) -> bytes:
    payload = make_payload(tmp / "seed" / "data", 50_000, seed=6, name="other")
    return make_torrent(payload.root, tmp / "other.torrent").path.read_bytes()


async def test_no_dht_without_the_option(tmp_path: Path) -> None:
    config = SessionConfig(
        download_dir=tmp_path / "d", state_dir=tmp_path / "s", listen_host=next_loopback(),
        listen_port=0, dht=False, trackers=False,
    )  # fmt: skip
    metainfo, _ = torrent(tmp_path)
    async with open_session(config) as s:
        assert s.dht is None
        assert await s.dht_peers(metainfo.info_hash) == []
        t = await s.add_torrent(metainfo)
        assert not t._our_handshake().supports_dht


async def test_read_only_session_node_answers_nothing(tmp_path: Path) -> None:
    async with router() as r, session(tmp_path / "ro", r, dht_read_only=True) as s:
        assert s.dht is not None and s.dht.config.read_only
        with trio.fail_after(HANG_GUARD), pytest.raises(DhtError):
            await r.ping(s.dht.address)


def test_engine_options_fill_the_dht_settings() -> None:
    parser = argparse.ArgumentParser()
    add_engine_options(parser)
    args = parser.parse_args([])
    config = session_config(args, Path("/tmp/x"))
    assert config.dht and config.dht_bootstrap == DEFAULT_BOOTSTRAP and config.dht_port is None
    args = parser.parse_args(
        ["--dht-bootstrap", "127.0.0.5:7,[::1]:8", "--dht-port", "9", "--dht-read-only"]
    )
    config = session_config(args, Path("/tmp/x"))
    assert config.dht_bootstrap == (PeerAddress("127.0.0.5", 7), PeerAddress("::1", 8))
    assert config.dht_port == 9 and config.dht_read_only
    none = session_config(parser.parse_args(["--dht-bootstrap", "none", "--no-dht"]), Path("/x"))
    assert none.dht_bootstrap == () and not none.dht
    with pytest.raises(SystemExit):
        parser.parse_args(["--dht-bootstrap", "nohost"])
