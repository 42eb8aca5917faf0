"""UDP tracker protocol, sans-IO (BEP 15).

Packets (all integers big-endian):

* connect: ``protocol_id`` (the magic 0x41727101980), ``action`` 0, ``transaction_id`` ->
  ``action``, ``transaction_id``, ``connection_id``;
* announce (action 1): connection id, info-hash, peer id, counters, event, key, num_want, port ->
  interval, leechers, seeders, then compact peers: 6 bytes each, or 18 bytes each when the
  tracker was reached over IPv6;
* scrape (action 2): up to 74 info-hashes -> seeders, completed, leechers per info-hash;
* error (action 3): a message in place of any answer.

`UdpAnnounce` / `UdpScrape` are the client's state machines for one exchange, connect step
included. They decide what to send and how long to wait for it; the caller owns the socket and
the clock (`torrentfs.net.tracker_client`). Guarantees:

* An answer counts only if its transaction id is the one we are waiting for; anything else
  (stray, late, spoofed, too short to tell) is ignored, not an error.
* A connection id is reused while younger than `CONNECTION_ID_LIFETIME` (60 s, BEP 15) and
  re-requested when it expired, also in the middle of retransmissions.
* Waits follow the spec's schedule ``15 * 2**n`` seconds, n = 0..8; the base is a parameter so
  loopback tests and impatient users can shorten it. After the last wait the exchange fails with
  `TrackerError`. Only `TrackerError` (incl. `TrackerFailure` for error packets) leaves here.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from ..errors import TrackerError
from ..types import PeerAddress
from . import (
    COMPACT_PEER6_LEN,
    COMPACT_PEER_LEN,
    DEFAULT_INTERVAL,
    AnnounceRequest,
    AnnounceResponse,
    Event,
    PeerCollector,
    ScrapeStats,
    TrackerFailure,
)

__all__ = [
    "ACTION_ANNOUNCE",
    "ACTION_CONNECT",
    "ACTION_ERROR",
    "ACTION_SCRAPE",
    "CONNECTION_ID_LIFETIME",
    "DEFAULT_RETRANSMIT_BASE",
    "MAX_RETRANSMITS",
    "MAX_SCRAPE_HASHES",
    "PROTOCOL_ID",
    "AnnouncePacket",
    "ConnectPacket",
    "ConnectionId",
    "ScrapePacket",
    "UdpAnnounce",
    "UdpScrape",
    "UdpTransaction",
    "decode_announce_response",
    "decode_connect_response",
    "decode_error",
    "decode_header",
    "decode_request",
    "decode_scrape_response",
    "encode_announce_request",
    "encode_announce_response",
    "encode_connect_request",
    "encode_connect_response",
    "encode_error",
    "encode_scrape_request",
    "encode_scrape_response",
    "parse_udp_url",
    "retransmit_timeout",
]

PROTOCOL_ID = 0x41727101980
ACTION_CONNECT = 0
ACTION_ANNOUNCE = 1
ACTION_SCRAPE = 2
ACTION_ERROR = 3

CONNECTION_ID_LIFETIME = 60.0
"""Seconds a client may use a connection id (BEP 15; trackers accept it for two minutes)."""

DEFAULT_RETRANSMIT_BASE = 15.0
MAX_RETRANSMITS = 8
"""BEP 15: wait ``15 * 2**n`` seconds, n from 0 "up to 8 (3840 seconds)"."""

MAX_SCRAPE_HASHES = 74
"""Info-hashes per scrape request that fit the response in a 1500-byte packet (BEP 15)."""

MAX_DATAGRAM = 65536

MAX_CONNECTS = 4
"""Connect answers accepted within one exchange. A tracker that keeps answering connects but
never the request would otherwise keep the exchange alive forever (ids expire after 60 s)."""

EVENT_NUMBERS = {Event.NONE: 0, Event.COMPLETED: 1, Event.STARTED: 2, Event.STOPPED: 3}
_EVENTS_BY_NUMBER = {number: event for event, number in EVENT_NUMBERS.items()}

_HEADER = struct.Struct(">ii")  # action, transaction_id
_CONNECT_REQUEST = struct.Struct(">qii")
_CONNECT_RESPONSE = struct.Struct(">iiq")
_ANNOUNCE_REQUEST = struct.Struct(">qii20s20sqqqiIIiH")
_ANNOUNCE_RESPONSE = struct.Struct(">iiiii")
_SCRAPE_REQUEST = struct.Struct(">qii")
_SCRAPE_ENTRY = struct.Struct(">iii")

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
MAX_MESSAGE = 1024


def retransmit_timeout(n: int, base: float = DEFAULT_RETRANSMIT_BASE) -> float:
    """Seconds to wait for an answer to the n-th transmission (n = 0 is the first send)."""
    return base * 2**n


def parse_udp_url(url: str) -> tuple[str, int]:
    """Host and port of a ``udp://host:port[/...]`` tracker URL (BEP 15 has no default port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TrackerError(f"malformed UDP tracker URL {url!r}: {e}") from None
    if parts.scheme.lower() != "udp" or not parts.hostname or not port:
        raise TrackerError(f"not a udp://host:port tracker URL: {url!r}")
    return parts.hostname, port


