"""DHT interop (BEP 5) with python3-libtorrent 2.0: its node and ours query each other.

libtorrent runs as a pure DHT node (`tests/peers/lt_peer.py dht`) on its own 127.0.0.x address,
set up for loopback (no IP restrictions, no BEP 42 enforcement, 8-node buckets). Our nodes each
have their own address too. Checked both ways: libtorrent's ping, get_peers and announce_peer
are answered by our nodes (the peer it announced is stored and served; the peer we announced is
found by its lookups), and our ping, find_node, get_peers and announce_peer are answered by
libtorrent (a node that knows only libtorrent finds the network through it, and a peer announced
to libtorrent is served back by it). libtorrent 2.0 never sends find_node (it bootstraps and
refreshes with get_peers), so our find_node answers are checked against our own nodes only
(tests/test_dht_node.py). Waits are hang guards only.
"""

from __future__ import annotations

import random
from pathlib import Path

import trio
from swarm import LibtorrentPeer, next_loopback

from torrentfs.net.dht_node import DhtConfig, DhtError, DhtNode
from torrentfs.types import PeerAddress

HANG_GUARD = 180.0
LT_QUERIES = {"ping", "get_peers", "announce_peer"}


def far_id(rng: random.Random, other: bytes) -> bytes:
    """A random id in the half of the id space away from `other` (top bit flipped)."""
    value = bytearray(rng.randbytes(20))
    value[0] = (value[0] & 0x7F) | (~other[0] & 0x80)
    return bytes(value)


async def start(nursery: trio.Nursery, **kw: object) -> DhtNode:
    cfg = DhtConfig(host=next_loopback(), query_timeout=2.0, **kw)  # type: ignore[arg-type]
    node = DhtNode(cfg)
    await nursery.start(node.run)
    return node


async def ping(node: DhtNode, addr: PeerAddress) -> bytes:
    """A ping, asked again if lost (UDP; libtorrent may still be starting its DHT)."""
    for _ in range(10):
        try:
            return await node.ping(addr)
        except DhtError:
            continue
    raise AssertionError(f"{addr} never answered a ping")


def queried_by(nodes: list[DhtNode], host: str) -> set[str]:
    return {method for n in nodes for method, src in n.recent_queries if src.host == host}


async def test_libtorrent_and_our_nodes_query_each_other(tmp_path: Path) -> None:
    rng = random.Random(11)
    h_lt, h_us = rng.randbytes(20), rng.randbytes(20)
    async with trio.open_nursery() as nursery:
        first = await start(nursery)
        lt = LibtorrentPeer(
            "dht",
            "",
            tmp_path / "lt",
            extra_args=[
                "--dht-bootstrap", f"{first.address.host}:{first.address.port}",
                "--announce", h_lt.hex(), "--get-peers", h_us.hex(), "--interval", "2",
            ],
            log_dir=tmp_path,
        )  # fmt: skip
        await trio.to_thread.run_sync(lt.start)
        try:
            lt_addr = PeerAddress(lt.host, lt.port)
            lt_id = await ping(first, lt_addr)  # our ping, answered by libtorrent
            # Twenty more nodes, all in the half of the id space away from libtorrent's id:
            # they fill one of its buckets and its replacement cache (8 + 8), so it refreshes
            # that bucket with pings (BEP 5) rather than get_peers.
            nodes = [first]
            for _ in range(20):
                boot = (first.address, lt_addr)
                nodes.append(await start(nursery, bootstrap=boot, node_id=far_id(rng, lt_id)))
            with trio.fail_after(HANG_GUARD):
                for node in nodes:
                    await node.bootstrap()

            # libtorrent -> ours: its get_peers finds a peer only our nodes store; its
            # announce_peer (its listen port) is stored by ours; it pings our nodes once one of
            # its buckets is full (BEP 5 refresh). libtorrent 2.0 sends get_peers where older
            # clients sent find_node (bootstrap and refresh alike), so find_node is not among
            # the queries it sends.
            with trio.fail_after(HANG_GUARD):
                assert await nodes[3].announce_peer(h_us, 5555) >= 1
            want = [nodes[3].address.host, 5555]
            me = PeerAddress(lt.host, lt.port)
            stored: list[DhtNode] = []
            found_ours = False
            methods: set[str] = set()
            with trio.move_on_after(HANG_GUARD):
                while not (stored and found_ours and methods >= LT_QUERIES):
                    await trio.sleep(0.2)
                    now = trio.current_time()
                    stored = [n for n in nodes if me in n.peer_store.get(h_lt, now, n._rng)]
                    methods = queried_by(nodes, lt.host)
                    found_ours = any(
                        e.get("event") == "get_peers"
                        and e["info_hash"] == h_us.hex()
                        and want in e["peers"]
                        for e in lt.drain_events()
                    )
            got = {"stored": len(stored), "found": found_ours, "queries": sorted(methods)}
            assert stored and found_ours and methods >= LT_QUERIES, got

            # Ours -> libtorrent: find_node. A node that knows nobody but libtorrent finds the
            # rest of the network through its answers.
            x = await start(nursery, bootstrap=(lt_addr,))
            with trio.fail_after(HANG_GUARD):
                found = await x.find_node(nodes[5].node_id)
            assert found[0].node_id == nodes[5].node_id
            assert x.table.get(lt_id) is not None  # libtorrent answered under its own id

            # Ours -> libtorrent: get_peers + announce_peer, for a hash next to its id.
            with trio.fail_after(HANG_GUARD):
                assert await x.announce_peer(lt_id, 7777) >= 1
            mine = {"event": "announce_in", "info_hash": lt_id.hex(), "ip": x.address.host}
            with trio.fail_after(HANG_GUARD):
                while not any(
                    {k: e.get(k) for k in mine} == mine and e["port"] == 7777
                    for e in lt.drain_events()
                ):
                    await trio.sleep(0.1)
            z = await start(nursery, bootstrap=(lt_addr,))
            with trio.fail_after(HANG_GUARD):
                result = await z.get_peers(lt_id)
            sources = {p.address: p.node.node_id for p in result.peers}
            assert sources[PeerAddress(x.address.host, 7777)] == lt_id  # served by libtorrent
            with trio.fail_after(HANG_GUARD):
                served = await z.get_peers(h_lt)
            assert me in served.addresses  # what libtorrent announced, served by our nodes
        finally:
            await trio.to_thread.run_sync(lt.stop)
            nursery.cancel_scope.cancel()
