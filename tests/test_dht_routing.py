"""Routing table (BEP 5 k-buckets), and the responder: peer store, rate limits, read-only."""

from __future__ import annotations

import random

import pytest

from torrentfs.dht.krpc import (
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    KrpcError,
    NodeInfo,
    Ping,
    Query,
    Response,
    decode_message,
)
from torrentfs.dht.routing import (
    GOOD_INTERVAL,
    REFRESH_INTERVAL,
    K,
    NodeState,
    PingRequest,
    RoutingTable,
    SavedTableError,
    distance,
)
from torrentfs.dht.server import DhtServer, PeerStore, RateLimiter
from torrentfs.dht.tokens import TokenManager
from torrentfs.types import PeerAddress

OWN = b"\x00" * 20


def nid(prefix: int, rest: int = 0) -> bytes:
    """An id whose first byte is `prefix` (far buckets for large prefixes)."""
    return bytes([prefix]) + rest.to_bytes(19, "big")


def node(i: int, prefix: int = 0x80) -> NodeInfo:
    return NodeInfo(nid(prefix, i), f"10.0.{i // 250}.{i % 250 + 1}", 6881)


def test_distance() -> None:
    assert distance(b"\x00" * 20, b"\x00" * 20) == 0
    assert distance(b"\x80" + b"\x00" * 19, b"\x00" * 20) == 1 << 159


def test_far_bucket_keeps_k_and_caches_replacements() -> None:
    t = RoutingTable(OWN, 0.0)
    for i in range(K):
        assert t.heard_from(node(i), 0.0, responded=True) == []
    assert len(t) == K
    # All good: the newcomer waits in the replacement cache, nobody is pinged.
    assert t.heard_from(node(100), 1.0, responded=True) == []
    assert len(t) == K and t.get(node(100).node_id) is None
    # 15 minutes later they are questionable: the least recently seen one is pinged, once.
    later = GOOD_INTERVAL + 10
    assert t.heard_from(node(101), later, responded=True) == [PingRequest(node(0))]
    assert t.heard_from(node(102), later, responded=True) == []  # one ping at a time
    # node 0 does not answer: it is pinged once more (BEP 5), then replaced by the newest
    # replacement, and the next questionable node is pinged at once.
    assert t.failed(node(0).node_id, later) == [PingRequest(node(0))]
    assert t.get(node(0).node_id) is not None
    assert t.failed(node(0).node_id, later) == [PingRequest(node(1))]
    assert t.get(node(0).node_id) is None
    assert t.get(node(102).node_id) is not None
    # node 1 answers and stays good; the next questionable one is pinged (replacements wait).
    assert t.heard_from(node(1), later + 1, responded=True) == [PingRequest(node(2))]
    assert t.state(node(1).node_id, later + 1) is NodeState.GOOD
    assert t.heard_from(node(103), later + 1, responded=True) == []  # node 2's ping in flight


def test_bad_nodes_replaced_and_excluded() -> None:
    t = RoutingTable(OWN, 0.0)
    for i in range(K):
        t.heard_from(node(i), 0.0, responded=True)
    t.failed(node(3).node_id, 1.0)
    assert t.state(node(3).node_id, 1.0) is NodeState.QUESTIONABLE  # one failure, no spare
    t.failed(node(3).node_id, 2.0)
    assert t.state(node(3).node_id, 2.0) is NodeState.BAD
    assert node(3) not in t.closest(node(3).node_id, 20)
    t.heard_from(node(50), 3.0, responded=False)
    assert t.get(node(3).node_id) is None and t.get(node(50).node_id) is not None


def test_only_own_bucket_splits() -> None:
    t = RoutingTable(OWN, 0.0)
    for i in range(200):
        t.heard_from(node(i, prefix=(i * 37) % 256), 0.0, responded=True)
    buckets = t.buckets
    assert all(len(b.nodes) <= K for b in buckets)
    assert buckets[0].lo == 0 and buckets[-1].hi == 1 << 160
    for i in range(len(buckets) - 1):
        assert buckets[i].hi == buckets[i + 1].lo
    # Every bucket except the deepest pair is the far half of a split toward our id (0).
    for b in buckets[1:]:
        assert b.hi - b.lo == b.lo
    # A far bucket full of good nodes stays at K.
    assert len(buckets[-1].nodes) == K
    assert len(t) > K


