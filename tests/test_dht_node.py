"""Our DHT node on real UDP sockets (net/dht_node.py): a loopback network of our own nodes.

Each node binds its own 127.0.0.x address (so the one-node-per-IP Sybil rule of the routing
table holds as it would on the Internet). Runs inside the test network namespace
(`scripts/test`); no public router is ever configured. Waits are bounded hang guards: no outcome
depends on how fast the machine is.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from swarm import next_loopback

from torrentfs.bencode import encode
from torrentfs.dht.krpc import ErrorReply, Response, decode_message
from torrentfs.net.dht_node import DhtConfig, DhtError, DhtNode
from torrentfs.types import PeerAddress

INFO_HASH = bytes.fromhex("d4" * 20)
HANG_GUARD = 60.0


def config(bootstrap: Sequence[PeerAddress] = (), **kw: object) -> DhtConfig:
    base: dict[str, object] = {
        "host": next_loopback(),
        "port": 0,
        "bootstrap": tuple(bootstrap),
        "query_timeout": 2.0,
    }
    base.update(kw)
    return DhtConfig(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def running(*configs: DhtConfig) -> AsyncIterator[list[DhtNode]]:
    async with trio.open_nursery() as nursery:
        nodes = []
        for cfg in configs:
            node = DhtNode(cfg)
            await nursery.start(node.run)
            nodes.append(node)
        try:
            yield nodes
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def network(size: int, **kw: object) -> AsyncIterator[list[DhtNode]]:
    """`size` nodes; the first is everyone's bootstrap node; all bootstrapped when yielded."""
    async with trio.open_nursery() as nursery:
        first = DhtNode(config(**kw))
        await nursery.start(first.run)
        nodes = [first]
        for _ in range(1, size):
            node = DhtNode(config([first.address], **kw))
            await nursery.start(node.run)
            nodes.append(node)
        with trio.fail_after(HANG_GUARD):
            for node in nodes[1:]:
                await node.bootstrap()
            # A second round, now that everybody is known to the first node.
            for node in nodes:
                await node.bootstrap()
        try:
            yield nodes
        finally:
            nursery.cancel_scope.cancel()


async def test_ping_find_node_and_statistics() -> None:
    async with running(config(), config()) as (a, b):
        with trio.fail_after(HANG_GUARD):
            assert await a.ping(b.address) == b.node_id
        assert a.table.get(b.node_id) is not None  # it answered: it is in our table
        assert b.table.get(a.node_id) is not None  # it was queried by a: questionable entry
        with trio.fail_after(HANG_GUARD):
            found = await b.find_node(a.node_id)
        assert [n.node_id for n in found] == [a.node_id]
        sa, sb = a.statistics(), b.statistics()
        assert sb.queries_received["ping"] == 1 and sb.answers_sent >= 1
        assert sa.responses >= 1 and sa.queries_sent >= 1
        assert sa.address == (a.address.host, a.address.port)


async def test_ping_nobody_is_a_bounded_dht_error() -> None:
    silent = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    host = next_loopback()
    await silent.bind((host, 0))
    async with running(config(query_timeout=0.5)) as (a,):
        with trio.fail_after(HANG_GUARD), pytest.raises(DhtError, match="no answer"):
            await a.ping(PeerAddress(host, silent.getsockname()[1]))
        assert a.statistics().timeouts == 1
    silent.close()


async def test_twenty_nodes_find_an_announced_peer() -> None:
    async with network(20) as nodes:
        assert all(len(n.table) >= 5 for n in nodes), [len(n.table) for n in nodes]
        seeder, leecher = nodes[7], nodes[16]
        with trio.fail_after(HANG_GUARD):
            accepted = await seeder.announce_peer(INFO_HASH, 51413)
        assert accepted >= 3
        stored = [n for n in nodes if n.peer_store.get(INFO_HASH, trio.current_time(), n._rng)]
        assert len(stored) == accepted
        with trio.fail_after(HANG_GUARD):
            result = await leecher.get_peers(INFO_HASH)
        me = PeerAddress(seeder.address.host, 51413)
        assert result.addresses == [me]
        (found,) = result.peers
        # The peer comes with the node that named it: one of the nodes that stored it.
        assert found.node.node_id in {n.node_id for n in stored}
        assert result.queries <= 100
        # Implied port (BEP 5): the announced port is the UDP source port of the query.
        with trio.fail_after(HANG_GUARD):
            await nodes[3].announce_peer(INFO_HASH, 1, implied_port=True)
            again = await leecher.get_peers(INFO_HASH)
        assert set(again.addresses) == {me, nodes[3].address}