# -- client side: requests out, responses in -------------------------------------------------


def encode_connect_request(transaction_id: int) -> bytes:
    return _CONNECT_REQUEST.pack(PROTOCOL_ID, ACTION_CONNECT, _i32(transaction_id))


def encode_announce_request(
    connection_id: int, transaction_id: int, request: AnnounceRequest
) -> bytes:
    numwant = -1 if request.numwant is None else min(request.numwant, _INT32_MAX)
    return _ANNOUNCE_REQUEST.pack(
        connection_id,
        ACTION_ANNOUNCE,
        _i32(transaction_id),
        request.info_hash,
        request.peer_id,
        min(request.downloaded, _INT64_MAX),
        min(request.left, _INT64_MAX),
        min(request.uploaded, _INT64_MAX),
        EVENT_NUMBERS[request.event],
        0,  # IP address: 0 = the packet's source address
        request.key or 0,
        numwant,
        request.port,
    )


def encode_scrape_request(
    connection_id: int, transaction_id: int, info_hashes: Sequence[bytes]
) -> bytes:
    if not 0 < len(info_hashes) <= MAX_SCRAPE_HASHES or any(len(h) != 20 for h in info_hashes):
        raise ValueError(f"scrape takes 1..{MAX_SCRAPE_HASHES} info-hashes of 20 bytes")
    head = _SCRAPE_REQUEST.pack(connection_id, ACTION_SCRAPE, _i32(transaction_id))
    return head + b"".join(info_hashes)


def decode_header(data: bytes) -> tuple[int, int] | None:
    """``(action, transaction_id)`` of a tracker answer, or None if too short to have one."""
    if len(data) < _HEADER.size:
        return None
    action, transaction_id = _HEADER.unpack_from(data)
    return action, transaction_id


def decode_connect_response(data: bytes) -> int:
    """The connection id from a connect answer."""
    if len(data) < _CONNECT_RESPONSE.size:
        raise TrackerError(f"UDP connect answer too short ({len(data)} bytes)")
    _action, _tid, connection_id = _CONNECT_RESPONSE.unpack_from(data)
    return int(connection_id)


def decode_announce_response(data: bytes, *, ipv6: bool) -> AnnounceResponse:
    """An announce answer; peers are 18 bytes each when the tracker was reached over IPv6."""
    if len(data) < _ANNOUNCE_RESPONSE.size:
        raise TrackerError(f"UDP announce answer too short ({len(data)} bytes)")
    _action, _tid, interval, leechers, seeders = _ANNOUNCE_RESPONSE.unpack_from(data)
    collector = PeerCollector()
    collector.add_compact(
        data[_ANNOUNCE_RESPONSE.size :], COMPACT_PEER6_LEN if ipv6 else COMPACT_PEER_LEN
    )
    return AnnounceResponse(
        interval=interval if interval >= 0 else DEFAULT_INTERVAL,
        peers=tuple(collector.peers),
        peers6=tuple(collector.peers6),
        complete=seeders if seeders >= 0 else None,
        incomplete=leechers if leechers >= 0 else None,
    )


