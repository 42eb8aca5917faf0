"""Tracker clients on trio: HTTP(S) via httpx, UDP via trio sockets, and BEP 12 tiers (L4).

`announce` asks one tracker, whatever its scheme; `TrackerSet` is the per-torrent service that
decides when and whom to ask. Parsing lives in `torrentfs.tracker` (sans-IO); this module only
moves bytes and keeps time.

Guarantees:

* Every wait is bounded: one `announce` ends within `timeout` seconds (DNS, connect, redirects,
  body, UDP retransmissions included) and raises `TrackerError` (or its `TrackerFailure` for a
  tracker's refusal) for every failure -- httpx and socket errors never escape.
* HTTP bodies are streamed and refused beyond `MAX_BODY` (1 MiB) before they are parsed.
  ``Accept-Encoding: identity`` is requested, so a compressed answer is the tracker's choice.
* UDP follows BEP 15's ``15 * 2**n`` schedule (base configurable) inside that overall bound;
  the connected UDP socket only receives datagrams from the tracker's address, and an ICMP
  "port unreachable" ends the announce at once.
* `TrackerSet` follows BEP 12 and BEP 3's event rules; see its docstring.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import trio

from ..errors import TrackerError
from ..tracker import (
    DEFAULT_NUMWANT,
    AnnounceRequest,
    AnnounceResponse,
    Event,
    ScrapeStats,
    TrackerFailure,
    http_codec,
    udp_codec,
)
from ..types import PeerAddress

if TYPE_CHECKING:
    import httpx  # imported when an HTTP tracker is first asked (see `_http_get`)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY",
    "AnnounceRequest",
    "AnnounceResponse",
    "Announcer",
    "Event",
    "TrackerSet",
    "TrackerStatus",
    "TransferStats",
    "announce",
    "make_tracker_set",
    "scrape",
]

log = logging.getLogger(__name__)

MAX_BODY = http_codec.MAX_BODY
DEFAULT_TIMEOUT = 30.0
"""Seconds one announce may take in total (libtorrent's ``tracker_receive_timeout`` is 40)."""

_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "torrentfs/0.1"}

T = TypeVar("T")


# -- one announce ------------------------------------------------------------------------------


async def announce(
    url: str,
    req: AnnounceRequest,
    *,
    http_client: httpx.AsyncClient | None,
    tracker_id: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    udp_connection: udp_codec.ConnectionId | None = None,
    udp_retransmit_base: float = udp_codec.DEFAULT_RETRANSMIT_BASE,
    udp_max_retransmits: int = udp_codec.MAX_RETRANSMITS,
    max_body: int = MAX_BODY,
    local_host: str | None = None,
) -> AnnounceResponse:
    """Announce `req` to the tracker at `url` (``http``, ``https`` or ``udp``).

    `http_client` is the session's one `httpx.AsyncClient` (connection pooling, TLS settings);
    only HTTP(S) trackers need it.
    `tracker_id` is echoed to HTTP trackers that gave one. `udp_connection` carries a UDP
    tracker's connection id between announces (BEP 15 allows reuse for 60 s). `local_host`
    binds the UDP socket to our listen address, so the tracker records the address peers can
    reach us on (for HTTP that is the client's transport's job, ``local_address``).
    """
    scheme = _scheme(url)
    try:
        with trio.fail_after(timeout):
            if scheme in ("http", "https"):
                if http_client is None:
                    raise TrackerError(f"{_redact(url)}: no HTTP client to announce with")
                body, status = await _http_get(
                    http_client, http_codec.announce_url(url, req, tracker_id=tracker_id),
                    timeout, max_body,
                )  # fmt: skip
                return _check_http(status, body, http_codec.parse_announce_response)
            host, port = udp_codec.parse_udp_url(url)
            connection = udp_connection or udp_codec.ConnectionId()
            return await _udp_exchange(
                host,
                port,
                local_host=local_host,
                make=lambda ipv6: udp_codec.UdpAnnounce(
                    req,
                    connection,
                    ipv6=ipv6,
                    retransmit_base=udp_retransmit_base,
                    max_retransmits=udp_max_retransmits,
                ),
            )
    except trio.TooSlowError:
        raise TrackerError(f"{_redact(url)}: no answer within {timeout:g} s") from None