async def test_restart_reloads_the_routing_table(tmp_path: Path) -> None:
    async with network(6) as nodes:
        cfg = config([nodes[0].address], state_dir=tmp_path)
        async with running(cfg) as (mine,):
            with trio.fail_after(HANG_GUARD):
                await mine.bootstrap()
            known = {n.node_id for n in mine.table.nodes()}
            my_id = mine.node_id
        assert len(known) >= 3
        assert (tmp_path / "dht-table.bencode").exists()
        # Restart with no bootstrap node at all: the saved table is enough.
        cfg2 = config(state_dir=tmp_path, host=cfg.host)
        async with running(cfg2) as (again,):
            assert again.node_id == my_id
            assert {n.node_id for n in again.table.nodes()} == known
            with trio.fail_after(HANG_GUARD):
                found = await again.find_node(nodes[4].node_id)
            assert found[0].node_id == nodes[4].node_id


async def test_corrupt_saved_table_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "dht-table.bencode").write_bytes(b"d2:id3:abce")
    async with running(config(state_dir=tmp_path)) as (node,):
        assert len(node.table) == 0 and len(node.node_id) == 20


async def test_malformed_datagrams_are_dropped_without_harm() -> None:
    async with running(config(), config()) as (node, friend):
        sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await sock.bind((next_loopback(), 0))
        dest = (node.address.host, node.address.port)
        rng = random.Random(3)
        garbage = [
            b"",
            b"\x00" * 100,
            rng.randbytes(1400),
            b"d1:t2:aa1:y1:qe",  # a query with no method
            b"li1ei2ee",
            b"d1:t2:xx1:y1:q1:q4:ping1:ad2:id3:abcee",  # short id
            b"d" * 5000,  # deep nesting
            b"d1:t2:zz1:y1:r1:rd2:id20:" + b"a" * 20 + b"5:nodes5:abcdeee",  # unsolicited, bad
            encode({b"t": b"uu", b"y": b"q", b"q": b"vote", b"a": {b"id": b"i" * 20}}),
            rng.randbytes(9000),  # longer than we read
        ]
        for data in garbage:
            await sock.sendto(data, dest)
        with trio.fail_after(HANG_GUARD):
            assert await friend.ping(node.address) == node.node_id
        # Query-shaped garbage with a transaction id gets a KRPC error (203, or 204 for an
        # unknown method); everything else is dropped in silence.
        errors = {}
        with trio.move_on_after(0.5):
            while True:
                reply = decode_message(await sock.recv(2048))
                assert isinstance(reply, ErrorReply)
                errors[reply.tid] = reply.code
        assert errors == {b"aa": 203, b"xx": 203, b"uu": 204}
        stats = node.statistics()
        assert stats.malformed >= 6
        assert len(node.table) == 1  # only the friend, none of the garbage
        sock.close()


async def test_rate_limit_holds_per_source() -> None:
    # A tiny refill rate makes the count exact: the burst, and nothing more.
    cfg = config(rate_per_ip=1e-6, burst_per_ip=5.0)
    async with running(cfg, config()) as (node, other):
        flooder = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await flooder.bind((next_loopback(), 0))
        dest = (node.address.host, node.address.port)
        ping = encode({b"t": b"pp", b"y": b"q", b"q": b"ping", b"a": {b"id": b"f" * 20}})
        for _ in range(200):
            await flooder.sendto(ping, dest)
        # The node answers another source (not starved), which also proves it has read the
        # flood by then (datagrams from one socket pair arrive in order on loopback).
        with trio.fail_after(HANG_GUARD):
            assert await other.ping(node.address) == node.node_id
        answers = 0
        with trio.move_on_after(0.5):
            while True:
                reply = decode_message(await flooder.recv(2048))
                assert isinstance(reply, Response)
                answers += 1
        assert answers == 5
        stats = node.statistics()
        assert stats.queries_received["ping"] == 201
        assert stats.rate_limited == 195
        assert stats.bytes_sent < 6 * 200  # six small answers, nothing amplified
        flooder.close()


async def test_read_only_node_answers_nothing_but_can_look_up() -> None:
    async with network(4) as nodes, running(config([nodes[0].address], read_only=True)) as (ro,):
        with trio.fail_after(HANG_GUARD):
            found = await ro.find_node(nodes[2].node_id)
        assert found and found[0].node_id == nodes[2].node_id
        # BEP 43: our queries carried ro=1, so nobody put us in their table ...
        assert all(n.table.get(ro.node_id) is None for n in nodes)
        # ... and we answer nobody.
        with trio.fail_after(HANG_GUARD), pytest.raises(DhtError):
            await nodes[1].ping(ro.address)
        assert await ro.announce_peer(INFO_HASH, 6881) == 0


async def test_add_node_pings_and_learns() -> None:
    async with running(config(), config()) as (a, b):
        a.add_node(b.address)
        a.add_node(PeerAddress("127.0.0.1", 0))  # ignored
        with trio.fail_after(HANG_GUARD):
            while a.table.get(b.node_id) is None:
                await trio.sleep(0.01)
