"""Answering DHT queries (BEP 5) safely: peer store, tokens, rate limits, read-only mode.

`DhtServer.handle_query` turns one decoded query from one source address into the bytes to send
back (or nothing), updating the routing table and the peer store on the way. Guarantees:

* **Never an amplifier.** Each source IP gets at most `RateLimiter.rate` answers per second
  (token bucket, burst `burst`), and all sources together at most `global_rate`; over the limit
  the query is dropped silently. Answers are bounded in size (K nodes, `MAX_VALUES_PER_REPLY`
  peers), and, given the query's size, never more than `MAX_AMPLIFICATION` times larger than
  the query (a get_peers answer drops its ``nodes`` first -- BEP 5 sends values *instead of*
  nodes -- then values; an error its message): a spoofed query buys at most that factor.
* **Bounded state.** The peer store holds at most `max_info_hashes` info-hashes,
  `max_peers_per_hash` peers per info-hash and `max_peers` peers in all (the info-hash announced
  least recently loses its oldest peer first), each expiring after `PEER_TTL` (30 min); the rate
  limiter tracks at most `max_sources` IPs (least recently seen forgotten first).
* **announce_peer needs a token** issued to the same IP by a recent get_peers (BEP 5); the peer's
  port is the query's source port when ``implied_port`` is set.
* **Read-only (BEP 43):** a read-only node answers nothing, and marks its own queries ``ro=1``
  (`make_query`). Queries carrying ``ro=1`` are answered but their sender is not added to our
  routing table.
* Responses carry the ``ip`` field (BEP 42): the source address as we saw it.
* Malformed queries that still had a transaction id get a KRPC error (203, or 204 for an unknown
  method) via `error_reply`, also rate limited.

Pure: time is ``now``; randomness (which peers to return) comes from the caller's `random.Random`.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..types import PeerAddress
from .krpc import (
    ERROR_PROTOCOL,
    AnnouncePeer,
    ErrorReply,
    FindNode,
    GetPeers,
    KrpcError,
    Message,
    NodeInfo,
    Ping,
    Query,
    QueryBody,
    Response,
    encode_message,
)
from .routing import K, PingRequest, RoutingTable
from .tokens import TokenManager

__all__ = [
    "MAX_AMPLIFICATION",
    "MAX_VALUES_PER_REPLY",
    "PEER_TTL",
    "VERSION",
    "DhtServer",
    "PeerStore",
    "RateLimiter",
]

VERSION = b"TF\x00\x01"
"""Our ``v`` (BEP 5 suggests two client letters and two version bytes)."""
PEER_TTL = 30 * 60.0
MAX_VALUES_PER_REPLY = 50
"""Peers in one get_peers answer: 50 * 6 bytes keeps it well under a 1500-byte datagram."""
MAX_AMPLIFICATION = 8
"""An answer is at most this many times the size of the query it answers (the smallest valid
get_peers query, ~90 bytes, still gets 8 nodes, a token and ~45 IPv4 peers)."""


class PeerStore:
    """info_hash -> announced peers, with expiry and hard bounds."""

    def __init__(
        self,
        *,
        max_info_hashes: int = 4096,
        max_peers_per_hash: int = 256,
        max_peers: int = 16384,
        ttl: float = PEER_TTL,
    ) -> None:
        self.max_info_hashes = max_info_hashes
        self.max_peers_per_hash = max_peers_per_hash
        self.max_peers = max_peers
        self.ttl = ttl
        self._count = 0  # peers over all info-hashes
        # Insertion order is expiry order because every entry gets the same ttl.
        self._hashes: OrderedDict[bytes, OrderedDict[PeerAddress, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hashes)

    def peer_count(self) -> int:
        """Peers stored over all info-hashes."""
        return self._count

    def announce(self, info_hash: bytes, peer: PeerAddress, now: float) -> None:
        self.expire(now)
        peers = self._hashes.get(info_hash)
        if peers is None:
            if len(self._hashes) >= self.max_info_hashes:
                _, dropped = self._hashes.popitem(last=False)  # the one with the oldest announce
                self._count -= len(dropped)
            peers = self._hashes[info_hash] = OrderedDict()
        else:
            self._hashes.move_to_end(info_hash)
        if peers.pop(peer, None) is not None:
            self._count -= 1
        peers[peer] = now + self.ttl
        self._count += 1
        while len(peers) > self.max_peers_per_hash:
            peers.popitem(last=False)
            self._count -= 1
        while self._count > self.max_peers:
            oldest_hash, oldest = next(iter(self._hashes.items()))
            oldest.popitem(last=False)
            self._count -= 1
            if not oldest:
                del self._hashes[oldest_hash]

    def get(
        self,
        info_hash: bytes,
        now: float,
        rng: random.Random,
        limit: int = MAX_VALUES_PER_REPLY,
        *,
        v6: bool | None = None,
    ) -> list[PeerAddress]:
        """Up to `limit` unexpired peers (a random sample when there are more), only IPv6 or
        only IPv4 ones if `v6` says so."""
        self.expire(now)
        peers = self._hashes.get(info_hash)
        if not peers:
            return []
        found = list(peers) if v6 is None else [p for p in peers if (":" in p.host) == v6]
        return found if len(found) <= limit else rng.sample(found, limit)

    def expire(self, now: float) -> None:
        for info_hash in list(self._hashes):
            peers = self._hashes[info_hash]
            while peers:
                peer, expires = next(iter(peers.items()))
                if expires > now:
                    break
                del peers[peer]
                self._count -= 1
            if not peers:
                del self._hashes[info_hash]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    """Token buckets per source IP plus one global bucket."""

    rate: float = 10.0
    burst: float = 30.0
    global_rate: float = 100.0
    max_sources: int = 4096
    _sources: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)
    _global: _Bucket | None = None

    def allow(self, ip: str, now: float) -> bool:
        """Whether to answer one more query from `ip` now (and count it if so).

        The source's own bucket is asked first: a flooder over its limit does not use up the
        global budget, so it cannot starve everybody else."""
        if self._global is None:
            self._global = _Bucket(self.global_rate, now)
        bucket = self._sources.get(ip)
        if bucket is None:
            if len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
            bucket = self._sources[ip] = _Bucket(self.burst, now)
        else:
            self._sources.move_to_end(ip)
        if not self._take(bucket, self.rate, self.burst, now):
            return False
        if not self._take(self._global, self.global_rate, self.global_rate, now):
            bucket.tokens += 1.0  # not answered: the source keeps its token
            return False
        return True

    @staticmethod
    def _take(bucket: _Bucket, rate: float, burst: float, now: float) -> bool:
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False


class DhtServer:
    """Our side of BEP 5 as a responder, plus helpers to build our own queries."""

    def __init__(
        self,
        table: RoutingTable,
        tokens: TokenManager,
        rng: random.Random,
        *,
        peers: PeerStore | None = None,
        rate_limiter: RateLimiter | None = None,
        read_only: bool = False,
        version: bytes | None = VERSION,
    ) -> None:
        self.table = table
        self.tokens = tokens
        self.rng = rng
        self.peers = peers if peers is not None else PeerStore()
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.read_only = read_only
        self.version = version
        self.dropped = 0

    @property
    def own_id(self) -> bytes:
        return self.table.own_id

    def make_query(self, tid: bytes, body: QueryBody) -> bytes:
        """Encode one of our queries (with our id, version and, if read-only, ``ro=1``)."""
        return encode_message(
            Query(tid, self.own_id, body, version=self.version, read_only=self.read_only)
        )

    def handle_query(
        self, query: Query, source: PeerAddress, now: float, *, query_size: int | None = None
    ) -> tuple[bytes | None, list[PingRequest]]:
        """Answer `query` from `source`: (datagram to send back or None, routing actions).

        `query_size` (the datagram's length) bounds the answer to `MAX_AMPLIFICATION` times it."""
        if self.read_only:
            return None, []
        if not self.rate_limiter.allow(source.host, now):
            self.dropped += 1
            return None, []  # a flood changes nothing here, not even the routing table
        actions: list[PingRequest] = []
        if not query.read_only:
            actions = self.table.heard_from(
                NodeInfo(query.sender_id, source.host, source.port), now, responded=False
            )
        reply = self._answer(query, source, now)
        return _encode_within(reply, query_size), actions

    def error_reply(
        self, error: KrpcError, source: PeerAddress, now: float, *, query_size: int | None = None
    ) -> bytes | None:
        """The KRPC error answer to a malformed query, if it had a transaction id."""
        if self.read_only or error.tid is None:
            return None
        if not self.rate_limiter.allow(source.host, now):
            self.dropped += 1
            return None
        return _encode_within(
            ErrorReply(error.tid, error.code, str(error)[:128], version=self.version, ip=source),
            query_size,
        )

    def _answer(self, query: Query, source: PeerAddress, now: float) -> Message:
        body = query.body
        tid = query.tid
        if isinstance(body, Ping):
            return self._response(tid, source)
        if isinstance(body, FindNode):
            return self._response(tid, source, nodes=self._nodes_for(body.target, source))
        if isinstance(body, GetPeers):
            values = self.peers.get(body.info_hash, now, self.rng, v6=":" in source.host)
            return self._response(
                tid,
                source,
                nodes=self._nodes_for(body.info_hash, source),
                values=values,
                token=self.tokens.issue(source.host, now),
            )
        assert isinstance(body, AnnouncePeer)
        if not self.tokens.check(body.token, source.host, now):
            return ErrorReply(tid, ERROR_PROTOCOL, "bad token", version=self.version, ip=source)
        port = source.port if body.implied_port else body.port
        self.peers.announce(body.info_hash, PeerAddress(source.host, port), now)
        return self._response(tid, source)

    def _nodes_for(self, target: bytes, source: PeerAddress) -> list[NodeInfo]:
        v6 = ":" in source.host
        return [n for n in self.table.closest(target, 4 * K) if (":" in n.host) == v6][:K]

    def _response(
        self,
        tid: bytes,
        source: PeerAddress,
        *,
        nodes: Iterable[NodeInfo] = (),
        values: Iterable[PeerAddress] = (),
        token: bytes | None = None,
    ) -> Response:
        node_list = tuple(nodes)
        v6 = ":" in source.host
        return Response(
            tid,
            self.own_id,
            nodes=() if v6 else node_list,
            nodes6=node_list if v6 else (),
            values=tuple(values),
            token=token,
            version=self.version,
            ip=source,
        )


def _encode_within(reply: Message, query_size: int | None) -> bytes | None:
    """`reply` encoded in at most `MAX_AMPLIFICATION` * `query_size` bytes, shrunk to fit if it
    must be (a Response loses its nodes when it has values, then values; an error its message);
    None if even that does not fit."""
    data = encode_message(reply)
    if query_size is None:
        return data
    limit = MAX_AMPLIFICATION * query_size
    if len(data) <= limit:
        return data
    if isinstance(reply, ErrorReply):
        reply = replace(
            reply, message=reply.message[: max(0, len(reply.message) - len(data) + limit)]
        )
    elif isinstance(reply, Response) and reply.values:
        reply = replace(reply, nodes=(), nodes6=())
        data = encode_message(reply)
        if len(data) > limit:
            per_value = 20 if ":" in reply.values[0].host else 8  # "6:" + 6, "18:" + 18 bytes
            keep = max(0, len(reply.values) - -(-(len(data) - limit) // per_value))
            reply = replace(reply, values=reply.values[:keep])
    data = encode_message(reply)
    return data if len(data) <= limit else None