async def scrape(
    url: str,
    info_hashes: Sequence[bytes],
    *,
    http_client: httpx.AsyncClient,
    timeout: float = DEFAULT_TIMEOUT,
    udp_connection: udp_codec.ConnectionId | None = None,
    udp_retransmit_base: float = udp_codec.DEFAULT_RETRANSMIT_BASE,
    max_body: int = MAX_BODY,
    local_host: str | None = None,
) -> dict[bytes, ScrapeStats]:
    """Scrape counters for `info_hashes` from the tracker whose *announce* URL is `url`.

    HTTP trackers are scraped at the conventional scrape URL (BEP 48); a tracker whose URL does
    not follow the convention raises `TrackerError`.
    """
    scheme = _scheme(url)
    try:
        with trio.fail_after(timeout):
            if scheme in ("http", "https"):
                base = http_codec.scrape_url(url)
                if base is None:
                    raise TrackerError(f"{_redact(url)}: tracker has no scrape URL")
                request_url = http_codec.scrape_request_url(base, list(info_hashes))
                body, status = await _http_get(http_client, request_url, timeout, max_body)
                return _check_http(status, body, http_codec.parse_scrape_response)
            host, port = udp_codec.parse_udp_url(url)
            connection = udp_connection or udp_codec.ConnectionId()
            return await _udp_exchange(
                host,
                port,
                local_host=local_host,
                make=lambda _ipv6: udp_codec.UdpScrape(
                    info_hashes, connection, retransmit_base=udp_retransmit_base
                ),
            )
    except trio.TooSlowError:
        raise TrackerError(f"{_redact(url)}: no answer within {timeout:g} s") from None


def _scheme(url: str) -> str:
    scheme = url.partition(":")[0].lower()
    if scheme not in ("http", "https", "udp"):
        raise TrackerError(f"unsupported tracker URL scheme: {_redact(url)}")
    return scheme


def _redact(url: str) -> str:
    """The URL without its query, for messages: private trackers put passkeys there."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def _http_get(
    client: httpx.AsyncClient, url: str, timeout: float, max_body: int
) -> tuple[bytes, int]:
    """GET `url`, following redirects; the body is read up to `max_body` bytes."""
    import httpx  # already imported by whoever built the client: a dict lookup

    try:
        async with client.stream(
            "GET", url, headers=_HEADERS, timeout=timeout, follow_redirects=True
        ) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_body:
                raise TrackerError(f"{_redact(url)}: answer too large ({declared} bytes)")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_body:
                    raise TrackerError(f"{_redact(url)}: answer larger than {max_body} bytes")
                chunks.append(chunk)
            return b"".join(chunks), response.status_code
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ValueError) as e:
        raise TrackerError(f"{_redact(url)}: {type(e).__name__}: {e}") from None


def _check_http(status: int, body: bytes, parse: Callable[[bytes], T]) -> T:
    if status == 200:
        return parse(body)
    # Some trackers send their bencoded "failure reason" with a 4xx/5xx status.
    try:
        parse(body)
    except TrackerFailure:
        raise
    except TrackerError:
        pass
    raise TrackerError(f"tracker answered HTTP {status}")


async def _udp_exchange(
    host: str,
    port: int,
    make: Callable[[bool], udp_codec.UdpTransaction[T]],
    local_host: str | None = None,
) -> T:
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
        if local_host is not None:
            # Prefer an address of local_host's family: only that one can be sent from it.
            wanted = trio.socket.AF_INET6 if ":" in local_host else trio.socket.AF_INET
            infos.sort(key=lambda info: info[0] != wanted)
        if not infos:
            raise TrackerError(f"udp://{host}:{port}: no address")
        family, _type, _proto, _name, address = infos[0]
        with trio.socket.socket(family, trio.socket.SOCK_DGRAM) as sock:
            if local_host is not None and (":" in local_host) == (family == trio.socket.AF_INET6):
                await sock.bind((local_host, 0))
            await sock.connect(address)
            return await _drive(make(family == trio.socket.AF_INET6), sock)
    except OSError as e:
        raise TrackerError(f"udp://{host}:{port}: {e.strerror or e}") from None


async def _drive(tx: udp_codec.UdpTransaction[T], sock: trio.socket.SocketType) -> T:
    """Run a BEP 15 exchange: send, wait per the schedule, retransmit, until an answer."""
    while True:
        # The deadline is taken before sending, so it holds however long the send itself takes.
        now = trio.current_time()
        datagram, wait = tx.send(now)
        await sock.send(datagram)
        with trio.move_on_at(now + wait):
            while not tx.needs_send:
                data = await sock.recv(udp_codec.MAX_DATAGRAM)
                result = tx.receive(data, trio.current_time())
                if result is not None:
                    return result


# -- BEP 12 tiers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferStats:
    """What the torrent reports in each announce (BEP 3): bytes up, bytes down, bytes left."""

    uploaded: int
    downloaded: int
    left: int


class Announcer(Protocol):
    """How `TrackerSet` asks one tracker; `announce` with the session's settings by default."""

    def __call__(
        self,
        url: str,
        request: AnnounceRequest,
        *,
        tracker_id: bytes | None,
        udp_connection: udp_codec.ConnectionId,
    ) -> Awaitable[AnnounceResponse]: ...


