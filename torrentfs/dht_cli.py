"""`torrentfs dht ping|get-peers` (L6): talk to the BitTorrent DHT (BEP 5) by hand.

* ``torrentfs dht ping HOST:PORT...`` pings each node and prints its id and round-trip time;
  exit 0 when every node answered, 1 otherwise.
* ``torrentfs dht get-peers INFOHASH [--bootstrap HOST:PORT]... [--bind HOST:PORT] [--json]``
  bootstraps a temporary node (from the public routers unless ``--bootstrap`` is given), runs
  one iterative get_peers lookup and prints every peer with the node that named it; exit 0 when
  peers were found, 1 otherwise.

The node used here is read-only (BEP 43: nobody puts it in a routing table) and saves nothing.
Every wait is bounded (``--timeout``). Bad arguments are one-line errors (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from torrentfs.engine_cli import parse_host_port
from torrentfs.errors import TorrentfsError
from torrentfs.net.dht_node import DEFAULT_BOOTSTRAP, DhtConfig, DhtError, DhtNode
from torrentfs.types import PeerAddress

if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["build_dht_parser"]


def _info_hash(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 20:
        raise argparse.ArgumentTypeError(f"expected a 40-digit hex info-hash, got {text!r}")
    return value


def _node(text: str) -> PeerAddress:
    addr = parse_host_port(text)
    if addr.port == 0:
        raise argparse.ArgumentTypeError(f"expected a port in {text!r}")
    return addr


def build_dht_parser(sub: _SubParsers) -> None:
    p = sub.add_parser("dht", help="query the BitTorrent DHT (ping, get-peers)")
    dsub = p.add_subparsers(dest="dht_command", metavar="DHT_COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bind",
        type=parse_host_port,
        default=PeerAddress("0.0.0.0", 0),
        metavar="HOST:PORT",
        help="local UDP address (default 0.0.0.0:0)",
    )
    common.add_argument("--timeout", type=float, default=30.0, help="seconds in all (default 30)")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    ping = dsub.add_parser("ping", parents=[common], help="ping DHT nodes")
    ping.add_argument("nodes", nargs="+", type=_node, metavar="HOST:PORT")
    ping.set_defaults(func=cmd_ping)
    gp = dsub.add_parser("get-peers", parents=[common], help="look up the peers of an info-hash")
    gp.add_argument("info_hash", type=_info_hash, metavar="INFOHASH")
    gp.add_argument(
        "--bootstrap",
        action="append",
        type=_node,
        default=[],
        metavar="HOST:PORT",
        help="bootstrap node (repeatable; default: the public routers)",
    )
    gp.set_defaults(func=cmd_get_peers)


def _config(args: argparse.Namespace, bootstrap: Sequence[PeerAddress] = ()) -> DhtConfig:
    return DhtConfig(
        host=args.bind.host,
        port=args.bind.port,
        bootstrap=tuple(bootstrap),
        read_only=True,
        lookup_timeout=max(1.0, args.timeout * 0.8),
        bootstrap_timeout=max(1.0, args.timeout * 0.3),
        max_per_ip=None,
    )


def _run(main: Any) -> None:
    """`trio.run`, with a lone `TorrentfsError` (e.g. cannot bind) taken out of its group."""
    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        errors, others = group.split(TorrentfsError)
        if errors is not None and others is None:
            leaf: BaseException = errors
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            raise leaf from None
        raise


def _emit(args: argparse.Namespace, obj: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(obj, sort_keys=True))
    else:
        for line in lines:
            print(line)


def cmd_ping(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            node = DhtNode(_config(args))
            await nursery.start(node.run)

            async def one(addr: PeerAddress, slot: dict[str, Any]) -> None:
                start = trio.current_time()
                try:
                    node_id = await node.ping(addr)
                except DhtError as exc:
                    slot["error"] = str(exc)
                else:
                    slot["id"] = node_id.hex()
                    slot["ms"] = round((trio.current_time() - start) * 1000, 1)

            with trio.move_on_after(args.timeout):
                async with trio.open_nursery() as pings:
                    for addr in args.nodes:
                        slot: dict[str, Any] = {"node": f"{addr.host}:{addr.port}"}
                        results.append(slot)
                        pings.start_soon(one, addr, slot)
            nursery.cancel_scope.cancel()

    _run(main)
    lines = [
        f"{r['node']}  id {r['id']}  {r['ms']} ms"
        if "id" in r
        else f"{r['node']}  {r.get('error', 'no answer')}"
        for r in results
    ]
    _emit(args, {"nodes": results}, lines)
    return 0 if all("id" in r for r in results) else 1


def cmd_get_peers(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap or DEFAULT_BOOTSTRAP
    out: dict[str, Any] = {"info_hash": args.info_hash.hex(), "peers": []}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            node = DhtNode(_config(args, bootstrap))
            await nursery.start(node.run)
            with trio.move_on_after(args.timeout):
                found = await node.get_peers(args.info_hash)
                out["peers"] = [
                    {
                        "peer": f"{p.address.host}:{p.address.port}",
                        "from": f"{p.node.host}:{p.node.port}",
                        "from_id": p.node.node_id.hex(),
                    }
                    for p in found.peers
                ]
                out["queries"] = found.queries
                out["responses"] = found.responses
                out["closest"] = [
                    {"node": f"{n.host}:{n.port}", "id": n.node_id.hex()} for n in found.closest
                ]
            nursery.cancel_scope.cancel()

    _run(main)
    lines = [f"{p['peer']}  from {p['from']} ({p['from_id'][:12]})" for p in out["peers"]]
    lines.append(
        f"{len(out['peers'])} peer(s) for {out['info_hash']}; "
        f"{out.get('responses', 0)} of {out.get('queries', 0)} queries answered"
    )
    _emit(args, out, lines)
    if not out["peers"] and not args.json:
        print("torrentfs: dht get-peers: no peers found", file=sys.stderr)
    return 0 if out["peers"] else 1
