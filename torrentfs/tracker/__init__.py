"""Tracker protocols, sans-IO (L2): the values both tracker codecs share.

A tracker is asked "who else has this torrent?" and answers with peer addresses and its own
pacing (BEP 3). The same question travels over HTTP (`http_codec`, BEP 3/7/23/48) or UDP
(`udp_codec`, BEP 15); this module holds what both sides of that split agree on: the request
(`AnnounceRequest`), the answer (`AnnounceResponse`, `ScrapeStats`) and the compact peer formats
(BEP 23 for IPv4, BEP 7 for IPv6).

Guarantees: no I/O, no clock, no trio here. Peer lists handed out are validated -- a port of 0,
an unspecified or malformed address is dropped, never passed on -- deduplicated, and capped at
`MAX_PEERS`, so a hostile tracker cannot flood the peer dialer.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

from ..errors import TrackerError
from ..types import PeerAddress

__all__ = [
    "COMPACT_PEER6_LEN",
    "COMPACT_PEER_LEN",
    "DEFAULT_INTERVAL",
    "DEFAULT_NUMWANT",
    "MAX_PEERS",
    "AnnounceRequest",
    "AnnounceResponse",
    "Event",
    "PeerCollector",
    "ScrapeStats",
    "TrackerFailure",
    "parse_compact_peers",
    "parse_compact_peers6",
]

DEFAULT_NUMWANT = 50
"""Peers asked for when the caller does not say (BEP 3 suggests trackers default to 50)."""

DEFAULT_INTERVAL = 1800
"""Used when a tracker omits ``interval`` or sends a negative one (30 minutes, as most do)."""

MAX_PEERS = 2000
"""Peers kept from one answer; more is a tracker misbehaving (or an amplification attempt)."""

COMPACT_PEER_LEN = 6
"""BEP 23: 4 bytes IPv4 address + 2 bytes port, network byte order."""

COMPACT_PEER6_LEN = 18
"""BEP 7: 16 bytes IPv6 address + 2 bytes port, network byte order."""


class TrackerFailure(TrackerError):
    """The tracker answered, but refused: its ``failure reason`` (BEP 3) or error packet text
    (BEP 15) is `reason`. Other `TrackerError`s mean it could not be reached or spoke garbage."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Event(enum.Enum):
    """The announce ``event`` (BEP 3); the value is the HTTP spelling, UDP numbers are in BEP 15.

    `NONE` is the regular re-announce and is not sent over HTTP at all.
    """

    NONE = ""
    COMPLETED = "completed"
    STARTED = "started"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """What we tell a tracker in one announce (BEP 3 field names).

    `key` is a random 32-bit number that stays the same for the whole session, so a tracker can
    recognise us across IP address changes (BEP 3 "key", BEP 15 "key"). `numwant` None means the
    tracker's default. `tracker id` is per tracker and therefore not part of the request.
    """

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: Event = Event.NONE
    numwant: int | None = None
    key: int | None = None

    def __post_init__(self) -> None:
        # Our own values: a mistake here is a bug, reported before anything is sent.
        if len(self.info_hash) != 20 or len(self.peer_id) != 20:
            raise ValueError("info_hash and peer_id must be 20 bytes")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")
        if min(self.uploaded, self.downloaded, self.left) < 0:
            raise ValueError("uploaded/downloaded/left must not be negative")
        if self.numwant is not None and self.numwant < 0:
            raise ValueError("numwant must not be negative")
        if self.key is not None and not 0 <= self.key <= 0xFFFFFFFF:
            raise ValueError("key must be a 32-bit unsigned number")


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """A tracker's successful answer (BEP 3, with BEP 7 ``peers6``).

    `peers` holds IPv4 peers (and peers given by DNS name in the non-compact form), `peers6`
    IPv6 ones. `interval`/`min_interval` are seconds as the tracker sent them (the client
    clamps them to sane bounds); `complete`/`incomplete` are seeders/leechers when known.
    """

    interval: int
    min_interval: int | None = None
    peers: tuple[PeerAddress, ...] = ()
    peers6: tuple[PeerAddress, ...] = ()
    tracker_id: bytes | None = None
    warning: str | None = None
    complete: int | None = None
    incomplete: int | None = None


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """One torrent's counters from a scrape (BEP 48 / BEP 15): seeders, completions, leechers."""

    complete: int
    downloaded: int
    incomplete: int


def parse_compact_peers(data: bytes) -> list[PeerAddress]:
    """Decode BEP 23 compact IPv4 peers; bad entries (port 0, 0.0.0.0) and a ragged tail are
    dropped, at most `MAX_PEERS` are kept."""
    collector = PeerCollector()
    collector.add_compact(data, COMPACT_PEER_LEN)
    return collector.peers


def parse_compact_peers6(data: bytes) -> list[PeerAddress]:
    """Decode BEP 7 compact IPv6 peers (18 bytes each), with the same filtering as IPv4."""
    collector = PeerCollector()
    collector.add_compact(data, COMPACT_PEER6_LEN)
    return collector.peers6 + collector.peers  # IPv4-mapped entries come out as IPv4


# One DNS label (RFC 1123): letters, digits, inner hyphens, at most 63 characters.
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def _is_hostname(text: str) -> bool:
    """A conservative DNS name for the non-compact peer form, whose "ip" may be a name (BEP 3).

    Checked label by label (no backtracking regex over the whole name); all-numeric names are
    refused because they are malformed addresses, not names.
    """
    labels = text.removesuffix(".").split(".")
    if not 0 < len(text) <= 253 or labels[-1].isdigit():
        return False
    return all(_LABEL_RE.match(label) for label in labels)


@dataclass(slots=True)
class PeerCollector:
    """Accumulates validated, deduplicated peers from any of the tracker peer formats."""

    peers: list[PeerAddress] = field(default_factory=list)
    peers6: list[PeerAddress] = field(default_factory=list)
    _seen: set[PeerAddress] = field(default_factory=set)

    def full(self) -> bool:
        return len(self._seen) >= MAX_PEERS

    def add_compact(self, data: bytes, entry_len: int) -> None:
        """Add compact entries: 4 or 16 address bytes then a big-endian port."""
        view = memoryview(data)
        addr_len = entry_len - 2
        for pos in range(0, len(view) - entry_len + 1, entry_len):
            if self.full():
                return
            port = int.from_bytes(view[pos + addr_len : pos + entry_len], "big")
            addr = bytes(view[pos : pos + addr_len])
            if addr_len == 4:
                self._add(ipaddress.IPv4Address(addr), port)
            else:
                self._add(ipaddress.IPv6Address(addr), port)

    def add_entry(self, ip: object, port: object) -> None:
        """Add one non-compact entry (``ip`` string, ``port`` integer); invalid ones are dropped."""
        if self.full() or not isinstance(ip, bytes) or type(port) is not int:
            return
        if not 0 < port <= 0xFFFF or len(ip) > 253:
            return
        try:
            text = ip.decode("ascii")
        except UnicodeDecodeError:
            return
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
        except ValueError:
            if _is_hostname(text):
                self._append(PeerAddress(text.rstrip(".").lower(), port), self.peers)
            return
        self._add(address, port)

    def _add(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
        if port == 0 or address.is_unspecified or address.is_multicast:
            return
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is None:
                self._append(PeerAddress(str(address), port), self.peers6)
                return
            address = mapped
            if address.is_unspecified or address.is_multicast:
                return
        self._append(PeerAddress(str(address), port), self.peers)

    def _append(self, peer: PeerAddress, target: list[PeerAddress]) -> None:
        if peer not in self._seen:
            self._seen.add(peer)
            target.append(peer)