def test_closest_orders_by_xor() -> None:
    t = RoutingTable(OWN, 0.0, max_per_ip=None)
    rng = random.Random(7)
    nodes = [NodeInfo(rng.randbytes(20), "10.0.0.1", 1000 + i) for i in range(300)]
    for n in nodes:
        t.heard_from(n, 0.0, responded=True)
    target = rng.randbytes(20)
    got = t.closest(target, 8)
    known = t.nodes()
    assert got == sorted(known, key=lambda n: distance(n.node_id, target))[:8]
    assert len(got) == 8


def test_per_ip_limit_and_address_change() -> None:
    t = RoutingTable(OWN, 0.0)
    a = NodeInfo(nid(0x80, 1), "1.2.3.4", 1000)
    b = NodeInfo(nid(0x40, 1), "1.2.3.4", 1001)
    t.heard_from(a, 0.0, responded=True)
    t.heard_from(b, 0.0, responded=True)
    assert t.nodes() == [a]  # one node per IP in the whole table
    moved = NodeInfo(a.node_id, "5.6.7.8", 1000)
    t.heard_from(moved, 1.0, responded=True)
    assert t.nodes() == [a]  # a known id does not move to another endpoint
    t.remove(a.node_id)
    t.heard_from(b, 2.0, responded=True)
    assert t.nodes() == [b]


def test_rejects_self_bad_ports_and_bep42_when_enforced() -> None:
    t = RoutingTable(OWN, 0.0, enforce_node_id=True)
    t.heard_from(NodeInfo(OWN, "1.1.1.1", 1), 0.0, responded=True)
    t.heard_from(NodeInfo(nid(1), "1.1.1.2", 0), 0.0, responded=True)
    t.heard_from(NodeInfo(nid(1), "not-an-ip", 1), 0.0, responded=True)
    t.heard_from(NodeInfo(nid(1), "8.8.8.8", 1), 0.0, responded=True)  # id not bound to IP
    assert len(t) == 0
    t.heard_from(NodeInfo(nid(1), "192.168.0.5", 1), 0.0, responded=True)  # exempt
    assert len(t) == 1


def test_states() -> None:
    t = RoutingTable(OWN, 0.0)
    t.heard_from(node(1), 0.0, responded=False)  # only queried us: not good yet
    assert t.state(node(1).node_id, 0.0) is NodeState.QUESTIONABLE
    t.heard_from(node(1), 10.0, responded=True)
    assert t.state(node(1).node_id, 10.0) is NodeState.GOOD
    assert t.state(node(1).node_id, 10.0 + GOOD_INTERVAL) is NodeState.QUESTIONABLE
    t.heard_from(node(1), 20.0 + GOOD_INTERVAL, responded=False)  # responded once, queried now
    assert t.state(node(1).node_id, 21.0 + GOOD_INTERVAL) is NodeState.GOOD


def test_refresh_targets() -> None:
    t = RoutingTable(OWN, 0.0)
    for i in range(40):
        t.heard_from(node(i, prefix=i * 6), 0.0, responded=True)
    rng = random.Random(0)
    assert t.refresh_targets(100.0, rng) == []
    targets = t.refresh_targets(REFRESH_INTERVAL + 1, rng)
    assert len(targets) == len(t.buckets)
    for target, bucket in zip(targets, t.buckets, strict=True):
        assert bucket.covers(int.from_bytes(target, "big"))
    assert t.refresh_targets(REFRESH_INTERVAL + 2, rng) == []  # they count as refreshed


def test_save_load_round_trip() -> None:
    t = RoutingTable(OWN, 0.0)
    for i in range(30):
        t.heard_from(node(i, prefix=i * 8), 0.0, responded=True)
    t.heard_from(NodeInfo(nid(0x33, 9), "2001:db8::7", 6881), 0.0, responded=True)
    data = t.save()
    back = RoutingTable.load(data, 100.0)
    assert back.own_id == OWN
    assert sorted(back.nodes(), key=lambda n: n.node_id) == sorted(
        t.nodes(), key=lambda n: n.node_id
    )
    assert all(back.state(n.node_id, 100.0) is NodeState.QUESTIONABLE for n in back.nodes())
    for bad in (b"", b"le", b"d2:id3:abce", b"d2:id20:" + b"a" * 20 + b"5:nodes3:abce"):
        with pytest.raises(SavedTableError):
            RoutingTable.load(bad, 0.0)


# -- server ------------------------------------------------------------------------------------


def make_server(
    own: bytes = OWN, *, read_only: bool = False, limiter: RateLimiter | None = None
) -> DhtServer:
    rng = random.Random(5)
    return DhtServer(
        RoutingTable(own, 0.0),
        TokenManager(rng.randbytes, 0.0),
        rng,
        rate_limiter=limiter,
        read_only=read_only,
    )


SRC = PeerAddress("10.9.9.9", 7000)
H = b"h" * 20


