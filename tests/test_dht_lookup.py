"""Iterative lookups (BEP 5): unit behaviour, and a simulated 200-node DHT in pure Python.

The simulation passes real KRPC bytes between `DhtServer`s in-process (encode -> decode), so it
exercises the codec, routing tables, tokens, peer stores and lookups together, deterministically.
"""

from __future__ import annotations

import random

from torrentfs.dht.krpc import (
    AnnouncePeer,
    FindNode,
    GetPeers,
    NodeInfo,
    Query,
    QueryBody,
    Response,
    decode_message,
)
from torrentfs.dht.lookup import Lookup, LookupKind
from torrentfs.dht.node_id import random_node_id
from torrentfs.dht.routing import K, RoutingTable, distance
from torrentfs.dht.server import DhtServer, RateLimiter
from torrentfs.dht.tokens import TokenManager
from torrentfs.types import PeerAddress

T = b"\x00" * 20


def n(i: int) -> NodeInfo:
    return NodeInfo(i.to_bytes(20, "big"), f"10.0.{i // 200}.{i % 200 + 1}", 1000)


def test_alpha_closest_first_and_each_node_once() -> None:
    seeds = [n(i) for i in (50, 10, 40, 30, 20)]
    lk = Lookup(T, LookupKind.FIND_NODE, seeds, alpha=3, k=2)
    first = lk.next_queries(0.0)
    assert [node for node, _ in first] == [n(10), n(20), n(30)]
    assert all(q == FindNode(T) for _, q in first)
    assert lk.next_queries(0.0) == []  # alpha in flight
    lk.on_response(n(10), Response(b"t", n(10).node_id, nodes=(n(5), n(10), n(20))), 0.1)
    nxt = lk.next_queries(0.1)
    assert [node for node, _ in nxt] == [n(5)]  # 10 and 20 are not asked again
    lk.on_error(n(20))
    lk.on_response(n(5), Response(b"t", n(5).node_id), 0.2)
    # K=2 closest live: 5 and 10 answered; 30 still in flight, nothing closer to ask.
    assert lk.next_queries(0.3) == []
    assert not lk.done
    assert lk.timed_out(100.0) == [n(30)]
    assert lk.done
    assert lk.closest_responded() == [n(5), n(10)]


def test_get_peers_collects_values_and_tokens() -> None:
    seeds = [n(i) for i in (1, 2, 3)]
    lk = Lookup(T, LookupKind.GET_PEERS, seeds, k=2)
    qs = lk.next_queries(0.0)
    assert all(q == GetPeers(T) for _, q in qs)
    p = PeerAddress("9.9.9.9", 1)
    lk.on_response(n(1), Response(b"t", n(1).node_id, values=(p,), token=b"a"), 0.0)
    lk.on_response(n(2), Response(b"t", n(2).node_id, values=(p,), token=b"b"), 0.0)
    lk.on_response(n(3), Response(b"t", n(3).node_id, token=b"c"), 0.0)
    assert lk.peers == [p]
    assert lk.announce_targets() == [(n(1), b"a"), (n(2), b"b")]
    assert lk.done


def test_liars_and_bounds() -> None:
    own = b"\xff" * 20
    lk = Lookup(T, LookupKind.FIND_NODE, [n(1)], own_id=own, max_queries=5, max_candidates=10)
    ((node, _),) = lk.next_queries(0.0)
    # A response under another id counts as a failure.
    lk.on_response(node, Response(b"t", b"x" * 20), 0.0)
    assert lk.done and lk.responses == 0
    lk = Lookup(T, LookupKind.FIND_NODE, [n(1)], own_id=own, max_queries=5, max_candidates=10)
    lk.next_queries(0.0)
    flood = tuple(n(i) for i in range(100, 164))
    sybil = tuple(NodeInfo(bytes([i]) * 20, "6.6.6.6", 6) for i in range(2, 9))
    lk.on_response(
        n(1),
        Response(b"t", n(1).node_id, nodes=flood + sybil + (NodeInfo(own, "1.1.1.1", 1),)),
        0.0,
    )
    sent = 0
    while not lk.done:
        for node, _ in lk.next_queries(float(sent)):
            assert node.node_id != own
            sent += 1
            lk.on_timeout(node)
    assert lk.queries_sent == 5  # budget
    asked_sybil = [c for c in lk._order if c.node.host == "6.6.6.6"]
    assert len(asked_sybil) <= 1  # one endpoint, one candidate
    assert len(lk._order) <= 10


# -- simulated network -------------------------------------------------------------------------


