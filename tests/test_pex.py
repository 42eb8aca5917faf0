"""PEX (BEP 11): the pure policy (what we send each peer, what we take), and the engine against
python3-libtorrent in both directions (tier 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from swarm import PeerFactory, make_payload, make_torrent

from torrentfs.bencode import encode
from torrentfs.metainfo import parse_metainfo
from torrentfs.pex import (
    MAX_ACCEPT_PER_MESSAGE,
    MIN_RECEIVE_INTERVAL,
    PEX_INTERVAL,
    PexBudget,
    PexConnection,
)
from torrentfs.session import SessionConfig, open_session
from torrentfs.types import PeerAddress
from torrentfs.wire import ut_pex
from torrentfs.wire.ut_pex import MAX_SEND, PexMessage, PexPeer


def _addrs(n: int, base: int = 0, port: int = 6881) -> list[PeerAddress]:
    return [PeerAddress(f"10.0.{(base + i) // 250}.{(base + i) % 250 + 1}", port) for i in range(n)]


# --------------------------------------------------------------------------- sending


def test_first_message_at_once_then_at_most_once_a_minute() -> None:
    c = PexConnection()
    a, b = _addrs(2)
    msg = c.outgoing({a: ut_pex.FLAG_REACHABLE}, now=100.0)
    assert msg == PexMessage((PexPeer(a, ut_pex.FLAG_REACHABLE),), ())
    assert c.outgoing({a: 0, b: 0}, now=100.0 + PEX_INTERVAL - 0.1) is None
    msg = c.outgoing({a: 0, b: 0}, now=100.0 + PEX_INTERVAL)
    assert msg == PexMessage((PexPeer(b, 0),), ())


def test_nothing_changed_sends_nothing_and_keeps_the_slot() -> None:
    c = PexConnection()
    a, b = _addrs(2)
    assert c.outgoing({a: 0}, now=0.0) is not None
    assert c.outgoing({a: 0}, now=200.0) is None
    # the slot was not used: a change right after is sent at once
    assert c.outgoing({a: 0, b: 0}, now=200.5) == PexMessage((PexPeer(b, 0),), ())


def test_dropped_peers_are_reported_once() -> None:
    c = PexConnection()
    a, b = _addrs(2)
    c.outgoing({a: 0, b: 0}, now=0.0)
    assert c.outgoing({b: 0}, now=60.0) == PexMessage((), (a,))
    assert c.outgoing({b: 0}, now=120.0) is None
    assert c.outgoing({a: 0, b: 0}, now=180.0) == PexMessage((PexPeer(a, 0),), ())


def test_at_most_fifty_added_and_fifty_dropped_per_message_rest_later() -> None:
    c = PexConnection()
    first = _addrs(120)
    m1 = c.outgoing(dict.fromkeys(first, 0), now=0.0)
    assert m1 is not None and len(m1.added) == MAX_SEND
    m2 = c.outgoing(dict.fromkeys(first, 0), now=60.0)
    m3 = c.outgoing(dict.fromkeys(first, 0), now=120.0)
    assert m2 is not None and m3 is not None
    assert len(m2.added) == MAX_SEND and len(m3.added) == 20
    told = {p.address for m in (m1, m2, m3) for p in m.added}
    assert told == set(first)
    m4 = c.outgoing({}, now=180.0)
    assert m4 is not None and len(m4.dropped) == MAX_SEND and not m4.added
    for m in (m1, m2, m3, m4):
        ut_pex.encode(m)  # within BEP 11's limits: the codec accepts it


def test_ipv6_peers_travel_in_added6() -> None:
    c = PexConnection()
    v6 = PeerAddress("2001:db8::7", 51413)
    v4 = PeerAddress("192.0.2.1", 6881)
    msg = c.outgoing({v6: ut_pex.FLAG_SEED, v4: 0}, now=0.0)
    assert msg is not None
    decoded = ut_pex.decode(ut_pex.encode(msg))
    assert set(decoded.added) == {PexPeer(v6, ut_pex.FLAG_SEED), PexPeer(v4, 0)}
    assert c.outgoing({v4: 0}, now=60.0) == PexMessage((), (v6,))


# --------------------------------------------------------------------------- receiving


def test_floods_are_ignored_and_each_message_is_capped() -> None:
    c = PexConnection()
    many = PexMessage(tuple(PexPeer(a) for a in _addrs(150)))
    got = c.accept(many, now=10.0)
    assert got == _addrs(MAX_ACCEPT_PER_MESSAGE)
    assert c.accept(many, now=10.0 + MIN_RECEIVE_INTERVAL - 1) == []
    assert len(c.accept(many, now=10.0 + MIN_RECEIVE_INTERVAL)) == MAX_ACCEPT_PER_MESSAGE


def test_budget_caps_what_one_torrent_learns_from_pex() -> None:
    budget = PexBudget(limit=120)
    got = budget.admit(_addrs(50))
    assert len(got) == 50
    assert budget.admit(_addrs(50)) == []  # seen before: nothing new
    got = budget.admit(_addrs(100, base=50))
    assert got == _addrs(70, base=50)
    assert budget.admit(_addrs(10, base=500)) == []


# --------------------------------------------------------------------------- with libtorrent

MiB = 1 << 20


def _session_config(tmp: Path) -> SessionConfig:
    return SessionConfig(
        download_dir=tmp / "dl", state_dir=tmp / "state", listen_host="127.0.0.1",
        listen_port=0, trackers=False,
    )  # fmt: skip


@pytest.mark.interop
async def test_a_peer_learned_only_through_pex_is_connected_and_used(
    tmp_path: Path, lt_seeder_factory: PeerFactory, lt_leecher_factory: PeerFactory
) -> None:
    """We know only A, a libtorrent leecher that can hardly download (1 KB/s) and is connected
    to seeder B. A's ut_pex names B; we dial B and get the whole torrent from it."""
    payload = make_payload(tmp_path / "src", 2 * MiB, name="pex")
    t = make_torrent(payload.root, tmp_path / "pex.torrent")
    # B ignores PEX: otherwise it learns us from A and connects to us itself.
    b = lt_seeder_factory(t, payload.root.parent, tracker_less=True, extra_args=["--no-pex"])
    a = lt_leecher_factory(
        t, tmp_path / "a", tracker_less=True, peers=[b],
        extra_args=["--download-limit", "1000", "--limit-local", "--report-peers"],
    )  # fmt: skip
    a.wait_event("peer", timeout=30)  # A is connected to B
    meta = parse_metainfo(t.path.read_bytes())
    async with open_session(_session_config(tmp_path)) as session:
        torrent = await session.add_torrent(meta, download_all=True)
        torrent.add_peers([PeerAddress(a.host, a.port)], source="test")
        with trio.fail_after(150):  # libtorrent's first PEX comes within seconds, later each 60 s
            await torrent.wait_complete()
        assert PeerAddress(b.host, b.port) in torrent._pex_budget.learned
        data = await torrent.read(0, meta.total_size, timeout=10)
    assert data == payload.root.read_bytes()


