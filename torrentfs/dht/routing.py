"""The DHT routing table: k-buckets over the 160-bit XOR metric (BEP 5).

Model (BEP 5, "Routing Table"):

* The id space is covered by buckets, each holding at most `K` (8) nodes. Only the bucket whose
  range contains our own id is split when full, so we know many nodes near us and a few far away.
* Node states: **good** -- responded to one of our queries within `GOOD_INTERVAL` (15 min), or has
  responded at some time and queried us within the last 15 min; **bad** -- failed to respond to
  `MAX_FAILURES` queries in a row; **questionable** -- everything else (incl. nodes that only ever
  queried us, and nodes loaded from a saved table).
* A new node meeting a full bucket that cannot split: it replaces a bad node if there is one;
  otherwise it waits in the bucket's replacement cache (at most K, newest kept) and the least
  recently seen questionable node is pinged (a `PingRequest` action for the I/O layer; one ping in
  flight per bucket). As BEP 5 says: a pinged node that answers stays, and the next questionable
  node is pinged while replacements wait; one that fails is pinged once more before it is
  discarded; a node that becomes bad (`MAX_FAILURES` failures in a row, pings or other queries)
  is replaced by the newest cached replacement.
* Buckets not changed for `REFRESH_INTERVAL` (15 min) need a refresh: `refresh_targets` returns a
  random id in each such bucket's range to run a find_node lookup on.

Sybil limit (our choice; BEP 5 leaves it open): at most `max_per_ip` nodes (default 1) per IP
address in the **whole table** (replacement caches: one per IP per bucket). libtorrent restricts
the same way (``restrict_routing_ips``). Local test networks on one IP pass ``max_per_ip=None``.
With ``enforce_node_id=True`` nodes whose id does not match their IP (BEP 42) are not inserted.

A node that changes its address keeps its old entry (the new endpoint is ignored): otherwise
anyone could hijack a known id. Read-only nodes (BEP 43) must not be inserted -- callers skip
``heard_from`` for queries with ``ro=1``.

`save` / `load` persist our id and the table's nodes as bencode so a restart can bootstrap from
them; loaded nodes start questionable. Pure: time is passed in as ``now``.
"""

from __future__ import annotations

import bisect
import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from ..bencode import decode as bdecode
from ..bencode import encode as bencode
from ..errors import BencodeError, TorrentfsError
from .krpc import (
    COMPACT_NODE6_LEN,
    COMPACT_NODE_LEN,
    KrpcError,
    NodeInfo,
    decode_nodes,
    decode_nodes6,
    encode_nodes,
)
from .node_id import NODE_ID_LEN, verify_node_id

__all__ = [
    "GOOD_INTERVAL",
    "MAX_FAILURES",
    "REFRESH_INTERVAL",
    "Bucket",
    "K",
    "NodeEntry",
    "NodeState",
    "PingRequest",
    "RoutingTable",
    "SavedTableError",
    "distance",
]

K = 8
GOOD_INTERVAL = 15 * 60.0
REFRESH_INTERVAL = 15 * 60.0
MAX_FAILURES = 2
_ID_SPACE = 1 << 160
_MAX_SAVED_NODES = 2000


class SavedTableError(TorrentfsError):
    """A saved routing table that cannot be loaded (corrupt or foreign file)."""