class SimNet:
    def __init__(self, size: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.servers: dict[PeerAddress, DhtServer] = {}
        self.addrs: list[PeerAddress] = []
        self.queries = 0
        for i in range(size):
            addr = PeerAddress(f"10.{i // 250}.{i % 250}.1", 6881)
            table = RoutingTable(random_node_id(self.rng), 0.0)
            srv = DhtServer(
                table,
                TokenManager(self.rng.randbytes, 0.0),
                random.Random(i),
                rate_limiter=RateLimiter(rate=1000, burst=1000, global_rate=1e6),
            )
            self.servers[addr] = srv
            self.addrs.append(addr)
        self.down: set[PeerAddress] = set()

    def info(self, addr: PeerAddress) -> NodeInfo:
        return NodeInfo(self.servers[addr].own_id, addr.host, addr.port)

    def send(self, src: PeerAddress, dst: PeerAddress, body: QueryBody) -> Response | None:
        """One KRPC round trip as bytes; None for a timeout (node down / dropped)."""
        self.queries += 1
        self.now += 0.001
        me = self.servers[src]
        tid = self.rng.randbytes(2)
        if dst in self.down or dst not in self.servers:
            return None
        query = decode_message(me.make_query(tid, body))
        assert isinstance(query, Query)
        data, _ = self.servers[dst].handle_query(query, src, self.now)
        if data is None:
            return None
        reply = decode_message(data)
        if not isinstance(reply, Response) or reply.tid != tid:
            return None
        return reply

    def run(self, src: PeerAddress, lookup: Lookup) -> Lookup:
        me = self.servers[src]
        while not lookup.done:
            batch = lookup.next_queries(self.now)
            assert batch, "a lookup that is not done must have something to send or wait for"
            for node, body in batch:
                reply = self.send(src, node.address, body)
                if reply is None:
                    lookup.on_timeout(node)
                    me.table.failed(node.node_id, self.now)
                else:
                    lookup.on_response(node, reply, self.now)
                    me.table.heard_from(node, self.now, responded=True)
        return lookup

    def bootstrap(self) -> None:
        first = self.addrs[0]
        for addr in self.addrs[1:]:
            srv = self.servers[addr]
            seeds = [self.info(first), *srv.table.closest(srv.own_id, K)]
            self.run(addr, Lookup(srv.own_id, LookupKind.FIND_NODE, seeds, own_id=srv.own_id))


def test_simulated_network_finds_announced_peer() -> None:
    net = SimNet(200, seed=42)
    net.bootstrap()
    sizes = [len(s.table) for s in net.servers.values()]
    assert min(sizes) >= K  # everyone knows a fair part of the network

    info_hash = random.Random(9).randbytes(20)
    seeder = net.addrs[77]
    srv = net.servers[seeder]
    lk = net.run(
        seeder,
        Lookup(info_hash, LookupKind.GET_PEERS, srv.table.closest(info_hash), own_id=srv.own_id),
    )
    assert lk.peers == []
    targets = lk.announce_targets()
    assert len(targets) == K
    # The announce targets are the true K closest nodes of the whole network.
    truly_closest = sorted(net.servers.values(), key=lambda s: distance(s.own_id, info_hash))[:K]
    assert {t.node_id for t, _ in targets} == {s.own_id for s in truly_closest}
    for node, token in targets:
        reply = net.send(seeder, node.address, AnnouncePeer(info_hash, 51413, token))
        assert reply is not None

    # Some nodes go down; a far-away node still finds the seeder through the rest.
    for addr in net.addrs[150:170]:
        net.down.add(addr)
    leecher = net.addrs[3]
    lsrv = net.servers[leecher]
    before = net.queries
    found = net.run(
        leecher,
        Lookup(info_hash, LookupKind.GET_PEERS, lsrv.table.closest(info_hash), own_id=lsrv.own_id),
    )
    assert PeerAddress(seeder.host, 51413) in found.peers
    assert net.queries - before <= 100  # bounded work


def test_simulated_find_node_converges() -> None:
    net = SimNet(120, seed=1)
    net.bootstrap()
    target = random.Random(5).randbytes(20)
    src = net.addrs[10]
    srv = net.servers[src]
    lk = net.run(
        src, Lookup(target, LookupKind.FIND_NODE, srv.table.closest(target), own_id=srv.own_id)
    )
    best = sorted(
        (s for a, s in net.servers.items() if a != src), key=lambda s: distance(s.own_id, target)
    )[:K]
    assert [x.node_id for x in lk.closest_responded()] == [s.own_id for s in best]