def ask(server: DhtServer, body: object, now: float = 1.0, src: PeerAddress = SRC) -> object:
    q = Query(b"tx", nid(0x01, 5), body)  # type: ignore[arg-type]
    data, _ = server.handle_query(q, src, now)
    assert data is not None
    return decode_message(data)


def test_server_answers_and_learns() -> None:
    s = make_server()
    for i in range(20):
        s.table.heard_from(node(i, prefix=i * 12), 0.0, responded=True)
    r = ask(s, Ping())
    assert r == Response(b"tx", OWN, version=s.version, ip=SRC)
    assert s.table.get(nid(0x01, 5)) is not None  # the querier was added (questionable)
    r = ask(s, FindNode(nid(0x91)))
    assert isinstance(r, Response) and len(r.nodes) == K
    assert list(r.nodes) == s.table.closest(nid(0x91), K)


def test_get_peers_announce_flow() -> None:
    s = make_server()
    r = ask(s, GetPeers(H))
    assert isinstance(r, Response) and r.token and r.values == ()
    ok = ask(s, AnnouncePeer(H, 51413, r.token))
    assert isinstance(ok, Response)
    implied = ask(s, AnnouncePeer(H, 0, r.token, implied_port=True))
    assert isinstance(implied, Response)
    r2 = ask(s, GetPeers(H), src=PeerAddress("10.1.1.1", 9))
    assert isinstance(r2, Response)
    assert set(r2.values) == {PeerAddress("10.9.9.9", 51413), PeerAddress("10.9.9.9", 7000)}
    # A token given to another IP is refused.
    bad = ask(s, AnnouncePeer(H, 1, r.token), src=PeerAddress("10.1.1.1", 9))
    assert isinstance(bad, ErrorReply) and bad.code == 203


def test_rate_limit_bounds_answers_per_ip() -> None:
    s = make_server(limiter=RateLimiter(rate=5, burst=10))
    q = Query(b"tx", nid(0x90, 5), Ping())
    answered = sum(s.handle_query(q, SRC, 1.0)[0] is not None for _ in range(100))
    assert answered == 10
    other = s.handle_query(q, PeerAddress("10.2.2.2", 1), 1.0)[0]
    assert other is not None  # others are not starved by one flooder
    assert s.handle_query(q, SRC, 2.0)[0] is not None  # refilled at 5/s
    assert sum(s.handle_query(q, SRC, 2.0)[0] is not None for _ in range(100)) == 4


def test_read_only_answers_nothing_and_marks_queries() -> None:
    s = make_server(read_only=True)
    assert s.handle_query(Query(b"tx", nid(1), Ping()), SRC, 1.0) == (None, [])
    assert len(s.table) == 0
    q = decode_message(s.make_query(b"ab", Ping()))
    assert isinstance(q, Query) and q.read_only
    # A normal server answers read-only queriers but keeps them out of its table.
    s2 = make_server()
    data, _ = s2.handle_query(Query(b"tx", nid(1), Ping(), read_only=True), SRC, 1.0)
    assert data is not None and len(s2.table) == 0


def test_error_reply_for_malformed_query() -> None:
    s = make_server()
    err = KrpcError("unknown method", tid=b"zz", code=204)
    data = s.error_reply(err, SRC, 1.0)
    assert data is not None
    reply = decode_message(data)
    assert isinstance(reply, ErrorReply) and reply.code == 204 and reply.tid == b"zz"
    assert s.error_reply(KrpcError("garbage"), SRC, 1.0) is None


def test_peer_store_bounds_and_expiry() -> None:
    ps = PeerStore(max_info_hashes=3, max_peers_per_hash=4, ttl=100.0)
    rng = random.Random(0)
    for i in range(10):
        ps.announce(H, PeerAddress(f"10.0.0.{i}", 1), float(i))
    assert len(ps.get(H, 10.0, rng)) == 4
    assert PeerAddress("10.0.0.9", 1) in ps.get(H, 10.0, rng)
    for j in range(5):
        ps.announce(bytes([j]) * 20, PeerAddress("10.0.0.1", 1), 10.0)
    assert len(ps) == 3
    assert ps.get(H, 10.0, rng) == []  # evicted (oldest)
    assert ps.get(b"\x04" * 20, 109.0, rng) and ps.get(b"\x04" * 20, 111.0, rng) == []
    assert len(ps) == 0
    many = PeerStore()
    for i in range(200):
        many.announce(H, PeerAddress(f"10.0.{i}.1", 1), 0.0)
    assert len(many.get(H, 1.0, rng, limit=50)) == 50
