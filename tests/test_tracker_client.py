"""Tracker clients on trio (net/tracker_client.py): against a real opentracker, against tiny
in-test HTTP/UDP trackers for the failure cases, and `TrackerSet`'s BEP 12 / event logic on
trio's virtual clock.

Run inside a network namespace (see the preamble's `unshare` command); every socket binds
127.0.0.1 / ::1 with a port chosen by the kernel. Timeouts here are virtual (MockClock) or
generous hang guards: no outcome depends on how fast this machine is.
"""

from __future__ import annotations

import itertools
import math
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from torrentfs.bencode import encode
from torrentfs.errors import TrackerError
from torrentfs.net.tracker_client import (
    AnnounceRequest,
    AnnounceResponse,
    Event,
    TrackerSet,
    TransferStats,
    announce,
    make_tracker_set,
    scrape,
)
from torrentfs.tracker import TrackerFailure
from torrentfs.tracker import http_codec as hc
from torrentfs.tracker import udp_codec as uc
from torrentfs.types import PeerAddress

INFO_HASH = bytes.fromhex("5a" * 20)
OTHER_HASH = bytes.fromhex("a5" * 20)  # not whitelisted
HANG_GUARD = 30.0  # only ever reached if something hangs


def make_req(port: int, peer: bytes = b"A", **kw: object) -> AnnounceRequest:
    base: dict[str, object] = dict(
        info_hash=INFO_HASH,
        peer_id=b"-TF0001-" + peer * 12,
        port=port,
        uploaded=0,
        downloaded=0,
        left=1000,
        event=Event.STARTED,
        numwant=50,
        key=port,
    )
    base.update(kw)
    return AnnounceRequest(**base)  # type: ignore[arg-type]


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


# -- a real opentracker ---------------------------------------------------------------------------


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (opentracker serves both on one port)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@dataclass
class Opentracker:
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"

    @property
    def udp(self) -> str:
        return f"udp://127.0.0.1:{self.port}/announce"