def distance(a: bytes, b: bytes) -> int:
    """The XOR metric of BEP 5, as an integer (smaller is closer)."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


class NodeState(Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class PingRequest:
    """Action for the I/O layer: ping `node`; report the outcome with `heard_from(...,
    responded=True)` or `failed(node.node_id, now)`."""

    node: NodeInfo


@dataclass(slots=True)
class NodeEntry:
    node: NodeInfo
    last_response: float | None = None
    last_query: float | None = None
    failures: int = 0
    ping_pending: bool = False

    def state(self, now: float) -> NodeState:
        if self.failures >= MAX_FAILURES:
            return NodeState.BAD
        if self.failures == 0 and self.last_response is not None:
            if now - self.last_response < GOOD_INTERVAL:
                return NodeState.GOOD
            if self.last_query is not None and now - self.last_query < GOOD_INTERVAL:
                return NodeState.GOOD
        return NodeState.QUESTIONABLE


@dataclass(slots=True)
class Bucket:
    """Ids in ``[lo, hi)``; `nodes` ordered least recently seen first."""

    lo: int
    hi: int
    last_changed: float
    nodes: list[NodeEntry]
    replacements: list[NodeEntry]  # oldest first; keep their history for promotion

    def covers(self, id_int: int) -> bool:
        return self.lo <= id_int < self.hi

    def find(self, node_id: bytes) -> int:
        for i, entry in enumerate(self.nodes):
            if entry.node.node_id == node_id:
                return i
        return -1


class RoutingTable:
    def __init__(
        self,
        own_id: bytes,
        now: float,
        *,
        k: int = K,
        max_per_ip: int | None = 1,
        enforce_node_id: bool = False,
    ) -> None:
        if len(own_id) != NODE_ID_LEN:
            raise ValueError("own id must be 20 bytes")
        self.own_id = own_id
        self._own_int = int.from_bytes(own_id, "big")
        self.k = k
        self.max_per_ip = max_per_ip
        self.enforce_node_id = enforce_node_id
        self._buckets: list[Bucket] = [Bucket(0, _ID_SPACE, now, [], [])]
        self._ip_count: dict[str, int] = {}

    # -- queries ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(b.nodes) for b in self._buckets)

    @property
    def buckets(self) -> tuple[Bucket, ...]:
        return tuple(self._buckets)

    def entries(self) -> Iterator[NodeEntry]:
        for bucket in self._buckets:
            yield from bucket.nodes

    def nodes(self) -> list[NodeInfo]:
        return [e.node for e in self.entries()]

    def get(self, node_id: bytes) -> NodeEntry | None:
        if len(node_id) != NODE_ID_LEN:
            return None
        bucket = self._bucket_for(int.from_bytes(node_id, "big"))
        i = bucket.find(node_id)
        return bucket.nodes[i] if i >= 0 else None

    def state(self, node_id: bytes, now: float) -> NodeState | None:
        entry = self.get(node_id)
        return entry.state(now) if entry else None

    def closest(self, target: bytes, n: int = K) -> list[NodeInfo]:
        """Up to `n` non-bad nodes closest to `target`, closest first."""
        t = int.from_bytes(target, "big")
        live = [e.node for b in self._buckets for e in b.nodes if e.failures < MAX_FAILURES]
        live.sort(key=lambda node: int.from_bytes(node.node_id, "big") ^ t)
        return live[:n]

    def refresh_targets(self, now: float, rng: random.Random) -> list[bytes]:
        """Random ids in every bucket unchanged for 15 min; those buckets count as refreshed."""
        targets = []
        for bucket in self._buckets:
            if now - bucket.last_changed >= REFRESH_INTERVAL:
                value = bucket.lo + rng.randrange(bucket.hi - bucket.lo)
                targets.append(value.to_bytes(NODE_ID_LEN, "big"))
                bucket.last_changed = now
        return targets

    # -- updates ----------------------------------------------------------------------------

    def heard_from(self, node: NodeInfo, now: float, *, responded: bool) -> list[PingRequest]:
        """Record that `node` answered one of our queries (`responded`) or queried us.

        Returns pings the I/O layer should send (questionable nodes in a full bucket).
        """
        if not self._acceptable(node):
            return []
        id_int = int.from_bytes(node.node_id, "big")
        bucket = self._bucket_for(id_int)
        i = bucket.find(node.node_id)
        if i >= 0:
            entry = bucket.nodes[i]
            if entry.node != node:
                return []  # same id from another endpoint: keep the one we know
            was_pinged = entry.ping_pending
            self._touch(bucket, i, now, responded=responded)
            if was_pinged and responded and bucket.replacements:
                return self._ping_next(bucket, now)  # BEP 5: go on with the next one
            return []
        entry = NodeEntry(node, now if responded else None, None if responded else now)
        return self._insert(entry, now)

    def failed(self, node_id: bytes, now: float) -> list[PingRequest]:
        """A query to `node_id` timed out or was answered with an error.

        Returns the pings to send next: the same node once more if a ping to it failed for the
        first time, or the next questionable node once a bad one made room for a replacement.
        """
        if len(node_id) != NODE_ID_LEN:
            return []
        bucket = self._bucket_for(int.from_bytes(node_id, "big"))
        i = bucket.find(node_id)
        if i < 0:
            return []
        entry = bucket.nodes[i]
        entry.failures += 1
        was_pinged = entry.ping_pending
        entry.ping_pending = False
        if entry.state(now) is not NodeState.BAD:
            if was_pinged:
                entry.ping_pending = True  # BEP 5: try once more before discarding it
                return [PingRequest(entry.node)]
            return []
        if self._promote_replacement(bucket, i, now) and bucket.replacements:
            return self._ping_next(bucket, now)
        return []

    def remove(self, node_id: bytes) -> None:
        if len(node_id) != NODE_ID_LEN:
            return
        bucket = self._bucket_for(int.from_bytes(node_id, "big"))
        i = bucket.find(node_id)
        if i >= 0:
            self._drop_ip(bucket.nodes.pop(i).node.host)

    # -- persistence ------------------------------------------------------------------------

    def save(self) -> bytes:
        """Our id and every non-bad node, bencoded: ``{id, nodes, nodes6}`` (compact)."""
        v4: list[NodeInfo] = []
        v6: list[NodeInfo] = []
        for entry in self.entries():
            if entry.failures >= MAX_FAILURES:
                continue
            (v6 if ":" in entry.node.host else v4).append(entry.node)
        return bencode(
            {b"id": self.own_id, b"nodes": encode_nodes(v4), b"nodes6": encode_nodes(v6)}
        )

    @classmethod
    def load(
        cls,
        data: bytes,
        now: float,
        *,
        k: int = K,
        max_per_ip: int | None = 1,
        enforce_node_id: bool = False,
        own_id: bytes | None = None,
    ) -> RoutingTable:
        """Rebuild a table from `save` output (nodes start questionable); `SavedTableError`.

        `own_id` replaces the saved id (e.g. a new BEP 42 id after our address changed)."""
        try:
            top = bdecode(data, max_depth=2, max_size=1 << 20)
        except BencodeError as e:
            raise SavedTableError(f"saved DHT table: {e}") from None
        if not isinstance(top, dict):
            raise SavedTableError("saved DHT table is not a dictionary")
        own = top.get(b"id")
        raw4 = top.get(b"nodes", b"")
        raw6 = top.get(b"nodes6", b"")
        if not isinstance(own, bytes) or len(own) != NODE_ID_LEN:
            raise SavedTableError("saved DHT table has no valid id")
        if not isinstance(raw4, bytes) or not isinstance(raw6, bytes):
            raise SavedTableError("saved DHT table nodes are not byte strings")
        nodes: list[NodeInfo] = []
        try:
            for raw, size, dec in (
                (raw4, COMPACT_NODE_LEN, decode_nodes),
                (raw6, COMPACT_NODE6_LEN, decode_nodes6),
            ):
                if len(raw) % size or len(raw) // size > _MAX_SAVED_NODES:
                    raise SavedTableError("saved DHT table has a malformed node list")
                for i in range(0, len(raw), size * 64):  # decode_nodes caps one string at 64
                    nodes.extend(dec(raw[i : i + size * 64]))
        except KrpcError as e:
            raise SavedTableError(f"saved DHT table: {e}") from None
        if own_id is not None:
            own = own_id
        table = cls(own, now, k=k, max_per_ip=max_per_ip, enforce_node_id=enforce_node_id)
        for node in nodes:
            if table._acceptable(node) and table.get(node.node_id) is None:
                table._insert(NodeEntry(node), now)
        return table

    # -- internals --------------------------------------------------------------------------

    def _acceptable(self, node: NodeInfo) -> bool:
        if len(node.node_id) != NODE_ID_LEN or node.node_id == self.own_id:
            return False
        if not 0 < node.port <= 0xFFFF:
            return False
        try:
            ipaddress.ip_address(node.host)
        except ValueError:
            return False
        return not (self.enforce_node_id and not verify_node_id(node.node_id, node.host))

    def _bucket_for(self, id_int: int) -> Bucket:
        i = bisect.bisect_right(self._buckets, id_int, key=lambda b: b.lo) - 1
        return self._buckets[i]

    def _ip_full(self, host: str) -> bool:
        return self.max_per_ip is not None and self._ip_count.get(host, 0) >= self.max_per_ip

    def _add_ip(self, host: str) -> None:
        self._ip_count[host] = self._ip_count.get(host, 0) + 1

    def _drop_ip(self, host: str) -> None:
        n = self._ip_count.get(host, 0) - 1
        if n > 0:
            self._ip_count[host] = n
        else:
            self._ip_count.pop(host, None)

    def _touch(self, bucket: Bucket, i: int, now: float, *, responded: bool) -> None:
        entry = bucket.nodes.pop(i)
        bucket.nodes.append(entry)  # most recently seen last
        if responded:
            entry.last_response = now
            entry.failures = 0
            entry.ping_pending = False
            bucket.last_changed = now
        else:
            entry.last_query = now

    def _insert(self, entry: NodeEntry, now: float) -> list[PingRequest]:
        node = entry.node
        id_int = int.from_bytes(node.node_id, "big")
        while True:
            bucket = self._bucket_for(id_int)
            if len(bucket.nodes) < self.k:
                if self._ip_full(node.host):
                    return []
                bucket.nodes.append(entry)
                self._add_ip(node.host)
                bucket.last_changed = now
                return []
            if bucket.covers(self._own_int) and bucket.hi - bucket.lo > 1:
                self._split(bucket)
                continue
            break
        if self._ip_full(node.host):
            return []
        for i, old in enumerate(bucket.nodes):
            if old.state(now) is NodeState.BAD:
                self._drop_ip(old.node.host)
                del bucket.nodes[i]
                bucket.nodes.append(entry)
                self._add_ip(node.host)
                bucket.last_changed = now
                return []
        self._add_replacement(bucket, entry)
        return self._ping_next(bucket, now)

    def _ping_next(self, bucket: Bucket, now: float) -> list[PingRequest]:
        """Ping the least recently seen questionable node, unless a ping is in flight."""
        for old in bucket.nodes:  # least recently seen first
            if old.ping_pending:
                return []  # one questionable node at a time (BEP 5)
        for old in bucket.nodes:
            if old.state(now) is NodeState.QUESTIONABLE:
                old.ping_pending = True
                return [PingRequest(old.node)]
        return []

    def _add_replacement(self, bucket: Bucket, entry: NodeEntry) -> None:
        cache = bucket.replacements
        for i, old in enumerate(cache):
            if old.node.node_id == entry.node.node_id or old.node.host == entry.node.host:
                del cache[i]
                break
        cache.append(entry)
        if len(cache) > self.k:
            del cache[0]

    def _promote_replacement(self, bucket: Bucket, i: int, now: float) -> bool:
        while bucket.replacements:
            spare = bucket.replacements.pop()  # newest first
            host = spare.node.host
            if self._ip_full(host) and bucket.nodes[i].node.host != host:
                continue
            self._drop_ip(bucket.nodes.pop(i).node.host)
            bucket.nodes.append(spare)  # it was seen recently
            self._add_ip(host)
            bucket.last_changed = now
            return True
        return False

    def _split(self, bucket: Bucket) -> None:
        mid = (bucket.lo + bucket.hi) // 2
        low = Bucket(bucket.lo, mid, bucket.last_changed, [], [])
        high = Bucket(mid, bucket.hi, bucket.last_changed, [], [])
        for entry in bucket.nodes:
            target = low if int.from_bytes(entry.node.node_id, "big") < mid else high
            target.nodes.append(entry)
        for spare in bucket.replacements:
            target = low if int.from_bytes(spare.node.node_id, "big") < mid else high
            target.replacements.append(spare)
        i = self._buckets.index(bucket)
        self._buckets[i : i + 1] = [low, high]