@dataclass(frozen=True, slots=True)
class TrackerStatus:
    """A snapshot of one tracker for status displays (`TrackerSet.statistics`)."""

    url: str
    tier: int
    working: bool
    last_announce: float | None
    next_retry: float | None
    interval: float
    min_interval: float
    failures: int
    last_error: str | None
    warning: str | None
    seeders: int | None
    leechers: int | None


class _Tracker:
    """Per-tracker state: pacing, backoff, event bookkeeping, tracker id, UDP connection id."""

    def __init__(self, url: str, tier: int) -> None:
        self.url = url
        self.tier = tier
        self.udp = udp_codec.ConnectionId()
        self.tracker_id: bytes | None = None
        self.interval = float(http_codec.DEFAULT_INTERVAL)
        self.min_interval = TrackerSet.DEFAULT_MIN_INTERVAL
        self.last_announce: float | None = None
        self.failures = 0
        self.retry_at = -math.inf
        self.last_error: str | None = None
        self.warning: str | None = None
        self.seeders: int | None = None
        self.leechers: int | None = None
        self.started = False  # a `started` was accepted and no `stopped` sent since
        self.left_at_start = 0
        self.completed_sent = False
        try:
            _scheme(url)
        except TrackerError as e:
            self.last_error = str(e)
            self.retry_at = math.inf  # e.g. wss:// (BEP 52 WebTorrent): never usable here