def decode_scrape_response(data: bytes, count: int) -> list[ScrapeStats]:
    """Counters for the `count` info-hashes scraped, in request order."""
    need = _HEADER.size + count * _SCRAPE_ENTRY.size
    if len(data) < need:
        raise TrackerError(f"UDP scrape answer too short ({len(data)} < {need} bytes)")
    stats = []
    for i in range(count):
        seeders, completed, leechers = _SCRAPE_ENTRY.unpack_from(
            data, _HEADER.size + i * _SCRAPE_ENTRY.size
        )
        stats.append(ScrapeStats(max(seeders, 0), max(completed, 0), max(leechers, 0)))
    return stats


def decode_error(data: bytes) -> str:
    """The message of an error packet (action 3), cut to a sane length."""
    text = data[_HEADER.size : _HEADER.size + 4 * MAX_MESSAGE].decode("utf-8", "replace")
    return text[:MAX_MESSAGE].rstrip("\0") or "UDP tracker error without a message"


# -- tracker side (tests and tools): requests in, responses out ------------------------------


@dataclass(frozen=True, slots=True)
class ConnectPacket:
    transaction_id: int


@dataclass(frozen=True, slots=True)
class AnnouncePacket:
    connection_id: int
    transaction_id: int
    request: AnnounceRequest
    ip: int


@dataclass(frozen=True, slots=True)
class ScrapePacket:
    connection_id: int
    transaction_id: int
    info_hashes: tuple[bytes, ...]


def decode_request(data: bytes) -> ConnectPacket | AnnouncePacket | ScrapePacket:
    """Decode a client's packet as a tracker would; raises `TrackerError` on anything invalid."""
    if len(data) < 16:
        raise TrackerError("UDP tracker request too short")
    connection_id, action, transaction_id = _CONNECT_REQUEST.unpack_from(data)
    if action == ACTION_CONNECT:
        if connection_id != PROTOCOL_ID:
            raise TrackerError("connect request without the BEP 15 protocol id")
        return ConnectPacket(transaction_id)
    if action == ACTION_ANNOUNCE:
        if len(data) < _ANNOUNCE_REQUEST.size:
            raise TrackerError("UDP announce request too short")
        (_, _, _, info_hash, peer_id, downloaded, left, uploaded, event, ip, key, numwant,
         port) = _ANNOUNCE_REQUEST.unpack_from(data)  # fmt: skip
        if event not in _EVENTS_BY_NUMBER or min(downloaded, left, uploaded) < 0:
            raise TrackerError("invalid UDP announce request")
        request = AnnounceRequest(
            info_hash=info_hash,
            peer_id=peer_id,
            port=port,
            uploaded=uploaded,
            downloaded=downloaded,
            left=left,
            event=_EVENTS_BY_NUMBER[event],
            numwant=None if numwant < 0 else numwant,
            key=key,
        )
        return AnnouncePacket(connection_id, transaction_id, request, ip)
    if action == ACTION_SCRAPE:
        body = data[_SCRAPE_REQUEST.size :]
        if not body or len(body) % 20 or len(body) // 20 > MAX_SCRAPE_HASHES:
            raise TrackerError("invalid UDP scrape request")
        hashes = tuple(body[i : i + 20] for i in range(0, len(body), 20))
        return ScrapePacket(connection_id, transaction_id, hashes)
    raise TrackerError(f"unknown UDP tracker action {action}")


def encode_connect_response(transaction_id: int, connection_id: int) -> bytes:
    return _CONNECT_RESPONSE.pack(ACTION_CONNECT, _i32(transaction_id), connection_id)


