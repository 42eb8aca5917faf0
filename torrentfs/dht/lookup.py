"""Iterative find_node / get_peers lookups (BEP 5, Kademlia), as a sans-IO state machine.

The caller (the trio DHT node) loops: send what `next_queries(now)` returns, feed answers to
`on_response`, errors to `on_error`, and call `timed_out(now)` (or `on_timeout` for one node) when
waits expire, until `done`. Guarantees:

* At most `alpha` (3) queries in flight; candidates are tried closest-first by XOR distance.
* Every node is queried at most once, and so is every endpoint (a Sybil answering under many ids
  from one address gets one query); our own id is never a candidate.
* The candidate list is bounded (`max_candidates`, 8*K), as are the total queries (`max_queries`,
  100) and the peers collected (`max_peers`): a hostile network cannot make a lookup run forever
  or grow without bound.
* The lookup ends when the K closest live candidates have all answered, or nothing closer is left
  to ask, or the query budget is spent -- and nothing is in flight.
* For get_peers, `peers` collects ``values`` from every responder (deduplicated, in arrival
  order; `peer_sources` says which node gave each first) and `announce_targets` gives the K
  closest responders that sent a token: where the I/O layer sends announce_peer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ..types import PeerAddress
from .krpc import FindNode, GetPeers, NodeInfo, Response
from .routing import K

__all__ = [
    "ALPHA",
    "DEFAULT_QUERY_TIMEOUT",
    "MAX_QUERIES",
    "Lookup",
    "LookupKind",
]

ALPHA = 3
MAX_QUERIES = 100
DEFAULT_QUERY_TIMEOUT = 5.0
MAX_PEERS = 2000


class LookupKind(Enum):
    FIND_NODE = "find_node"
    GET_PEERS = "get_peers"


class _State(Enum):
    NEW = 0
    IN_FLIGHT = 1
    RESPONDED = 2
    FAILED = 3


@dataclass(slots=True)
class _Candidate:
    node: NodeInfo
    distance: int
    state: _State = _State.NEW
    sent_at: float = 0.0
    token: bytes | None = None


class Lookup:
    def __init__(
        self,
        target: bytes,
        kind: LookupKind,
        seeds: Iterable[NodeInfo],
        *,
        own_id: bytes | None = None,
        k: int = K,
        alpha: int = ALPHA,
        max_candidates: int = 8 * K,
        max_queries: int = MAX_QUERIES,
        query_timeout: float = DEFAULT_QUERY_TIMEOUT,
        max_peers: int = MAX_PEERS,
    ) -> None:
        if len(target) != 20:
            raise ValueError("lookup target must be 20 bytes")
        self.target = target
        self.kind = kind
        self.k = k
        self.alpha = alpha
        self.max_candidates = max_candidates
        self.max_queries = max_queries
        self.query_timeout = query_timeout
        self.max_peers = max_peers
        self._target_int = int.from_bytes(target, "big")
        self._own_id = own_id
        self._candidates: dict[bytes, _Candidate] = {}
        self._order: list[_Candidate] = []  # sorted by distance
        self._in_flight: dict[bytes, _Candidate] = {}  # kept even if trimmed from _order
        self._seen_endpoints: set[tuple[str, int]] = set()
        self._queried_ids: set[bytes] = set()
        self._peers: dict[PeerAddress, NodeInfo] = {}
        self.queries_sent = 0
        self.responses = 0
        self._add_nodes(seeds)

    # -- state ------------------------------------------------------------------------------

    @property
    def query(self) -> FindNode | GetPeers:
        if self.kind is LookupKind.GET_PEERS:
            return GetPeers(self.target)
        return FindNode(self.target)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def peers(self) -> list[PeerAddress]:
        return list(self._peers)

    def peer_sources(self) -> list[tuple[PeerAddress, NodeInfo]]:
        """Every peer found, with the node whose ``values`` named it first."""
        return list(self._peers.items())

    @property
    def done(self) -> bool:
        return not self._in_flight and not self._wanted()

    def closest_responded(self, n: int | None = None) -> list[NodeInfo]:
        """The closest nodes that answered, closest first (the result of a find_node lookup)."""
        found = [c.node for c in self._order if c.state is _State.RESPONDED]
        return found[: self.k if n is None else n]

    def announce_targets(self) -> list[tuple[NodeInfo, bytes]]:
        """(node, token) for the K closest responders that gave a token (for announce_peer)."""
        out = [
            (c.node, c.token)
            for c in self._order
            if c.state is _State.RESPONDED and c.token is not None
        ]
        return out[: self.k]

    # -- driving ----------------------------------------------------------------------------

    def next_queries(self, now: float) -> list[tuple[NodeInfo, FindNode | GetPeers]]:
        """Nodes to query now (closest first), each with the query to send; marks them sent."""
        out = []
        for cand in self._wanted():
            if len(self._in_flight) >= self.alpha:
                break
            cand.state = _State.IN_FLIGHT
            cand.sent_at = now
            self._in_flight[cand.node.node_id] = cand
            self._queried_ids.add(cand.node.node_id)
            self.queries_sent += 1
            out.append((cand.node, self.query))
        return out

    def on_response(self, node: NodeInfo, response: Response, now: float) -> None:
        """An answer from `node` (the I/O layer matched it to our query by transaction id)."""
        cand = self._candidates.get(node.node_id) or self._in_flight.get(node.node_id)
        if cand is None or cand.node != node or cand.state is _State.RESPONDED:
            return
        if response.sender_id != node.node_id:
            # The node answered with a different id: treat the query as failed.
            self._fail(cand)
            return
        self._in_flight.pop(node.node_id, None)
        cand.state = _State.RESPONDED
        cand.token = response.token
        self.responses += 1
        for peer in response.values:
            if len(self._peers) >= self.max_peers:
                break
            self._peers.setdefault(peer, node)
        self._add_nodes((*response.nodes, *response.nodes6))

    def on_error(self, node: NodeInfo) -> None:
        """`node` answered with a KRPC error (or garbage): it will not help this lookup."""
        cand = self._in_flight.get(node.node_id)
        if cand is not None and cand.node == node:
            self._fail(cand)

    on_timeout = on_error

    def timed_out(self, now: float) -> list[NodeInfo]:
        """Fail every query older than `query_timeout`; returns those nodes (for the table)."""
        expired = [c for c in self._in_flight.values() if now - c.sent_at >= self.query_timeout]
        for cand in expired:
            self._fail(cand)
        return [c.node for c in expired]

    # -- internals --------------------------------------------------------------------------

    def _fail(self, cand: _Candidate) -> None:
        self._in_flight.pop(cand.node.node_id, None)
        cand.state = _State.FAILED

    def _wanted(self) -> list[_Candidate]:
        """Unqueried candidates closer than the K-th closest responder, closest first."""
        if self.queries_sent >= self.max_queries:
            return []
        out = []
        responded = 0
        for cand in self._order:
            if responded >= self.k:
                break
            if cand.state is _State.RESPONDED:
                responded += 1
            elif cand.state is _State.NEW:
                out.append(cand)
        return out[: self.max_queries - self.queries_sent]

    def _add_nodes(self, nodes: Iterable[NodeInfo]) -> None:
        changed = False
        for node in nodes:
            if node.node_id == self._own_id or node.node_id in self._candidates:
                continue
            if node.node_id in self._queried_ids:
                continue
            endpoint = (node.host, node.port)
            if endpoint in self._seen_endpoints or not 0 < node.port <= 0xFFFF:
                continue
            self._seen_endpoints.add(endpoint)
            cand = _Candidate(node, int.from_bytes(node.node_id, "big") ^ self._target_int)
            self._candidates[node.node_id] = cand
            self._order.append(cand)
            changed = True
        if changed:
            self._order.sort(key=lambda c: c.distance)
            for cand in self._order[self.max_candidates :]:
                del self._candidates[cand.node.node_id]
            del self._order[self.max_candidates :]
