"""Hostile DHT traffic against our node: the caps of `dht/server.py` and `net/dht_node.py` hold.

A flood of KRPC queries from many loopback addresses at a real `DhtNode` (answer rates per IP
and in total, answer sizes against query sizes, routing table, peer store and outgoing traffic
all bounded), forged and stolen write tokens, a peer store filled from thousands of addresses,
bogus nodes by the hundred thousand, and a liar that answers every lookup with fresh bogus
nodes. Each cap is asserted against what was actually sent and received. Rate bounds use the
elapsed time measured around the flood on the node's own (trio) clock, so they hold however
slow the machine is: timing bounds the counts, it never decides the verdict by itself.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import figures
import trio
from swarm import next_loopback

from torrentfs.bencode import encode
from torrentfs.dht.krpc import (
    AnnouncePeer,
    ErrorReply,
    GetPeers,
    KrpcError,
    NodeInfo,
    Ping,
    Query,
    Response,
    decode_message,
    encode_nodes,
)
from torrentfs.dht.routing import K, RoutingTable
from torrentfs.dht.server import (
    MAX_AMPLIFICATION,
    MAX_VALUES_PER_REPLY,
    DhtServer,
    PeerStore,
    RateLimiter,
)
from torrentfs.dht.tokens import ROTATE_INTERVAL, TokenManager
from torrentfs.net.dht_node import DhtConfig, DhtError, DhtNode
from torrentfs.types import PeerAddress

HANG_GUARD = 120.0
INFO_HASH = b"\x5a" * 20


def query(tid: bytes, method: bytes, args: dict[bytes, object]) -> bytes:
    return encode({b"t": tid, b"y": b"q", b"q": method, b"a": args})


@asynccontextmanager
async def node(**kw: object) -> AsyncIterator[DhtNode]:
    settings: dict[str, object] = {"host": next_loopback(), "port": 0, "query_timeout": 1.0}
    cfg = DhtConfig(**{**settings, **kw})  # type: ignore[arg-type]
    dht = DhtNode(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(dht.run)
        try:
            yield dht
        finally:
            nursery.cancel_scope.cancel()


def flood_address(i: int) -> str:
    return f"127.9.{i // 250}.{i % 250 + 1}"


async def drain(sock: trio.socket.SocketType, quiet: float = 1.0) -> list[bytes]:
    """Every datagram that arrives until none has for `quiet` seconds."""
    got = []
    while True:
        with trio.move_on_after(quiet):
            got.append(await sock.recv(65536))
            continue
        return got


async def test_query_flood_from_many_addresses_stays_within_every_cap() -> None:
    sources, per_source = 100, 100
    async with node() as dht:
        dest = (dht.address.host, dht.address.port)
        cfg = dht.config
        socks = []
        for i in range(sources):
            sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
            await sock.bind((flood_address(i), 0))
            socks.append(sock)
        sizes: dict[bytes, int] = {}  # tid -> size of the query that carried it
        rng = random.Random(7)
        started = trio.current_time()
        for round_ in range(per_source):
            for i, sock in enumerate(socks):
                tid = b"%d.%d" % (i, round_)
                sender = rng.randbytes(20)
                kind = round_ % 5
                if kind == 0:
                    data = query(tid, b"ping", {b"id": sender})
                elif kind == 1:
                    data = query(tid, b"find_node", {b"id": sender, b"target": rng.randbytes(20)})
                elif kind == 2:
                    data = query(tid, b"get_peers", {b"id": sender, b"info_hash": INFO_HASH})
                elif kind == 3:  # a forged token: never stored
                    args = {b"id": sender, b"info_hash": INFO_HASH, b"port": 6881}
                    data = query(tid, b"announce_peer", {**args, b"token": rng.randbytes(8)})
                else:  # malformed, with a transaction id: a (small) KRPC error
                    data = query(tid, b"get_peers", {b"id": b"short"})
                sizes[tid] = len(data)
                await sock.sendto(data, dest)
            await trio.sleep(0.005)  # pacing, so the flood reaches the node rather than the
            # kernel's drops (the socket buffer): every cap must then do the dropping
        answers: Counter[int] = Counter()
        ratios = []
        pinged = 0
        with trio.fail_after(HANG_GUARD):
            for i, sock in enumerate(socks):
                for datagram in await drain(sock, quiet=1.0 if i == 0 else 0.05):
                    reply = decode_message(datagram)
                    if isinstance(reply, Query):  # the node pings newcomers of its table
                        assert isinstance(reply.body, Ping)
                        pinged += 1
                        continue
                    assert isinstance(reply, (Response, ErrorReply))
                    if isinstance(reply, ErrorReply):
                        assert reply.code == 203, reply  # bad token or malformed
                    ratios.append(len(datagram) / sizes[reply.tid])
                    answers[i] += 1
        elapsed = trio.current_time() - started
        stats = dht.statistics()
        sent = sources * per_source
        # Per source: the burst plus the refill over the whole flood, never more.
        assert max(answers.values()) <= cfg.burst_per_ip + cfg.rate_per_ip * elapsed + 1
        # In total: the global bucket (starts full) plus its refill.
        total = sum(answers.values())
        assert total <= cfg.global_rate + cfg.global_rate * elapsed + 1, (total, elapsed)
        assert stats.answers_sent + stats.rate_limited <= sent
        assert stats.rate_limited > 0 and total < sent  # the caps did the dropping
        # No amplification: each answer at most MAX_AMPLIFICATION times its query, and all
        # we sent (answers, and our pings of newcomers) within that factor of all we received.
        assert max(ratios) <= MAX_AMPLIFICATION, max(ratios)
        assert stats.bytes_sent <= MAX_AMPLIFICATION * stats.bytes_received
        # Bounded state: one node per IP, K per bucket; no forged announce was stored.
        table = dht.table
        assert len(table) <= K * len(table.buckets) and len(table.buckets) <= 160
        hosts = [n.host for n in table.nodes()]
        assert len(hosts) == len(set(hosts))
        assert all(len(b.replacements) <= K for b in table.buckets)
        assert dht.peer_store.peer_count() == 0
        # Our own queries (pings of questionable nodes) stay within the in-flight cap.
        assert stats.queries_sent <= len(table.buckets) * (1 + elapsed / cfg.query_timeout) * 2
        assert pinged <= stats.queries_sent
        # The node still serves an honest querier once the flood is over.
        async with node() as friend:
            with trio.fail_after(HANG_GUARD):
                while True:
                    with contextlib.suppress(DhtError):  # the global budget may still refill
                        assert await friend.ping(dht.address) == dht.node_id
                        break
        for sock in socks:
            sock.close()
    figures.record("DHT queries from hostile addresses", sent)
    print(
        f"{sent} queries from {sources} addresses in {elapsed:.1f} s: {total} answered "
        f"(busiest source {max(answers.values())}), {stats.rate_limited} dropped; "
        f"largest answer {max(ratios):.1f}x its query; {stats.bytes_sent} bytes out for "
        f"{stats.bytes_received} in; table {len(table)} nodes, {stats.queries_sent} pings sent"
    )


async def test_write_tokens_bind_to_the_ip_that_asked() -> None:
    async with node() as dht:
        dest = (dht.address.host, dht.address.port)
        asker = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        thief = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await asker.bind((next_loopback(), 0))
        await thief.bind((next_loopback(), 0))
        with trio.fail_after(HANG_GUARD):
            await asker.sendto(
                query(b"g", b"get_peers", {b"id": b"a" * 20, b"info_hash": INFO_HASH}), dest
            )
            got = decode_message(await asker.recv(2048))
            assert isinstance(got, Response) and got.token
            token = got.token
            announce = {b"id": b"t" * 20, b"info_hash": INFO_HASH, b"port": 7000}
            # Stolen (another IP), forged, empty: refused with 203, nothing stored.
            for data, sock in [
                (query(b"s", b"announce_peer", {**announce, b"token": token}), thief),
                (query(b"f", b"announce_peer", {**announce, b"token": bytes(8)}), asker),
                (query(b"e", b"announce_peer", {**announce, b"token": b""}), asker),
            ]:
                await sock.sendto(data, dest)
                reply = decode_message(await sock.recv(2048))
                assert isinstance(reply, ErrorReply) and reply.code == 203, reply
            assert dht.peer_store.peer_count() == 0
            # The rightful owner's announce is stored.
            good = {**announce, b"id": b"a" * 20, b"token": token}
            await asker.sendto(query(b"o", b"announce_peer", good), dest)
            assert isinstance(decode_message(await asker.recv(2048)), Response)
        assert dht.peer_store.peer_count() == 1
        asker.close()
        thief.close()


def test_tokens_expire_after_two_rotations() -> None:
    tokens = TokenManager(random.Random(1).randbytes, 0.0)
    token = tokens.issue("10.0.0.1", 0.0)
    assert tokens.check(token, "10.0.0.1", ROTATE_INTERVAL)
    assert not tokens.check(token, "10.0.0.2", 1.0)
    assert not tokens.check(token, "10.0.0.1", 2 * ROTATE_INTERVAL + 1)


def server(**store: int) -> DhtServer:
    own = b"\x00" * 20
    return DhtServer(
        RoutingTable(own, 0.0),
        TokenManager(random.Random(2).randbytes, 0.0),
        random.Random(3),
        peers=PeerStore(**store),
        rate_limiter=RateLimiter(rate=1e9, burst=1e9, global_rate=1e9),
    )


def test_peer_store_caps_hold_against_thousands_of_announcers() -> None:
    s = server(max_info_hashes=50, max_peers_per_hash=20, max_peers=300)
    rng = random.Random(4)
    hashes = [rng.randbytes(20) for _ in range(80)]
    for i in range(5000):
        src = PeerAddress(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1000 + i % 7)
        now = i / 100
        get = Query(b"g", rng.randbytes(20), GetPeers(rng.choice(hashes)))
        data, _ = s.handle_query(get, src, now)
        assert data is not None
        reply = decode_message(data)
        assert isinstance(reply, Response) and reply.token
        for port in range(3):  # one IP, several ports
            body = AnnouncePeer(get.body.info_hash, 6000 + port, reply.token)  # type: ignore[union-attr]
            s.handle_query(Query(b"a", get.sender_id, body), src, now)
        store = s.peers
        assert len(store) <= 50 and store.peer_count() <= 300
    assert store.peer_count() == sum(len(p) for p in store._hashes.values()) == 300
    assert all(len(p) <= 20 for p in store._hashes.values())
    # The defaults documented in the README.
    defaults = PeerStore()
    assert (defaults.max_info_hashes, defaults.max_peers_per_hash, defaults.max_peers) == (
        4096,
        256,
        16384,
    )


def test_answers_never_exceed_the_amplification_factor() -> None:
    s = server()
    for i in range(256):  # a full info-hash: a get_peers answer would carry 50 values
        s.peers.announce(INFO_HASH, PeerAddress(f"10.0.{i}.1", 6881), 0.0)
        s.peers.announce(INFO_HASH, PeerAddress(f"fd00::{i:x}", 6881), 0.0)
    for i in range(300):
        s.table.heard_from(
            NodeInfo(random.Random(i).randbytes(20), f"10.1.{i}.1", 6881), 0.0, responded=True
        )
        s.table.heard_from(
            NodeInfo(random.Random(-i).randbytes(20), f"fd01::{i:x}", 6881), 0.0, responded=True
        )
    for source in (PeerAddress("10.9.9.9", 1), PeerAddress("fd02::9", 1)):
        for tid in (b"x", b"x" * 32):
            # The smallest possible get_peers query, and a larger one.
            get = query(tid, b"get_peers", {b"id": b"i" * 20, b"info_hash": INFO_HASH})
            q = decode_message(get)
            assert isinstance(q, Query)
            data, _ = s.handle_query(q, source, 1.0, query_size=len(get))
            assert data is not None and len(data) <= MAX_AMPLIFICATION * len(get)
            reply = decode_message(data)
            assert isinstance(reply, Response) and reply.token and reply.values
            if ":" not in source.host:
                assert len(reply.values) >= 30  # still a useful answer
            unbounded, _ = s.handle_query(q, source, 1.0)
            assert unbounded is not None
            assert len(decode_message(unbounded).values) == MAX_VALUES_PER_REPLY  # type: ignore[union-attr]
        # The smallest malformed query that earns an error answer.
        tiny = b"d1:t1:x1:y1:qe"
        error = KrpcError("a long explanation " * 20, tid=b"x")
        data = s.error_reply(error, source, 1.0, query_size=len(tiny))
        assert data is None or len(data) <= MAX_AMPLIFICATION * len(tiny)


def test_a_flood_of_bogus_nodes_keeps_the_table_small_and_pings_few() -> None:
    table = RoutingTable(b"\x00" * 20, 0.0)
    rng = random.Random(5)
    pings = 0
    for i in range(100_000):
        host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        info = NodeInfo(rng.randbytes(20), host, 1 + i % 65535)
        pings += len(table.heard_from(info, float(i % 1000), responded=False))
    assert len(table.buckets) <= 160
    assert len(table) <= K * len(table.buckets)
    assert sum(len(b.replacements) for b in table.buckets) <= K * len(table.buckets)
    # None of the pings was answered or failed: one in flight per bucket, never more.
    assert pings <= len(table.buckets), pings
    print(f"100,000 bogus nodes: {len(table)} kept in {len(table.buckets)} buckets, {pings} pings")


async def test_a_liar_answering_every_lookup_with_bogus_nodes_costs_a_bounded_lookup() -> None:
    liar = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await liar.bind((next_loopback(), 0))
    liar_id = b"\x77" * 20
    rng = random.Random(6)
    served = 0

    async def lie() -> None:
        nonlocal served
        while True:
            data, src = await liar.recvfrom(65536)
            q = decode_message(data)
            assert isinstance(q, Query)
            bogus = [
                NodeInfo(
                    rng.randbytes(20), f"127.8.{rng.randrange(256)}.{rng.randrange(1, 255)}", 9
                )
                for _ in range(K)
            ]
            r = {b"id": liar_id, b"nodes": encode_nodes(bogus), b"token": b"tok"}
            await liar.sendto(encode({b"t": q.tid, b"y": b"r", b"r": r}), src)
            served += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lie)
        host, port = liar.getsockname()
        async with node(
            bootstrap=(PeerAddress(host, port),),
            query_timeout=0.3,
            lookup_timeout=20.0,
            max_lookup_queries=40,
        ) as dht:
            with trio.fail_after(HANG_GUARD):
                result = await dht.get_peers(INFO_HASH)
            stats = dht.statistics()
            assert result.peers == ()
            assert result.queries <= 40
            # Bogus nodes never answered: none of them is in our table.
            assert not any(n.host.startswith("127.8.") for n in dht.table.nodes())
            assert stats.queries_sent <= 40 + 2 * len(dht.table.buckets) + 2
        nursery.cancel_scope.cancel()
    liar.close()
    print(f"a lookup against a liar: {result.queries} queries, {served} lies served")