def encode_announce_response(
    transaction_id: int,
    *,
    interval: int,
    leechers: int,
    seeders: int,
    peers: Sequence[PeerAddress],
    ipv6: bool = False,
) -> bytes:
    head = _ANNOUNCE_RESPONSE.pack(
        ACTION_ANNOUNCE, _i32(transaction_id), interval, leechers, seeders
    )
    version = 6 if ipv6 else 4
    entries = []
    for peer in peers:
        address = ipaddress.ip_address(peer.host)
        if address.version != version:
            raise ValueError(f"{peer} is not an IPv{version} peer")
        entries.append(address.packed + peer.port.to_bytes(2, "big"))
    return head + b"".join(entries)


def encode_scrape_response(transaction_id: int, stats: Sequence[ScrapeStats]) -> bytes:
    head = _HEADER.pack(ACTION_SCRAPE, _i32(transaction_id))
    return head + b"".join(
        _SCRAPE_ENTRY.pack(s.complete, s.downloaded, s.incomplete) for s in stats
    )


def encode_error(transaction_id: int, message: str) -> bytes:
    return _HEADER.pack(ACTION_ERROR, _i32(transaction_id)) + message.encode("utf-8")


def _i32(transaction_id: int) -> int:
    """Transaction ids are random 32-bit values; on the wire they are a signed int32 field."""
    return transaction_id - 2**32 if transaction_id > _INT32_MAX else transaction_id


# -- the client's state machine ---------------------------------------------------------------


class ConnectionId:
    """The connection id obtained from one UDP tracker, and when (BEP 15: valid for 60 s).

    Kept per tracker by the caller across announces so that a re-announce within a minute
    skips the connect round trip.
    """

    __slots__ = ("_obtained_at", "_value")

    def __init__(self) -> None:
        self._value: int | None = None
        self._obtained_at = 0.0

    def get(self, now: float) -> int | None:
        """The id if it is still usable at `now`, else None."""
        if self._value is None or not 0 <= now - self._obtained_at < CONNECTION_ID_LIFETIME:
            return None
        return self._value

    def set(self, value: int, now: float) -> None:
        self._value = value
        self._obtained_at = now

    def invalidate(self) -> None:
        self._value = None


T = TypeVar("T")


class UdpTransaction(Generic[T]):
    """One request to a UDP tracker, connect step included, as a state machine.

    Drive it like this (the caller owns the socket and the clock)::

        while True:
            now = clock()
            datagram, wait = tx.send(now)       # raises TrackerError once retries are spent
            sock.send(datagram)
            until now + wait:                   # then loop: retransmit
                while not tx.needs_send:        # True again after a connect answer
                    result = tx.receive(sock.recv(MAX_DATAGRAM), clock())
                    if result is not None:
                        return result
    """

    expected_action: int

    def __init__(
        self,
        connection: ConnectionId,
        *,
        retransmit_base: float = DEFAULT_RETRANSMIT_BASE,
        max_retransmits: int = MAX_RETRANSMITS,
        transaction_id: Callable[[], int] | None = None,
    ) -> None:
        if retransmit_base <= 0 or max_retransmits < 0:
            raise ValueError("retransmit_base must be positive, max_retransmits >= 0")
        self._connection = connection
        self._base = retransmit_base
        self._max_retransmits = max_retransmits
        self._new_tid = transaction_id or (lambda: secrets.randbits(32))
        self._tid: int | None = None  # the transaction id answers must carry
        self._connecting = False
        self._connects = 0  # connect answers received
        self._n = 0  # transmissions of the current packet so far
        self.needs_send = True

    @property
    def transaction_id(self) -> int | None:
        return self._tid

    def send(self, now: float) -> tuple[bytes, float]:
        """The datagram to send now and how many seconds to wait for its answer.

        The same packet (same transaction id) is retransmitted after each wait, with the wait
        doubling; an expired connection id sends us back to the connect step.
        """
        connection_id = self._connection.get(now)
        if self._tid is None:
            self._begin(connecting=connection_id is None)
        elif connection_id is None and not self._connecting:
            # Expired while we retransmitted: BEP 15 says to re-request it. The wait keeps
            # growing (n is not reset) -- the tracker has not answered this request yet.
            n = self._n
            self._begin(connecting=True)
            self._n = n
        if self._n > self._max_retransmits:
            raise TrackerError(
                f"UDP tracker did not answer {self._n} transmissions "
                f"(waited {self._base * (2**self._n - 1):g} s)"
            )
        assert self._tid is not None
        if self._connecting:
            datagram = encode_connect_request(self._tid)
        else:
            assert connection_id is not None
            datagram = self._encode(connection_id, self._tid)
        wait = retransmit_timeout(self._n, self._base)
        self._n += 1
        self.needs_send = False
        return datagram, wait

    def receive(self, data: bytes, now: float) -> T | None:
        """Feed one received datagram. Returns the result, or None when it is not the answer
        (wrong transaction id, or a connect answer after which `needs_send` is True)."""
        header = decode_header(data)
        if header is None or self._tid is None or self.needs_send:
            return None
        action, tid = header
        if tid != _i32(self._tid):
            return None
        if action == ACTION_ERROR:
            # A common cause is an expired connection id: never reuse it after an error.
            self._connection.invalidate()
            raise TrackerFailure(decode_error(data))
        if self._connecting:
            if action != ACTION_CONNECT:
                raise TrackerError(f"UDP tracker answered connect with action {action}")
            self._connection.set(decode_connect_response(data), now)
            self._connects += 1
            if self._connects > MAX_CONNECTS:
                raise TrackerError("UDP tracker answers connects but never the request")
            self._begin(connecting=False)
            return None
        if action != self.expected_action:
            raise TrackerError(f"UDP tracker answered with action {action}")
        self._tid = None
        self.needs_send = True
        return self._decode(data)

    def _begin(self, *, connecting: bool) -> None:
        self._connecting = connecting
        self._tid = self._new_tid() & 0xFFFFFFFF
        self._n = 0
        self.needs_send = True

    def _encode(self, connection_id: int, transaction_id: int) -> bytes:
        raise NotImplementedError

    def _decode(self, data: bytes) -> T:
        raise NotImplementedError


