"""`torrentfs dht ping|get-peers`, run as the user runs it, against our nodes on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from swarm import next_loopback

from torrentfs.net.dht_node import DhtConfig, DhtNode
from torrentfs.types import PeerAddress

INFO_HASH = bytes.fromhex("c0ffee" + "00" * 17)
HANG_GUARD = 60.0


async def torrentfs(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(HANG_GUARD):
        return await trio.run_process(
            [sys.executable, "-m", "torrentfs", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@asynccontextmanager
async def nodes(count: int) -> AsyncIterator[list[DhtNode]]:
    async with trio.open_nursery() as nursery:
        out: list[DhtNode] = []
        for _ in range(count):
            bootstrap = (out[0].address,) if out else ()
            node = DhtNode(DhtConfig(host=next_loopback(), bootstrap=bootstrap))
            await nursery.start(node.run)
            out.append(node)
        for node in out[1:]:
            await node.bootstrap()
        yield out
        nursery.cancel_scope.cancel()


def text(a: PeerAddress) -> str:
    return f"{a.host}:{a.port}"


async def test_ping_prints_ids_and_fails_for_silent_nodes() -> None:
    async with nodes(2) as (a, b):
        dead = f"{next_loopback()}:9"
        bind = ["--bind", f"{next_loopback()}:0", "--timeout", "5"]
        r = await torrentfs("dht", "ping", text(a.address), text(b.address), *bind)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert f"{text(a.address)}  id {a.node_id.hex()}" in out
        assert f"{text(b.address)}  id {b.node_id.hex()}" in out
        r = await torrentfs("dht", "ping", text(a.address), dead, *bind, "--json")
        assert r.returncode == 1
        result = json.loads(r.stdout)["nodes"]
        assert result[0] == {"node": text(a.address), "id": a.node_id.hex(), "ms": result[0]["ms"]}
        assert result[1]["node"] == dead and "no answer" in result[1]["error"]


async def test_get_peers_prints_peers_and_where_from() -> None:
    async with nodes(6) as net:
        seeder = net[3]
        with trio.fail_after(HANG_GUARD):
            assert await seeder.announce_peer(INFO_HASH, 6881) >= 3
        bind = ["--bind", f"{next_loopback()}:0", "--timeout", "20"]
        args = ["dht", "get-peers", INFO_HASH.hex(), "--bootstrap", text(net[0].address), *bind]
        r = await torrentfs(*args)
        assert r.returncode == 0, r.stderr
        peer = f"{seeder.address.host}:6881"
        lines = r.stdout.decode().splitlines()
        assert lines[0].startswith(f"{peer}  from 127.0.")
        assert lines[-1].startswith(f"1 peer(s) for {INFO_HASH.hex()}")
        r = await torrentfs(*args, "--json")
        result = json.loads(r.stdout)
        (found,) = result["peers"]
        assert found["peer"] == peer
        stored_by = {
            text(n.address) for n in net if n.peer_store.get(INFO_HASH, trio.current_time(), n._rng)
        }
        assert found["from"] in stored_by
        # Nobody knows this one: exit 1, and the read-only CLI node is in nobody's table.
        r = await torrentfs(*args[:2], "11" * 20, *args[3:])
        assert r.returncode == 1 and "no peers found" in r.stderr.decode()
        assert all(len(n.table) <= 5 for n in net)


async def test_bad_arguments_are_one_line_errors() -> None:
    for args in (
        ["dht", "get-peers", "xyz"],
        ["dht", "ping", "nohost"],
        ["dht", "ping", "127.0.0.1:0"],
    ):
        r = await torrentfs(*args)
        assert r.returncode == 2
        assert b"Traceback" not in r.stderr
    r = await torrentfs("dht", "ping", "127.0.0.1:1", "--bind", "192.0.2.1:0")
    assert r.returncode == 2
    assert r.stderr.decode().count("\n") == 1 and "cannot bind" in r.stderr.decode()
