"""A BitTorrent DHT node (BEP 5) on one trio UDP socket (L4), driving the sans-IO core in `dht/`.

`DhtNode(config)` is a service: ``await nursery.start(node.run)`` binds the socket, loads the
routing table saved in the state directory, and reports the bound address; cancelling `run`
saves the table again. While it runs:

* **We answer queries** (ping, find_node, get_peers, announce_peer) through `DhtServer`, unless
  ``read_only`` (BEP 43: then nothing is answered and our queries carry ``ro=1``).
* **Our queries** (`ping`, `find_node`, `get_peers`, `announce_peer`) match answers by
  transaction id *and* source address (a third party cannot answer for a node); each waits at
  most ``query_timeout``. Lookups are iterative (`dht.lookup.Lookup`): ``alpha`` queries in
  flight, closest first, at most ``max_lookup_queries`` queries and ``lookup_timeout`` seconds.
* **Bootstrap** asks the configured nodes (``bootstrap``: the public routers are the *user*
  default, chosen by the command line; tests pass loopback nodes or none) for our own id, then
  looks it up. Like libtorrent, bootstrap nodes (routers) are used as lookup seeds but never put
  in the routing table unless they answer a lookup under their own id like any other node.
* **Maintenance** (BEP 5): questionable nodes of a full bucket are pinged before a newcomer
  replaces them (`RoutingTable` decides; we send the pings), buckets unchanged for 15 minutes are
  refreshed with a find_node lookup, the table is saved every `SAVE_INTERVAL` and on exit.
  Write tokens rotate every 5 minutes (`TokenManager`).
* **Bounded everything** (DESIGN.md rule 4): answers are rate limited per source IP and in total
  (`RateLimiter`) and never larger than `dht.server.MAX_AMPLIFICATION` times the query, our
  own queries in flight are capped (``max_in_flight``), concurrent lookups are capped
  (``max_lookups``), the peer store is bounded (`PeerStore`), `add_node` (BEP 5
  ``port`` messages) queues at most `ADD_NODE_QUEUE` pings and drops the rest. A malformed
  datagram is counted and dropped; nothing a remote sends can end the node.

Statistics: `statistics()` returns a `DhtStats` snapshot.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket as stdlib_socket
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..dht.krpc import (
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    KrpcError,
    NodeInfo,
    Ping,
    Query,
    QueryBody,
    Response,
    decode_message,
)
from ..dht.lookup import Lookup, LookupKind
from ..dht.node_id import generate_node_id, is_exempt, random_node_id, verify_node_id
from ..dht.routing import K, NodeState, PingRequest, RoutingTable, SavedTableError
from ..dht.server import DhtServer, PeerStore, RateLimiter
from ..dht.tokens import TokenManager
from ..errors import TorrentfsError
from ..types import PeerAddress

__all__ = [
    "ADD_NODE_QUEUE",
    "DEFAULT_BOOTSTRAP",
    "SAVE_INTERVAL",
    "DhtConfig",
    "DhtError",
    "DhtNode",
    "DhtStats",
    "FoundPeer",
    "GetPeersResult",
]

log = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP: tuple[PeerAddress, ...] = (
    PeerAddress("router.bittorrent.com", 6881),
    PeerAddress("dht.transmissionbt.com", 6881),
    PeerAddress("router.utorrent.com", 6881),
)
"""The well-known public routers: the default of the *command line* only (never of tests)."""

SAVE_INTERVAL = 300.0
MAINTENANCE_INTERVAL = 30.0
ADD_NODE_QUEUE = 64
RECENT_QUERIES = 512
_RECV_SIZE = 8192  # KRPC datagrams are < 1500 bytes; anything longer is garbage anyway
_TABLE_FILE = "dht-table.bencode"


class DhtError(TorrentfsError):
    """A DHT query that got no usable answer (timeout, KRPC error, unreachable address)."""


@dataclass
class DhtConfig:
    """How one node runs. Defaults are the caps documented in the README."""

    host: str = "0.0.0.0"
    port: int = 0
    bootstrap: Sequence[PeerAddress] = ()
    state_dir: Path | None = None
    """Where the routing table is saved (`_TABLE_FILE`); None: not saved."""
    read_only: bool = False
    node_id: bytes | None = None
    """A fixed id (tests); default: the saved one, else a new BEP 42 id for ``host``."""
    alpha: int = 3
    query_timeout: float = 4.0
    lookup_timeout: float = 30.0
    max_lookup_queries: int = 100
    max_in_flight: int = 64
    max_lookups: int = 8
    max_per_ip: int | None = 1
    """Nodes per IP in the routing table (a Sybil bound; None for tests on one address)."""
    enforce_node_id: bool = False
    rate_per_ip: float = 10.0
    burst_per_ip: float = 30.0
    global_rate: float = 100.0
    bootstrap_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class FoundPeer:
    """A peer from a get_peers lookup and the node whose ``values`` named it."""

    address: PeerAddress
    node: NodeInfo


@dataclass(frozen=True)
class GetPeersResult:
    """What a get_peers lookup found."""

    info_hash: bytes
    peers: tuple[FoundPeer, ...]
    closest: tuple[NodeInfo, ...]
    """The closest nodes that answered (closest first)."""
    tokens: tuple[tuple[NodeInfo, bytes], ...]
    """(node, write token) of the K closest responders: where announce_peer goes."""
    queries: int
    responses: int

    @property
    def addresses(self) -> list[PeerAddress]:
        return [p.address for p in self.peers]


@dataclass
class DhtStats:
    node_id: str
    address: tuple[str, int]
    nodes: int
    good_nodes: int
    buckets: int
    replacements: int
    stored_info_hashes: int
    queries_received: dict[str, int] = field(default_factory=dict)
    answers_sent: int = 0
    rate_limited: int = 0
    malformed: int = 0
    queries_sent: int = 0
    responses: int = 0
    errors_received: int = 0
    timeouts: int = 0
    lookups: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0


@dataclass(slots=True)
class _Pending:
    address: PeerAddress
    done: trio.Event = field(default_factory=trio.Event)
    reply: Response | ErrorReply | None = None


class DhtNode:
    """One DHT node. Create, then ``await nursery.start(node.run)``; see the module docstring."""

    def __init__(self, config: DhtConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random(secrets.randbits(64))
        self._sock: trio.socket.SocketType | None = None
        self._address: PeerAddress | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._in_flight = trio.Semaphore(config.max_in_flight)
        self._lookups = trio.Semaphore(config.max_lookups)
        self._nursery: trio.Nursery | None = None
        self._add_send, self._add_recv = trio.open_memory_channel[PeerAddress](ADD_NODE_QUEUE)
        self._routers: dict[PeerAddress, NodeInfo] = {}
        self._received: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self._server: DhtServer | None = None
        self.recent_queries: deque[tuple[str, PeerAddress]] = deque(maxlen=RECENT_QUERIES)
        """The last queries received: (method, source), for debugging and tests."""

    # ------------------------------------------------------------------ properties

    @property
    def node_id(self) -> bytes:
        return self.server.own_id

    @property
    def address(self) -> PeerAddress:
        """The bound UDP address (after `run` started)."""
        if self._address is None:
            raise DhtError("the DHT node is not running")
        return self._address

    @property
    def server(self) -> DhtServer:
        if self._server is None:
            raise DhtError("the DHT node is not running")
        return self._server

    @property
    def table(self) -> RoutingTable:
        return self.server.table

    @property
    def peer_store(self) -> PeerStore:
        return self.server.peers

    def statistics(self) -> DhtStats:
        table = self.table
        now = trio.current_time()
        good = sum(1 for e in table.entries() if e.state(now) is NodeState.GOOD)
        c = self._counters
        return DhtStats(
            node_id=self.node_id.hex(),
            address=(self.address.host, self.address.port),
            nodes=len(table),
            good_nodes=good,
            buckets=len(table.buckets),
            replacements=sum(len(b.replacements) for b in table.buckets),
            stored_info_hashes=len(self.peer_store),
            queries_received=dict(self._received),
            answers_sent=c["answers"],
            rate_limited=self.server.dropped,
            malformed=c["malformed"],
            queries_sent=c["queries"],
            responses=c["responses"],
            errors_received=c["errors"],
            timeouts=c["timeouts"],
            lookups=c["lookups"],
            bytes_received=c["bytes_in"],
            bytes_sent=c["bytes_out"],
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[PeerAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, load the table, serve until cancelled; then save the table (bounded)."""
        family = stdlib_socket.AF_INET6 if ":" in self.config.host else stdlib_socket.AF_INET
        sock = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
        try:
            try:
                await sock.bind((self.config.host, self.config.port))
            except OSError as exc:
                if self.config.port == 0:
                    raise DhtError(f"DHT: cannot bind {self.config.host}: {exc}") from None
                log.warning(
                    "DHT: cannot bind port %d (%s); using a random port", self.config.port, exc
                )
                await sock.bind((self.config.host, 0))
            self._sock = sock
            host, port = sock.getsockname()[:2]
            self._address = PeerAddress(str(host), int(port))
            self._server = self._make_server(trio.current_time())
            log.info(
                "DHT node %s on %s:%d (%d nodes loaded)",
                self.node_id.hex()[:12],
                host,
                port,
                len(self.table),
            )
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._add_node_loop)
                nursery.start_soon(self._maintenance_loop)
                task_status.started(self._address)
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.save()
            sock.close()

    def _make_server(self, now: float) -> DhtServer:
        cfg = self.config
        table = self._load_table(now)
        tokens = TokenManager(secrets.token_bytes, now)
        limiter = RateLimiter(
            rate=cfg.rate_per_ip, burst=cfg.burst_per_ip, global_rate=cfg.global_rate
        )
        return DhtServer(table, tokens, self._rng, rate_limiter=limiter, read_only=cfg.read_only)

    def _table_path(self) -> Path | None:
        if self.config.state_dir is None:
            return None
        return self.config.state_dir / _TABLE_FILE

    def _fresh_id(self) -> bytes:
        if self.config.node_id is not None:
            return self.config.node_id
        host = self.config.host
        if host in ("0.0.0.0", "::") or is_exempt(host):
            return random_node_id(self._rng)
        return generate_node_id(host, self._rng)  # BEP 42: bound to our public address

    def _load_table(self, now: float) -> RoutingTable:
        cfg = self.config
        path = self._table_path()
        data: bytes | None = None
        if path is not None:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("DHT: cannot read %s: %s", path, exc)

        def make(saved: bytes | None, own_id: bytes | None) -> RoutingTable:
            limits = {"max_per_ip": cfg.max_per_ip, "enforce_node_id": cfg.enforce_node_id}
            if saved is None:
                return RoutingTable(own_id or self._fresh_id(), now, **limits)  # type: ignore[arg-type]
            return RoutingTable.load(saved, now, own_id=own_id, **limits)  # type: ignore[arg-type]

        if data is not None:
            try:
                table = make(data, cfg.node_id)
            except SavedTableError as exc:
                log.warning("DHT: ignoring %s: %s", path, exc)
            else:
                host = cfg.host
                if host not in ("0.0.0.0", "::") and not verify_node_id(table.own_id, host):
                    return make(data, self._fresh_id())  # our address changed: a new BEP 42 id
                return table
        return make(None, cfg.node_id)

    async def save(self) -> None:
        """Write the routing table to the state dir (atomically: temp file, fsync, rename)."""
        path = self._table_path()
        if path is None or self._server is None:
            return
        data = self.table.save()

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)

        try:
            await trio.to_thread.run_sync(write)
        except OSError as exc:
            log.warning("DHT: cannot save the routing table to %s: %s", path, exc)

    # ------------------------------------------------------------------ receiving

    async def _receive_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, src = await self._sock.recvfrom(_RECV_SIZE)
            except OSError as exc:
                # ICMP errors from earlier sends surface here (ECONNREFUSED): not ours to fix.
                log.debug("DHT: recvfrom: %s", exc)
                continue
            self._counters["bytes_in"] += len(data)
            source = PeerAddress(str(src[0]), int(src[1]))
            try:
                await self._datagram(data, source)
            except TorrentfsError as exc:
                self._counters["malformed"] += 1
                log.debug("DHT: dropped datagram from %s: %s", source, exc)

    async def _datagram(self, data: bytes, source: PeerAddress) -> None:
        server = self.server
        now = trio.current_time()
        try:
            msg = decode_message(data)
        except KrpcError as exc:
            self._counters["malformed"] += 1
            reply = server.error_reply(exc, source, now, query_size=len(data))
            if reply is not None:
                await self._send(reply, source)
            return
        if isinstance(msg, Query):
            method = msg.body.method.decode()
            self._received[method] += 1
            self.recent_queries.append((method, source))
            out, actions = server.handle_query(msg, source, now, query_size=len(data))
            if out is not None:
                self._counters["answers"] += 1
                await self._send(out, source)
            self._ping_all(actions)
            return
        pending = self._pending.get(msg.tid)
        if pending is None or pending.address != source or pending.done.is_set():
            return  # unsolicited, late, or from someone else: ignore
        pending.reply = msg
        pending.done.set()

    async def _send(self, data: bytes, dest: PeerAddress) -> bool:
        assert self._sock is not None
        try:
            await self._sock.sendto(data, (dest.host, dest.port))
        except OSError as exc:
            log.debug("DHT: sendto %s: %s", dest, exc)
            return False
        self._counters["bytes_out"] += len(data)
        return True

    # ------------------------------------------------------------------ one query

    def _new_tid(self) -> bytes:
        while True:
            tid = self._rng.randbytes(4)
            if tid not in self._pending:
                return tid

    async def _query(self, dest: PeerAddress, body: QueryBody) -> Response:
        """Send one query and wait (at most ``query_timeout``) for its answer."""
        async with self._in_flight:
            tid = self._new_tid()
            pending = _Pending(dest)
            self._pending[tid] = pending
            try:
                self._counters["queries"] += 1
                if not await self._send(self.server.make_query(tid, body), dest):
                    raise DhtError(f"{dest.host}:{dest.port}: cannot send")
                with trio.move_on_after(self.config.query_timeout):
                    await pending.done.wait()
            finally:
                del self._pending[tid]
        reply = pending.reply
        if reply is None:
            self._counters["timeouts"] += 1
            raise DhtError(f"{dest.host}:{dest.port}: no answer")
        if isinstance(reply, ErrorReply):
            self._counters["errors"] += 1
            raise DhtError(f"{dest.host}:{dest.port}: error {reply.code} {reply.message}")
        self._counters["responses"] += 1
        return reply

    async def _query_node(self, node: NodeInfo, body: QueryBody) -> Response | None:
        """Query a known node; the routing table learns the outcome. None on failure."""
        try:
            reply = await self._query(node.address, body)
        except DhtError:
            self._ping_all(self.table.failed(node.node_id, trio.current_time()))
            return None
        self._heard(reply, node.address)
        return reply

    def _heard(self, reply: Response, source: PeerAddress) -> None:
        info = NodeInfo(reply.sender_id, source.host, source.port)
        self._ping_all(self.table.heard_from(info, trio.current_time(), responded=True))

    def _ping_all(self, actions: Iterable[PingRequest]) -> None:
        if self._nursery is None:
            return
        for action in actions:
            self._nursery.start_soon(self._query_node, action.node, Ping())

    # ------------------------------------------------------------------ public API

    async def ping(self, addr: PeerAddress) -> bytes:
        """Ping `addr`; its node id. Raises `DhtError` when it does not answer."""
        reply = await self._query(addr, Ping())
        self._heard(reply, addr)
        return reply.sender_id

    def add_node(self, addr: PeerAddress) -> None:
        """A node to try (a BEP 5 ``port`` message): pinged soon, added if it answers.

        Never blocks; beyond `ADD_NODE_QUEUE` waiting addresses new ones are dropped."""
        if not 0 < addr.port <= 0xFFFF:
            return
        try:
            self._add_send.send_nowait(addr)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    async def find_node(self, target: bytes) -> list[NodeInfo]:
        """The K closest nodes to `target` that answered an iterative find_node lookup."""
        lookup = await self._lookup(target, LookupKind.FIND_NODE)
        return lookup.closest_responded()

    async def get_peers(self, info_hash: bytes) -> GetPeersResult:
        """An iterative get_peers lookup: the peers found and who named them (bounded)."""
        lookup = await self._lookup(info_hash, LookupKind.GET_PEERS)
        return GetPeersResult(
            info_hash=info_hash,
            peers=tuple(FoundPeer(a, n) for a, n in lookup.peer_sources()),
            closest=tuple(lookup.closest_responded()),
            tokens=tuple(lookup.announce_targets()),
            queries=lookup.queries_sent,
            responses=lookup.responses,
        )

    async def announce_peer(
        self,
        info_hash: bytes,
        port: int,
        *,
        implied_port: bool = False,
        found: GetPeersResult | None = None,
    ) -> int:
        """Announce that we have `info_hash` on TCP `port` to the K closest nodes (BEP 5).

        Uses the tokens of `found` (a recent `get_peers` for the same hash) or looks them up.
        Returns how many nodes accepted the announce."""
        if self.config.read_only:
            return 0  # BEP 43: a read-only node stores nothing anywhere
        if found is None or found.info_hash != info_hash:
            found = await self.get_peers(info_hash)
        accepted = 0

        async def one(node: NodeInfo, token: bytes) -> None:
            nonlocal accepted
            body = AnnouncePeer(info_hash, port, token, implied_port=implied_port)
            if await self._query_node(node, body) is not None:
                accepted += 1

        async with trio.open_nursery() as nursery:
            for node, token in found.tokens:
                nursery.start_soon(one, node, token)
        return accepted

    # ------------------------------------------------------------------ lookups

    def _seeds(self, target: bytes) -> list[NodeInfo]:
        seeds = self.table.closest(target, 2 * K)
        if len(self.table) < K:
            seeds.extend(self._routers.values())
        return seeds

    async def _lookup(self, target: bytes, kind: LookupKind) -> Lookup:
        if not self._seeds(target):
            await self._ask_routers()
        async with self._lookups:
            cfg = self.config
            lookup = Lookup(
                target,
                kind,
                self._seeds(target),
                own_id=self.node_id,
                alpha=cfg.alpha,
                max_queries=cfg.max_lookup_queries,
                query_timeout=cfg.query_timeout,
            )
            self._counters["lookups"] += 1
            send, recv = trio.open_memory_channel[tuple[NodeInfo, Response | None]](cfg.alpha)

            async def ask(node: NodeInfo, body: FindNode | GetPeers) -> None:
                reply = await self._query_node(node, body)
                await send.send((node, reply))

            with trio.move_on_after(cfg.lookup_timeout):
                async with trio.open_nursery() as nursery:
                    while True:
                        for node, body in lookup.next_queries(trio.current_time()):
                            nursery.start_soon(ask, node, body)
                        if lookup.done:
                            break
                        node, reply = await recv.receive()
                        if reply is None:
                            lookup.on_timeout(node)
                        else:
                            lookup.on_response(node, reply, trio.current_time())
                    nursery.cancel_scope.cancel()
            return lookup

    async def bootstrap(self) -> int:
        """Ask the bootstrap nodes, then look up our own id (BEP 5), all bounded.

        Returns the size of the routing table afterwards."""
        await self._ask_routers()
        if self._seeds(self.node_id):
            await self.find_node(self.node_id)
        return len(self.table)

    async def _ask_routers(self) -> None:
        """find_node(our id) to every configured bootstrap node, within ``bootstrap_timeout``."""
        with trio.move_on_after(self.config.bootstrap_timeout):
            addresses = await self._resolve(self.config.bootstrap)
            async with trio.open_nursery() as nursery:
                for addr in addresses:
                    nursery.start_soon(self._ask_router, addr)

    async def _ask_router(self, addr: PeerAddress) -> None:
        try:
            reply = await self._query(addr, FindNode(self.node_id))
        except DhtError as exc:
            log.info("DHT: bootstrap node %s:%d: %s", addr.host, addr.port, exc)
            return
        self._routers[addr] = NodeInfo(reply.sender_id, addr.host, addr.port)

    async def _resolve(self, nodes: Iterable[PeerAddress]) -> list[PeerAddress]:
        family = stdlib_socket.AF_INET6 if ":" in self.config.host else stdlib_socket.AF_INET
        out: list[PeerAddress] = []
        for node in nodes:
            try:
                infos = await trio.socket.getaddrinfo(
                    node.host, node.port, family=family, type=stdlib_socket.SOCK_DGRAM
                )
            except OSError as exc:
                log.info("DHT: cannot resolve bootstrap node %s: %s", node.host, exc)
                continue
            for info in infos[:2]:
                out.append(PeerAddress(str(info[4][0]), int(info[4][1])))
        return out

    # ------------------------------------------------------------------ maintenance

    async def _add_node_loop(self) -> None:
        async for addr in self._add_recv:
            if self._sock is None:
                return
            try:
                await self.ping(addr)
            except DhtError:
                pass

    async def _maintenance_loop(self) -> None:
        if self.config.bootstrap or len(self.table):
            await self.bootstrap()
        last_save = trio.current_time()
        while True:
            await trio.sleep(MAINTENANCE_INTERVAL)
            now = trio.current_time()
            for target in self.table.refresh_targets(now, self._rng):
                await self.find_node(target)
            if len(self.table) < K and self.config.bootstrap:
                await self.bootstrap()
            if now - last_save >= SAVE_INTERVAL:
                last_save = now
                await self.save()
