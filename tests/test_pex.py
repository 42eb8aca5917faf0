"""PEX (BEP 11): the pure policy (what we send each peer, what we take), and the engine against
python3-libtorrent in both directions (tier 4)."""

from __future__ import annotations

from torrentfs.pex import (
    MAX_ACCEPT_PER_MESSAGE,
    MIN_RECEIVE_INTERVAL,
    PEX_INTERVAL,
    PexBudget,
    PexConnection,
)
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