@pytest.fixture
def opentracker(tmp_path: Path) -> Iterator[Opentracker]:
    """Debian's opentracker (whitelist-only build) with INFO_HASH allowed; killed at teardown."""
    # opentracker reads its whitelist after dropping root for "nobody": pytest's tmp_path
    # (mode 0700) is out of its reach, so the file goes to a world-readable directory.
    readable = Path(tempfile.mkdtemp(prefix="torrentfs-opentracker-"))
    readable.chmod(0o755)
    whitelist = readable / "whitelist"
    whitelist.write_text(INFO_HASH.hex() + "\n")
    whitelist.chmod(0o644)
    port = free_port()
    log = (tmp_path / "opentracker.log").open("wb")
    # cwd "/": as root it chroots to its working directory, and it loads the whitelist (by
    # absolute path) in a background thread after it started listening.
    proc = subprocess.Popen(
        ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-w", str(whitelist)],
        cwd="/",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        give_up = time.monotonic() + HANG_GUARD
        # Ready once INFO_HASH is authorised (`stopped` is not checked against the whitelist);
        # the probing peer is then removed again with a `stopped`.
        base = f"http://127.0.0.1:{port}/announce"
        probe = make_req(1, b"P", event=Event.STARTED)
        while True:
            assert proc.poll() is None, (tmp_path / "opentracker.log").read_text()
            try:
                with urllib.request.urlopen(hc.announce_url(base, probe), timeout=5) as answer:
                    hc.parse_announce_response(answer.read())
                break
            except (OSError, TrackerError):
                assert time.monotonic() < give_up, "opentracker did not become ready"
                time.sleep(0.02)
        stop = hc.announce_url(base, make_req(1, b"P", event=Event.STOPPED))
        with urllib.request.urlopen(stop, timeout=5) as answer:
            assert hc.parse_announce_response(answer.read()).incomplete == 0
        yield Opentracker(port)
    finally:
        proc.kill()
        proc.wait()
        log.close()
        shutil.rmtree(readable)


@pytest.mark.interop
async def test_http_announces_see_each_other(
    opentracker: Opentracker, http_client: httpx.AsyncClient
) -> None:
    a = await announce(opentracker.http, make_req(6001, b"A"), http_client=http_client)
    b = await announce(opentracker.http, make_req(6002, b"B"), http_client=http_client)
    assert PeerAddress("127.0.0.1", 6001) in b.peers
    a = await announce(
        opentracker.http, make_req(6001, b"A", event=Event.NONE), http_client=http_client
    )
    assert PeerAddress("127.0.0.1", 6002) in a.peers
    assert a.incomplete == 2 and a.complete == 0
    assert a.interval > 0 and a.min_interval is not None
    stats = await scrape(opentracker.http, [INFO_HASH], http_client=http_client)
    assert stats[INFO_HASH].incomplete == 2


@pytest.mark.interop
async def test_udp_announces_see_each_other(
    opentracker: Opentracker, http_client: httpx.AsyncClient
) -> None:
    conn = uc.ConnectionId()
    await announce(opentracker.udp, make_req(7001, b"C"), http_client=http_client)
    b = await announce(
        opentracker.udp, make_req(7002, b"D"), http_client=http_client, udp_connection=conn
    )
    assert PeerAddress("127.0.0.1", 7001) in b.peers
    assert b.peers6 == ()
    a = await announce(
        opentracker.udp,
        make_req(7001, b"C", event=Event.NONE),
        http_client=http_client,
        udp_connection=conn,  # reused within 60 s: opentracker accepts it for either peer
    )
    assert PeerAddress("127.0.0.1", 7002) in a.peers
    assert (a.incomplete, a.complete) == (2, 0)
    stats = await scrape(opentracker.udp, [INFO_HASH, OTHER_HASH], http_client=http_client)
    assert stats[INFO_HASH].incomplete == 2


@pytest.mark.interop
@pytest.mark.parametrize("scheme", ["http", "udp"])
async def test_opentracker_refuses_unlisted_torrent(
    opentracker: Opentracker, http_client: httpx.AsyncClient, scheme: str
) -> None:
    url = opentracker.http if scheme == "http" else opentracker.udp
    # Over UDP, opentracker answers a bare 8-byte announce header instead of an error packet.
    with pytest.raises(TrackerError, match="not authorized" if scheme == "http" else "too short"):
        await announce(url, make_req(6003, info_hash=OTHER_HASH), http_client=http_client)


@pytest.mark.interop
async def test_tracker_set_against_opentracker(
    opentracker: Opentracker, http_client: httpx.AsyncClient
) -> None:
    dead = f"udp://127.0.0.1:{free_port()}/announce"  # nobody there: ICMP says so at once
    seen: dict[int, list[PeerAddress]] = {6101: [], 6102: []}
    got_peers = {6101: trio.Event(), 6102: trio.Event()}

    def make_set(port: int, tiers: list[list[str]]) -> TrackerSet:
        def on_peers(peers: list[PeerAddress], source: str) -> None:
            seen[port].extend(peers)
            got_peers[port].set()

        return TrackerSet(
            tiers,
            info_hash=INFO_HASH,
            peer_id=b"-TF0001-" + bytes([port % 256]) * 12,
            port=port,
            get_stats=lambda: TransferStats(0, 0, 500),
            on_peers=on_peers,
            http_client=http_client,
            timeout=HANG_GUARD,
        )

    first = make_set(6101, [[dead], [opentracker.http]])
    second = make_set(6102, [[opentracker.udp, dead]])
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await got_peers[6101].wait()
            await nursery.start(second.run)
            await got_peers[6102].wait()
            assert PeerAddress("127.0.0.1", 6101) in seen[6102]
            status = {s.url: s for s in first.statistics()}
            assert status[opentracker.http].working and status[dead].failures == 1
            nursery.cancel_scope.cancel()  # both send `stopped`
    # Only the leavers were known; after their `stopped` a newcomer sees nobody else.
    after = await announce(opentracker.http, make_req(6103, b"E"), http_client=http_client)
    assert {p.port for p in after.peers} <= {6103}


# -- a tiny HTTP tracker ------------------------------------------------------------------------


Responder = Callable[[bytes], Awaitable[bytes | None]]


@dataclass
class HttpTracker:
    port: int
    requests: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"


def http_response(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n"
    return head.encode() + body


async def start_http_tracker(nursery: trio.Nursery, respond: Responder) -> HttpTracker:
    """Serve each request by `respond(request_head)`; None means: never answer."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    tracker = HttpTracker(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        tracker.requests.append(head)
        answer = await respond(head)
        if answer is None:
            await trio.sleep_forever()
        try:
            await stream.send_all(answer)
        except trio.BrokenResourceError:
            pass  # the client hung up (e.g. refused an oversized body)
        await stream.aclose()

    await nursery.start(trio.serve_listeners, handle, listeners)
    return tracker


def fixed(answer: bytes | None) -> Responder:
    async def respond(head: bytes) -> bytes | None:
        return answer

    return respond


async def test_http_request_line_carries_exact_bytes(http_client: httpx.AsyncClient) -> None:
    body = encode({b"interval": 900, b"peers": b"\x7f\x00\x00\x02\x1a\xe1"})
    info_hash = bytes(range(0, 256, 13))[:20].ljust(20, b"~")
    async with trio.open_nursery() as nursery:
        tracker = await start_http_tracker(nursery, fixed(http_response(body)))
        url = tracker.url + "?passkey=s3cret"
        r = await announce(url, make_req(1, info_hash=info_hash), http_client=http_client)
        assert r.peers == (PeerAddress("127.0.0.2", 6881),)
        request_line = tracker.requests[0].split(b"\r\n")[0].decode()
        target = request_line.split(" ")[1]
        encoded = "".join(
            chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-._~") else f"%{b:02X}"
            for b in info_hash
        )
        assert target.startswith(f"/announce?passkey=s3cret&info_hash={encoded}&")
        assert b"accept-encoding: identity" in tracker.requests[0].lower()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (http_response(encode({b"failure reason": b"go away"})), TrackerFailure, "go away"),
        (
            http_response(encode({b"failure reason": b"bad passkey"}), "403 Forbidden"),
            TrackerFailure,
            "bad passkey",
        ),
        (http_response(b"<h1>oops</h1>", "500 Internal Server Error"), TrackerError, "HTTP 500"),
        (http_response(b"\x00\xffgarbage"), TrackerError, "garbage"),
        (http_response(b"li1ee"), TrackerError, "not a dictionary"),
        (http_response(b"x" * (2 * 1024 * 1024)), TrackerError, "too large"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"d8:intervali1e5:peers9999:" + b"x" * 1100000, TrackerError,
         "larger than"),
        (b"this is not HTTP\r\n\r\n", TrackerError, "RemoteProtocolError"),
    ],
)  # fmt: skip
async def test_http_failures(
    http_client: httpx.AsyncClient, answer: bytes, error: type[Exception], match: str
) -> None:
    async with trio.open_nursery() as nursery:
        tracker = await start_http_tracker(nursery, fixed(answer))
        with pytest.raises(error, match=match):
            await announce(tracker.url, make_req(1), http_client=http_client)
        nursery.cancel_scope.cancel()


async def test_http_redirect_is_followed(http_client: httpx.AsyncClient) -> None:
    body = encode({b"interval": 77, b"peers": [{b"ip": b"10.9.8.7", b"port": 4242}]})

    async def respond(head: bytes) -> bytes:
        if head.startswith(b"GET /announce"):
            return http_response(b"", "302 Found", "Location: /moved?x=1\r\n")
        return http_response(body)

    async with trio.open_nursery() as nursery:
        tracker = await start_http_tracker(nursery, respond)
        r = await announce(tracker.url, make_req(1), http_client=http_client)
        assert r.interval == 77 and r.peers == (PeerAddress("10.9.8.7", 4242),)
        assert tracker.requests[1].startswith(b"GET /moved?x=1 ")
        nursery.cancel_scope.cancel()


async def test_http_timeout_when_tracker_never_answers(
    autojump_clock: MockClock, http_client: httpx.AsyncClient
) -> None:
    async with trio.open_nursery() as nursery:
        tracker = await start_http_tracker(nursery, fixed(None))
        start = trio.current_time()
        with pytest.raises(TrackerError):
            await announce(tracker.url, make_req(1), http_client=http_client, timeout=20)
        assert trio.current_time() - start <= 20 + 1e-6  # virtual seconds: the bound holds
        nursery.cancel_scope.cancel()


async def test_connection_refused_and_bad_urls(http_client: httpx.AsyncClient) -> None:
    port = free_port()
    for url in (f"http://127.0.0.1:{port}/announce", f"udp://127.0.0.1:{port}"):
        with pytest.raises(TrackerError):
            await announce(url, make_req(1), http_client=http_client)
    for url in ("wss://t/announce", "udp://no-port/announce", "http://[::1/announce"):
        with pytest.raises(TrackerError):
            await announce(url, make_req(1), http_client=http_client)


# -- a tiny UDP tracker -------------------------------------------------------------------------


Packet = uc.ConnectPacket | uc.AnnouncePacket | uc.ScrapePacket


@dataclass
class UdpTracker:
    url: str
    packets: trio.MemoryReceiveChannel[Packet]
    sources: list[tuple[str, int]] = field(default_factory=list)


UdpResponder = Callable[[Packet, int], list[bytes]]


async def start_udp_tracker(
    nursery: trio.Nursery, respond: UdpResponder, host: str = "127.0.0.1"
) -> UdpTracker:
    """Decode each datagram, report it on `packets`, send back `respond(packet, count)`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    send, receive = trio.open_memory_channel[Packet](100)

    async def serve() -> None:
        with sock:
            count = 0
            while True:
                data, address = await sock.recvfrom(65536)
                tracker.sources.append(address[:2])
                packet = uc.decode_request(data)
                count += 1
                for answer in respond(packet, count):
                    await sock.sendto(answer, address)
                send.send_nowait(packet)

    port = sock.getsockname()[1]
    tracker = UdpTracker(f"udp://{'[' + host + ']' if family == socket.AF_INET6 else host}:{port}",
                         receive)  # fmt: skip
    nursery.start_soon(serve)
    return tracker


def tracker_logic(peers: list[PeerAddress], *, drop: int = 0, ipv6: bool = False) -> UdpResponder:
    """A well-behaved BEP 15 tracker that ignores the first `drop` datagrams."""

    def respond(packet: Packet, n: int) -> list[bytes]:
        if n <= drop:
            return []
        if isinstance(packet, uc.ConnectPacket):
            return [uc.encode_connect_response(packet.transaction_id, 0x1234)]
        assert packet.connection_id == 0x1234
        if isinstance(packet, uc.AnnouncePacket):
            return [
                uc.encode_announce_response(
                    packet.transaction_id ^ 1, interval=1, leechers=0, seeders=0, peers=[]
                ),  # a stray answer with the wrong transaction id comes first: ignored
                uc.encode_announce_response(
                    packet.transaction_id,
                    interval=300,
                    leechers=1,
                    seeders=2,
                    peers=peers,
                    ipv6=ipv6,
                ),
            ]
        return [uc.encode_scrape_response(packet.transaction_id, [])]

    return respond


async def test_udp_ipv6_tracker_answers_with_18_byte_peers(
    http_client: httpx.AsyncClient,
) -> None:
    peers = [PeerAddress("::1", 5000), PeerAddress("2001:db8::5", 6000)]
    async with trio.open_nursery() as nursery:
        tracker = await start_udp_tracker(nursery, tracker_logic(peers, ipv6=True), host="::1")
        r = await announce(tracker.url, make_req(1), http_client=http_client)
        assert r.peers6 == tuple(peers) and r.peers == ()
        assert (r.interval, r.complete, r.incomplete) == (300, 2, 1)
        nursery.cancel_scope.cancel()


async def test_udp_announce_from_local_host(http_client: httpx.AsyncClient) -> None:
    """The tracker records the announce's source address: it must be our listen address."""
    async with trio.open_nursery() as nursery:
        tracker = await start_udp_tracker(nursery, tracker_logic([]))
        await announce(tracker.url, make_req(1), http_client=http_client, local_host="127.0.0.5")
        assert {host for host, _port in tracker.sources} == {"127.0.0.5"}
        nursery.cancel_scope.cancel()


async def test_udp_error_packet(http_client: httpx.AsyncClient) -> None:
    def respond(packet: object, n: int) -> list[bytes]:
        assert isinstance(packet, uc.ConnectPacket)
        return [uc.encode_error(packet.transaction_id, "tracker is closed")]

    async with trio.open_nursery() as nursery:
        tracker = await start_udp_tracker(nursery, respond)
        with pytest.raises(TrackerFailure, match="tracker is closed"):
            await announce(tracker.url, make_req(1), http_client=http_client)
        nursery.cancel_scope.cancel()


async def test_udp_retransmits_on_the_bep15_schedule(
    mock_clock: MockClock, http_client: httpx.AsyncClient
) -> None:
    """The tracker drops the first two datagrams; virtual time moves only when we say so."""
    peer = PeerAddress("127.0.0.9", 9)
    result: list[AnnounceResponse] = []
    async with trio.open_nursery() as nursery:
        tracker = await start_udp_tracker(nursery, tracker_logic([peer], drop=2))

        done = trio.Event()

        async def client() -> None:
            result.append(
                await announce(tracker.url, make_req(1), http_client=http_client, timeout=1000)
            )
            done.set()

        nursery.start_soon(client)
        first = await tracker.packets.receive()
        assert isinstance(first, uc.ConnectPacket)
        for wait in (15.0, 30.0):
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(wait - 0.5)
            await trio.testing.wait_all_tasks_blocked()
            assert tracker.packets.statistics().current_buffer_used == 0  # not yet
            mock_clock.jump(0.5)
            again = await tracker.packets.receive()
            assert again == first  # the same packet, same transaction id
        assert isinstance(await tracker.packets.receive(), uc.AnnouncePacket)
        await done.wait()  # no jump is needed any more
        assert result[0].peers == (peer,)
        nursery.cancel_scope.cancel()


async def test_udp_gives_up_after_the_last_retransmission(
    mock_clock: MockClock, http_client: httpx.AsyncClient
) -> None:
    errors: list[TrackerError] = []
    async with trio.open_nursery() as nursery:
        tracker = await start_udp_tracker(nursery, lambda packet, n: [])

        async def client() -> None:
            try:
                await announce(
                    tracker.url, make_req(1), http_client=http_client, timeout=1000,
                    udp_retransmit_base=0.5, udp_max_retransmits=3,
                )  # fmt: skip
            except TrackerError as e:
                errors.append(e)

        nursery.start_soon(client)
        for wait in (0.5, 1.0, 2.0, 4.0):
            assert isinstance(await tracker.packets.receive(), uc.ConnectPacket)
            await trio.testing.wait_all_tasks_blocked()
            assert not errors
            mock_clock.jump(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert errors and "did not answer 4 transmissions" in str(errors[0])
        nursery.cancel_scope.cancel()


async def test_udp_overall_timeout_bounds_the_schedule(
    autojump_clock: MockClock, http_client: httpx.AsyncClient
) -> None:
    async with trio.open_nursery() as nursery:
        tracker = await start_udp_tracker(nursery, lambda packet, n: [])
        start = trio.current_time()
        with pytest.raises(TrackerError, match="no answer within 60 s"):
            await announce(tracker.url, make_req(1), http_client=http_client, timeout=60)
        assert trio.current_time() - start == pytest.approx(60)
        nursery.cancel_scope.cancel()


async def test_udp_scrape(http_client: httpx.AsyncClient) -> None:
    def respond(packet: object, n: int) -> list[bytes]:
        if isinstance(packet, uc.ConnectPacket):
            return [uc.encode_connect_response(packet.transaction_id, 5)]
        assert isinstance(packet, uc.ScrapePacket)
        return [uc.encode_scrape_response(packet.transaction_id, [uc.ScrapeStats(3, 4, 5)])]

    async with trio.open_nursery() as nursery:
        tracker = await start_udp_tracker(nursery, respond)
        stats = await scrape(tracker.url, [INFO_HASH], http_client=http_client)
        assert stats == {INFO_HASH: uc.ScrapeStats(3, 4, 5)}
        nursery.cancel_scope.cancel()


# -- TrackerSet logic on the virtual clock --------------------------------------------------------


@dataclass
class Call:
    url: str
    event: Event
    time: float
    tracker_id: bytes | None
    left: int
    numwant: int | None


@dataclass
class FakeTrackers:
    """Scripted trackers: url -> AnnounceResponse, or an exception to raise; 'hang' never ends."""

    script: dict[str, AnnounceResponse | Exception | str]
    calls: list[Call] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def __call__(
        self,
        url: str,
        request: AnnounceRequest,
        *,
        tracker_id: bytes | None,
        udp_connection: uc.ConnectionId,
    ) -> AnnounceResponse:
        self.calls.append(
            Call(url, request.event, trio.current_time(), tracker_id, request.left,
                 request.numwant)
        )  # fmt: skip
        self.changed.set()
        self.changed = trio.Event()
        outcome = self.script[url]
        if outcome == "hang":
            await trio.sleep_forever()
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, AnnounceResponse)
        return outcome

    async def wait_calls(self, n: int) -> list[Call]:
        while len(self.calls) < n:
            await self.changed.wait()
        return self.calls


def ok(port: int, **kw: object) -> AnnounceResponse:
    base: dict[str, object] = dict(
        interval=1000, min_interval=100, peers=(PeerAddress("10.0.0.1", port),)
    )
    base.update(kw)
    return AnnounceResponse(**base)  # type: ignore[arg-type]


@dataclass
class Owner:
    left: int = 1000
    peers: list[tuple[list[PeerAddress], str]] = field(default_factory=list)

    def stats(self) -> TransferStats:
        return TransferStats(uploaded=5, downloaded=1000 - self.left, left=self.left)

    def on_peers(self, peers: list[PeerAddress], source: str) -> None:
        self.peers.append((peers, source))


def tracker_set(
    tiers: list[list[str]], fake: FakeTrackers, owner: Owner, seed: int = 1
) -> TrackerSet:
    return TrackerSet(
        tiers,
        info_hash=INFO_HASH,
        peer_id=b"-TF0001-" + b"Z" * 12,
        port=6881,
        get_stats=owner.stats,
        on_peers=owner.on_peers,
        announcer=fake,
        rng=random.Random(seed),
    )


def shuffled(urls: list[str], rng: random.Random) -> list[str]:
    urls = list(urls)
    rng.shuffle(urls)
    return urls


async def test_bep12_tier_order_failover_and_move_to_front(autojump_clock: MockClock) -> None:
    rng = random.Random(7)
    tier1 = shuffled(["http://a1/announce", "http://a2/announce", "http://a3/announce"], rng)
    tier2 = shuffled(["udp://b1:1", "udp://b2:2"], rng)
    bad, good, spare = tier1
    fake = FakeTrackers(
        {bad: TrackerError("down"), good: ok(1), spare: ok(2), tier2[0]: ok(3), tier2[1]: ok(4)}
    )
    owner = Owner()
    trackers = tracker_set(
        [["http://a1/announce", "http://a2/announce", "http://a3/announce"],
         ["udp://b1:1", "udp://b2:2"]], fake, owner, seed=7,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(trackers.run)
        calls = await fake.wait_calls(2)
        assert [c.url for c in calls] == [bad, good]
        assert owner.peers == [([PeerAddress("10.0.0.1", 1)], good)]
        t0 = calls[1].time
        assert trackers.next_announce_time(t0) == t0 + 1000
        calls = await fake.wait_calls(3)
        # `good` answered, so it leads its tier now; `bad` (backoff long over) is not asked.
        assert (calls[2].url, calls[2].event, calls[2].time) == (good, Event.NONE, t0 + 1000)
        # The whole first tier fails: the second tier is used, in its shuffled order.
        fake.script[good] = fake.script[spare] = TrackerError("gone")
        calls = await fake.wait_calls(7)
        assert [c.url for c in calls[3:]] == [good, bad, spare, tier2[0]]
        assert calls[6].event is Event.STARTED
        nursery.cancel_scope.cancel()
    # `stopped` goes to every tracker that was told `started`: good and tier2[0].
    stopped = {c.url for c in fake.calls if c.event is Event.STOPPED}
    assert stopped == {good, tier2[0]}


async def test_event_sequence_trackerid_and_min_interval(autojump_clock: MockClock) -> None:
    url = "http://t/announce"
    fake = FakeTrackers({url: ok(1, tracker_id=b"TID")})
    owner = Owner(left=1000)
    trackers = tracker_set([[url]], fake, owner)
    async with trio.open_nursery() as nursery:
        await nursery.start(trackers.run)
        (first,) = await fake.wait_calls(1)
        assert (first.event, first.tracker_id, first.left) == (Event.STARTED, None, 1000)
        t0 = first.time
        # Peers run low right away: the announce waits for `min interval` (100 s).
        await trio.sleep(10)
        trackers.request_more_peers()
        calls = await fake.wait_calls(2)
        assert (calls[1].event, calls[1].time, calls[1].tracker_id) == (
            Event.NONE, t0 + 100, b"TID",
        )  # fmt: skip
        # Served: the next one is a regular announce, `interval` after the last.
        calls = await fake.wait_calls(3)
        assert (calls[2].event, calls[2].time) == (Event.NONE, t0 + 1100)
        # The download completes: `completed`, again not before min interval.
        owner.left = 0
        trackers.completed()
        calls = await fake.wait_calls(4)
        assert (calls[3].event, calls[3].time, calls[3].left) == (Event.COMPLETED, t0 + 1200, 0)
        calls = await fake.wait_calls(5)
        assert calls[4].event is Event.NONE  # `completed` is sent once
        nursery.cancel_scope.cancel()
    last = fake.calls[-1]
    assert (last.event, last.numwant, last.tracker_id) == (Event.STOPPED, 0, b"TID")
    assert len(fake.calls) == 6


async def test_seeding_from_the_start_never_sends_completed(autojump_clock: MockClock) -> None:
    url = "udp://t:1"
    fake = FakeTrackers({url: ok(1, interval=100, min_interval=None)})
    owner = Owner(left=0)
    trackers = tracker_set([[url]], fake, owner)
    async with trio.open_nursery() as nursery:
        await nursery.start(trackers.run)
        await fake.wait_calls(1)
        trackers.completed()
        calls = await fake.wait_calls(3)
        assert [c.event for c in calls] == [Event.STARTED, Event.NONE, Event.NONE]
        # interval 100 is used; min interval defaults to 60 s
        assert calls[1].time - calls[0].time == 60
        assert calls[2].time - calls[1].time == 100
        nursery.cancel_scope.cancel()


async def test_backoff_when_every_tracker_fails(autojump_clock: MockClock) -> None:
    url = "http://t/announce"
    fake = FakeTrackers({url: TrackerError("down")})
    trackers = tracker_set([[url]], fake, Owner())
    async with trio.open_nursery() as nursery:
        await nursery.start(trackers.run)
        calls = await fake.wait_calls(5)
        gaps = [b.time - a.time for a, b in itertools.pairwise(calls)]
        assert gaps == [15, 30, 60, 120]
        assert all(c.event is Event.STARTED for c in calls)
        (status,) = trackers.statistics()
        assert status.failures == 5 and status.last_error == "down" and not status.working
        # Peers run low: still nothing before the backoff ends.
        trackers.request_more_peers()
        calls = await fake.wait_calls(6)
        assert calls[5].time - calls[4].time == 240
        nursery.cancel_scope.cancel()
    assert all(c.event is not Event.STOPPED for c in fake.calls)  # never started


async def test_stopped_is_bounded_when_tracker_hangs(autojump_clock: MockClock) -> None:
    url = "http://t/announce"
    fake = FakeTrackers({url: ok(1)})
    trackers = tracker_set([[url]], fake, Owner())
    async with trio.open_nursery() as nursery:
        await nursery.start(trackers.run)
        await fake.wait_calls(1)
        fake.script[url] = "hang"
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert fake.calls[-1].event is Event.STOPPED
    assert trio.current_time() - cancelled_at == pytest.approx(2.0)  # stop_timeout


async def test_unusable_trackers_are_skipped(autojump_clock: MockClock) -> None:
    fake = FakeTrackers({"udp://t:1": ok(1)})
    trackers = tracker_set([["wss://t/announce"], ["udp://t:1", "udp://t:1"]], fake, Owner())
    assert [s.url for s in trackers.statistics()] == ["wss://t/announce", "udp://t:1"]
    async with trio.open_nursery() as nursery:
        await nursery.start(trackers.run)
        calls = await fake.wait_calls(1)
        assert calls[0].url == "udp://t:1"
        nursery.cancel_scope.cancel()


async def test_no_trackers_waits_quietly(autojump_clock: MockClock) -> None:
    trackers = tracker_set([], FakeTrackers({}), Owner())
    assert trackers.next_announce_time(0.0) == math.inf
    async with trio.open_nursery() as nursery:
        await nursery.start(trackers.run)
        await trio.sleep(10_000)
        nursery.cancel_scope.cancel()


@pytest.mark.interop
async def test_make_tracker_set_wires_a_session_and_torrent(
    opentracker: Opentracker, http_client: httpx.AsyncClient
) -> None:
    """The adapter `torrentfs.session` uses: duck-typed session and torrent objects."""
    found: list[tuple[list[PeerAddress], str]] = []
    announced = trio.Event()

    def add_peers(peers: list[PeerAddress], source: str) -> None:
        found.append((peers, source))
        announced.set()

    stats = SimpleNamespace(uploaded=1, downloaded=2, total_size=100, verified_bytes=40)
    torrent = SimpleNamespace(
        metainfo=SimpleNamespace(trackers=((opentracker.udp,),), info_hash=INFO_HASH),
        add_peers=add_peers,
        statistics=lambda: stats,
    )

    async def get_http_client() -> httpx.AsyncClient:
        return http_client

    session = SimpleNamespace(
        get_http_client=get_http_client,
        peer_id=b"-TF0001-" + b"S" * 12,
        listen_port=6201,
        config=SimpleNamespace(udp_tracker_base_timeout=15.0, listen_host="127.0.0.1"),
    )
    trackers = make_tracker_set(session, torrent)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(trackers.run)
            await announced.wait()
            nursery.cancel_scope.cancel()
    assert found == [([PeerAddress("127.0.0.1", 6201)], opentracker.udp)]  # ourselves
    scraped = await scrape(opentracker.udp, [INFO_HASH], http_client=http_client)
    assert scraped[INFO_HASH].incomplete == 0  # `stopped` was sent on the way out