@pytest.mark.interop
async def test_libtorrent_learns_a_peer_from_our_pex(
    tmp_path: Path, lt_seeder_factory: PeerFactory, lt_leecher_factory: PeerFactory
) -> None:
    """We are connected to seeder Y (told to us directly) and leecher X connects to us: our
    ut_pex tells X about Y, and X connects to Y because of it (libtorrent's peer source 'pex')."""
    payload = make_payload(tmp_path / "src", 4 * MiB, name="ours")
    t = make_torrent(payload.root, tmp_path / "ours.torrent")
    y = lt_seeder_factory(t, payload.root.parent, tracker_less=True, extra_args=["--no-pex"])
    meta = parse_metainfo(t.path.read_bytes())
    async with open_session(_session_config(tmp_path)) as session:
        torrent = await session.add_torrent(meta)
        torrent.add_peers([PeerAddress(y.host, y.port)], source="test")
        # Want one piece: we connect to Y and stay a leecher (connected) while X arrives.
        # Under load one dial can fail (handshake timeout): the next one comes 30 s later and
        # the third 60 s after that, so the wait covers three dials, not one.
        assert len(await torrent.read(0, 10, timeout=150)) == 10
        x = lt_leecher_factory(
            t, tmp_path / "x", tracker_less=True, peers=[("127.0.0.1", session.listen_port)],
            extra_args=["--download-limit", "100000", "--limit-local", "--report-peers",
                        "--no-recheck"],
        )  # fmt: skip
        # Bounded (hang guard): X's dial to us, our first ut_pex to X, X's dial to Y; any dial
        # libtorrent retries after a failure waits 60 s (min_reconnect_time) -- room for two.
        deadline = trio.current_time() + 240
        while True:
            left = deadline - trio.current_time()
            event = await trio.to_thread.run_sync(x.wait_event, "peer", max(left, 0.1))
            if event["ip"] == y.host and event["port"] == y.port and event["pex"]:
                break


@pytest.mark.parametrize("private", [False, True])
async def test_ut_pex_is_offered_only_for_public_torrents(tmp_path: Path, private: bool) -> None:
    info = {b"name": b"p", b"piece length": 16384, b"length": 5, b"pieces": b"\0" * 20}
    if private:
        info[b"private"] = 1
    meta = parse_metainfo(encode({b"info": info}))
    async with open_session(_session_config(tmp_path)) as session:
        torrent = await session.add_torrent(meta)
        assert torrent._pex_m() == ({} if private else {"ut_pex": 2})
        assert torrent._pex_enabled() is not private