class UdpAnnounce(UdpTransaction[AnnounceResponse]):
    """An announce (action 1). `ipv6`: the tracker is reached over IPv6 (18-byte peers)."""

    expected_action = ACTION_ANNOUNCE

    def __init__(
        self,
        request: AnnounceRequest,
        connection: ConnectionId,
        *,
        ipv6: bool = False,
        retransmit_base: float = DEFAULT_RETRANSMIT_BASE,
        max_retransmits: int = MAX_RETRANSMITS,
        transaction_id: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(
            connection,
            retransmit_base=retransmit_base,
            max_retransmits=max_retransmits,
            transaction_id=transaction_id,
        )
        self.request = request
        self.ipv6 = ipv6

    def _encode(self, connection_id: int, transaction_id: int) -> bytes:
        return encode_announce_request(connection_id, transaction_id, self.request)

    def _decode(self, data: bytes) -> AnnounceResponse:
        return decode_announce_response(data, ipv6=self.ipv6)


class UdpScrape(UdpTransaction[dict[bytes, ScrapeStats]]):
    """A scrape (action 2) of up to `MAX_SCRAPE_HASHES` info-hashes."""

    expected_action = ACTION_SCRAPE

    def __init__(
        self,
        info_hashes: Sequence[bytes],
        connection: ConnectionId,
        *,
        retransmit_base: float = DEFAULT_RETRANSMIT_BASE,
        max_retransmits: int = MAX_RETRANSMITS,
        transaction_id: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(
            connection,
            retransmit_base=retransmit_base,
            max_retransmits=max_retransmits,
            transaction_id=transaction_id,
        )
        encode_scrape_request(0, 0, info_hashes)  # validates the count and lengths
        self.info_hashes = tuple(info_hashes)

    def _encode(self, connection_id: int, transaction_id: int) -> bytes:
        return encode_scrape_request(connection_id, transaction_id, self.info_hashes)

    def _decode(self, data: bytes) -> dict[bytes, ScrapeStats]:
        stats = decode_scrape_response(data, len(self.info_hashes))
        return dict(zip(self.info_hashes, stats, strict=True))