class TrackerSet:
    """Announces one torrent to its trackers, as a trio service (BEP 12, BEP 3).

    Start `run` in the torrent's nursery; cancel it to stop. It calls ``on_peers(peers,
    source_url)`` with every non-empty peer list and ``get_stats()`` before each announce.

    BEP 12: each tier is shuffled once; trackers of a tier are tried in order, the first that
    answers moves to the front of its tier, and the next tier is tried only when every tracker
    of the tiers before failed. One tracker is in use at a time (the one that answered last);
    the next announce is due ``interval`` seconds after its answer. A failing tracker is skipped
    during its exponential backoff.

    Events (BEP 3): the first announce to each tracker is ``started``; ``completed`` is sent
    once to a tracker that was told ``started`` while bytes were left, once nothing is left;
    ``stopped`` goes to every tracker told ``started`` when `run` is cancelled -- within
    `stop_timeout` seconds, shielded from the cancellation. `request_more_peers` and
    `completed` bring the next announce forward, but never before ``min interval``.
    """

    INTERVAL_BOUNDS = (60.0, 24 * 3600.0)
    """A tracker's ``interval`` is clamped into this range (seconds)."""
    DEFAULT_MIN_INTERVAL = 60.0
    """``min interval`` when the tracker gives none; never below 30 s, never above interval."""
    BACKOFF_BASE = 15.0
    BACKOFF_MAX = 1800.0
    """A failing tracker waits 15 s, 30 s, 60 s ... up to 30 min before it is tried again."""

    def __init__(
        self,
        tiers: Sequence[Sequence[str]],
        *,
        info_hash: bytes,
        peer_id: bytes,
        port: int,
        get_stats: Callable[[], TransferStats],
        on_peers: Callable[[list[PeerAddress], str], None],
        http_client: httpx.AsyncClient | None = None,
        announcer: Announcer | None = None,
        key: int | None = None,
        numwant: int = DEFAULT_NUMWANT,
        timeout: float = DEFAULT_TIMEOUT,
        udp_retransmit_base: float = udp_codec.DEFAULT_RETRANSMIT_BASE,
        stop_timeout: float = 2.0,
        rng: random.Random | None = None,
        local_host: str | None = None,
    ) -> None:
        if announcer is None:
            if http_client is None:
                raise ValueError("TrackerSet needs an http_client or an announcer")
            announcer = _default_announcer(http_client, timeout, udp_retransmit_base, local_host)
        self._announcer = announcer
        self._info_hash = info_hash
        self._peer_id = peer_id
        self._port = port
        self._get_stats = get_stats
        self._on_peers = on_peers
        self._key = secrets.randbits(32) if key is None else key
        self._numwant = numwant
        self._stop_timeout = stop_timeout
        rng = rng or random.Random()
        seen: set[str] = set()
        self._tiers: list[list[_Tracker]] = []
        for tier in tiers:
            urls = [u for u in dict.fromkeys(tier) if u not in seen]
            seen.update(urls)
            if urls:
                rng.shuffle(urls)
                self._tiers.append([_Tracker(u, len(self._tiers)) for u in urls])
        self._active: _Tracker | None = None
        usable = any(t.retry_at < math.inf for tier in self._tiers for t in tier)
        self._next_sweep = -math.inf if usable else math.inf
        self._peer_requests = 0  # generation counters: a request is served by a later answer
        self._peer_requests_served = 0
        self._completed_pending = False
        self._wake = trio.Event()

    # -- owner's controls

    def request_more_peers(self) -> None:
        """Peers run low: announce as soon as ``min interval`` allows."""
        self._peer_requests += 1
        self._wake.set()

    def completed(self) -> None:
        """The download just finished: send ``completed`` as soon as ``min interval`` allows."""
        self._completed_pending = True
        self._wake.set()

    def next_announce_time(self, now: float) -> float:
        """When the next announce is due (trio clock seconds; ≤ `now` means now, inf never)."""
        active = self._active
        if active is None or active.last_announce is None:
            return self._next_sweep
        due = active.last_announce + active.interval
        if self._completed_pending or self._peer_requests > self._peer_requests_served:
            due = min(due, active.last_announce + active.min_interval)
        return due

    def statistics(self) -> list[TrackerStatus]:
        return [
            TrackerStatus(
                url=_redact(t.url),
                tier=t.tier,
                working=t is self._active,
                last_announce=t.last_announce,
                next_retry=t.retry_at if t.failures and math.isfinite(t.retry_at) else None,
                interval=t.interval,
                min_interval=t.min_interval,
                failures=t.failures,
                last_error=t.last_error,
                warning=t.warning,
                seeders=t.seeders,
                leechers=t.leechers,
            )
            for tier in self._tiers
            for t in tier
        ]

    # -- the service

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce until cancelled, then send ``stopped`` (bounded by `stop_timeout`)."""
        task_status.started()
        try:
            while True:
                now = trio.current_time()
                due = self.next_announce_time(now)
                if due > now:
                    self._wake = trio.Event()
                    with trio.move_on_at(due):
                        await self._wake.wait()
                    continue
                await self._sweep(now)
        finally:
            with trio.move_on_after(self._stop_timeout) as scope:
                scope.shield = True
                await self._send_stopped()

    async def _sweep(self, now: float) -> None:
        requests = self._peer_requests
        for tier in self._tiers:
            for tracker in list(tier):
                if tracker.retry_at > now:
                    continue
                if await self._announce(tracker, None):
                    tier.remove(tracker)
                    tier.insert(0, tracker)
                    self._active = tracker
                    self._peer_requests_served = requests
                    self._completed_pending = False
                    return
        self._active = None
        self._next_sweep = min((t.retry_at for tier in self._tiers for t in tier), default=math.inf)
        log.info("no tracker answered; next try in %.0f s", self._next_sweep - now)

    @staticmethod
    def _event_for(tracker: _Tracker, stats: TransferStats) -> Event:
        if not tracker.started:
            return Event.STARTED
        if not tracker.completed_sent and tracker.left_at_start > 0 and stats.left == 0:
            return Event.COMPLETED
        return Event.NONE

    async def _announce(self, tracker: _Tracker, event: Event | None) -> bool:
        """One announce to `tracker` (event chosen by the rules when None); True if answered."""
        stats = self._get_stats()
        if event is None:
            event = self._event_for(tracker, stats)
        request = AnnounceRequest(
            info_hash=self._info_hash,
            peer_id=self._peer_id,
            port=self._port,
            uploaded=stats.uploaded,
            downloaded=stats.downloaded,
            left=stats.left,
            event=event,
            numwant=0 if event is Event.STOPPED else self._numwant,
            key=self._key,
        )
        try:
            response = await self._announcer(
                tracker.url, request, tracker_id=tracker.tracker_id, udp_connection=tracker.udp
            )
        except TrackerError as e:
            now = trio.current_time()
            tracker.failures += 1
            tracker.last_error = str(e)
            backoff = self.BACKOFF_BASE * 2 ** min(tracker.failures - 1, 20)
            tracker.retry_at = now + min(backoff, self.BACKOFF_MAX)
            log.info("tracker %s failed (%s): %s", _redact(tracker.url), event.name, e)
            return False
        now = trio.current_time()
        tracker.failures = 0
        tracker.retry_at = -math.inf
        tracker.last_error = None
        tracker.last_announce = now
        lo, hi = self.INTERVAL_BOUNDS
        tracker.interval = min(max(float(response.interval), lo), hi)
        min_interval = response.min_interval
        tracker.min_interval = min(
            max(float(self.DEFAULT_MIN_INTERVAL if min_interval is None else min_interval), 30.0),
            tracker.interval,
        )
        if response.tracker_id is not None:
            tracker.tracker_id = response.tracker_id
        tracker.warning = response.warning
        tracker.seeders = response.complete
        tracker.leechers = response.incomplete
        if event is Event.STARTED:
            tracker.started = True
            tracker.left_at_start = stats.left
            tracker.completed_sent = stats.left == 0
        elif event is Event.COMPLETED:
            tracker.completed_sent = True
        elif event is Event.STOPPED:
            tracker.started = False
        if response.warning:
            log.warning("tracker %s warns: %s", _redact(tracker.url), response.warning)
        peers = [*response.peers, *response.peers6]
        if peers and event is not Event.STOPPED:
            self._on_peers(peers, tracker.url)
        return True

    async def _send_stopped(self) -> None:
        started = [t for tier in self._tiers for t in tier if t.started]
        if not started:
            return
        async with trio.open_nursery() as nursery:
            for tracker in started:
                nursery.start_soon(self._announce, tracker, Event.STOPPED)


def _default_announcer(
    http_client: httpx.AsyncClient,
    timeout: float,
    udp_retransmit_base: float,
    local_host: str | None = None,
) -> Announcer:
    async def call(
        url: str,
        request: AnnounceRequest,
        *,
        tracker_id: bytes | None,
        udp_connection: udp_codec.ConnectionId,
    ) -> AnnounceResponse:
        return await announce(
            url,
            request,
            http_client=http_client,
            tracker_id=tracker_id,
            timeout=timeout,
            udp_connection=udp_connection,
            udp_retransmit_base=udp_retransmit_base,
            local_host=local_host,
        )

    return call


def make_tracker_set(session: Any, torrent: Any) -> TrackerSet:
    """The `TrackerSet` of `torrent` in `session` (as `torrentfs.session` builds it).

    Duck-typed on purpose: net/ (L4) must not import the engine (L5). Uses
    ``await session.get_http_client()`` (only when an HTTP(S) tracker is announced to: the
    session builds its client on first use), ``session.peer_id``, ``session.listen_port``,
    ``session.config.udp_tracker_base_timeout``, ``session.config.listen_host`` (the source
    address of UDP announces), ``torrent.metainfo``, ``torrent.add_peers``
    and ``torrent.statistics()`` (uploaded, downloaded, total_size - verified_bytes).
    """

    def stats() -> TransferStats:
        s = torrent.statistics()
        return TransferStats(
            uploaded=s.uploaded,
            downloaded=s.downloaded,
            left=max(s.total_size - s.verified_bytes, 0),
        )

    get_http_client: Callable[[], Awaitable[httpx.AsyncClient]] = session.get_http_client
    udp_retransmit_base = session.config.udp_tracker_base_timeout
    local_host = session.config.listen_host

    async def announcer(
        url: str,
        request: AnnounceRequest,
        *,
        tracker_id: bytes | None,
        udp_connection: udp_codec.ConnectionId,
    ) -> AnnounceResponse:
        client = await get_http_client() if _scheme(url) != "udp" else None
        return await announce(
            url,
            request,
            http_client=client,
            tracker_id=tracker_id,
            udp_connection=udp_connection,
            udp_retransmit_base=udp_retransmit_base,
            local_host=local_host,
        )

    return TrackerSet(
        torrent.metainfo.trackers,
        info_hash=torrent.metainfo.info_hash,
        peer_id=session.peer_id,
        port=session.listen_port,
        get_stats=stats,
        on_peers=torrent.add_peers,
        announcer=announcer,
    )
