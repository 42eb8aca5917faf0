"""Issue check: a magnet with no tracker and no peer resolves through the DHT in a real mount.

The DHT is a small loopback network of our own nodes plus a python3-libtorrent DHT node, each on
its own 127.0.0.x address, bootstrapped from each other. A python3-libtorrent seeder (DHT on, no
tracker) announces itself there. The mount (DHT on, bootstrapped from that network only) gets a
``.magnet`` holding nothing but the info-hash and a name: it must find the seeder through the
DHT, fetch and verify the metadata (BEP 9), list the files and serve every byte.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from swarm import (
    MULTI_LAYOUT,
    LibtorrentPeer,
    make_payload,
    make_torrent,
    next_loopback,
    sha256_file,
)
from test_mount import TorrentfsMount, wait_for

from torrentfs.net.dht_node import DhtConfig, DhtNode

pytestmark = [pytest.mark.mount, pytest.mark.interop]

HANG_GUARD = 120.0


class DhtMount(TorrentfsMount):
    dht_args = ()


def text(node: DhtNode) -> str:
    return f"{node.address.host}:{node.address.port}"


async def test_trackerless_magnet_found_through_the_dht(
    tmp_path: Path, isolated_network: None
) -> None:
    payload = make_payload(tmp_path / "src", "multi", seed=21)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent", piece_length=32768)
    info_hash = torrent.info_hash
    peers: list[LibtorrentPeer] = []
    mount: DhtMount | None = None
    try:
        async with trio.open_nursery() as nursery:
            nodes: list[DhtNode] = []
            for _ in range(5):
                boot = (nodes[0].address,) if nodes else ()
                node = DhtNode(DhtConfig(host=next_loopback(), bootstrap=boot, query_timeout=2.0))
                await nursery.start(node.run)
                nodes.append(node)
            with trio.fail_after(HANG_GUARD):
                for node in nodes[1:]:
                    await node.bootstrap()
            lt_dht = LibtorrentPeer(
                "dht", "", tmp_path / "lt-dht", extra_args=["--dht-bootstrap", text(nodes[0])],
                log_dir=tmp_path / "logs",
            )  # fmt: skip
            peers.append(lt_dht)
            await trio.to_thread.run_sync(lt_dht.start)
            lt_dht_addr = f"{lt_dht.host}:{lt_dht.port}"
            seeder = LibtorrentPeer(
                "seed", torrent.path, payload.root.parent,
                extra_args=["--tracker-less", "--dht-bootstrap", lt_dht_addr],
                log_dir=tmp_path / "logs",
            )  # fmt: skip
            peers.append(seeder)
            await trio.to_thread.run_sync(seeder.start)
            # The seeder (through libtorrent's DHT node) announces itself to our nodes.
            with trio.fail_after(HANG_GUARD):
                while not any(
                    n.peer_store.get(info_hash, trio.current_time(), random.Random(0))
                    for n in nodes
                ):
                    await trio.sleep(0.2)

            bootstrap = f"{text(nodes[2])};{lt_dht_addr}"
            mount = DhtMount(tmp_path / "m", "--dht-bootstrap", bootstrap, "--read-timeout", "60")
            await trio.to_thread.run_sync(mount.start)
            magnet = f"magnet:?xt=urn:btih:{info_hash.hex()}&dn=FromTheDht"
            (mount.metainfo_dir / "dht.magnet").write_text(magnet + "\n")
            top = mount.mountpoint / "FromTheDht"

            def check() -> dict[str, Any]:
                wait_for("the magnet entry", top.exists)
                wait_for("the metadata", lambda: os.listdir(top) != [], timeout=HANG_GUARD)
                return {rel: sha256_file(top / rel) for rel, _ in MULTI_LAYOUT}

            got = await trio.to_thread.run_sync(check)
            assert got == payload.digests(), mount.log()[-3000:]
            assert sorted(os.listdir(top)) == sorted({rel.split("/")[0] for rel, _ in MULTI_LAYOUT})
            log = mount.log()
            assert "metadata (" in log and "verified" in log
            nursery.cancel_scope.cancel()
    finally:
        if mount is not None:
            mount.stop()
        for p in peers:
            p.stop()
