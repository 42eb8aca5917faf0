"""Tracker codecs, sans-IO: HTTP announce/scrape (BEP 3, 7, 23, 48) and UDP packets (BEP 15)."""

from __future__ import annotations

import itertools
import struct
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.bencode import encode
from torrentfs.errors import TorrentfsError, TrackerError
from torrentfs.tracker import (
    MAX_PEERS,
    AnnounceRequest,
    AnnounceResponse,
    Event,
    ScrapeStats,
    TrackerFailure,
    parse_compact_peers,
    parse_compact_peers6,
)
from torrentfs.tracker import http_codec as hc
from torrentfs.tracker import udp_codec as uc
from torrentfs.types import PeerAddress

INFO_HASH = bytes(range(236, 256))  # high bytes: all must be percent-encoded
PEER_ID = b"-TF0001-" + bytes([0, 32, 37, 38, 43, 47, 61, 63, 126, 45, 46, 95])


def req(**kw: object) -> AnnounceRequest:
    base: dict[str, object] = dict(
        info_hash=INFO_HASH, peer_id=PEER_ID, port=6881, uploaded=1, downloaded=2, left=3
    )
    base.update(kw)
    return AnnounceRequest(**base)  # type: ignore[arg-type]


def query_of(url: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in urlsplit(url).query.split("&")]  # type: ignore[misc]


# -- HTTP announce URL ---------------------------------------------------------------------------

UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def test_every_byte_not_unreserved_is_percent_encoded() -> None:
    for start in range(0, 256, 20):
        raw = bytes(range(start, min(start + 20, 256))).ljust(20, b"\0")
        url = hc.announce_url("http://t.example/announce", req(info_hash=raw, peer_id=raw))
        params = dict(query_of(url))
        for name in ("info_hash", "peer_id"):
            encoded = params[name]
            assert unquote_to_bytes(encoded) == raw
            # Walk the encoding: each byte is either itself (unreserved) or exactly %XX.
            pos = 0
            for byte in raw:
                if byte in UNRESERVED:
                    assert encoded[pos] == chr(byte)
                    pos += 1
                else:
                    assert encoded[pos : pos + 3] == f"%{byte:02X}"
                    pos += 3
            assert pos == len(encoded)


def test_announce_url_parameters() -> None:
    url = hc.announce_url(
        "http://t.example:8080/announce",
        req(event=Event.STARTED, numwant=80, key=0xDEADBEEF),
        tracker_id=b"id 1",
    )
    assert url.startswith("http://t.example:8080/announce?info_hash=")
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["port"] == "6881"
    assert (params["uploaded"], params["downloaded"], params["left"]) == ("1", "2", "3")
    assert params["compact"] == "1" and params["no_peer_id"] == "1"
    assert params["event"] == "started"
    assert params["numwant"] == "80"
    assert params["key"] == "deadbeef"
    assert params["trackerid"] == "id 1"
    assert "%20" in url  # the space in the tracker id


def test_regular_announce_has_no_event_numwant_key_or_trackerid() -> None:
    names = [name for name, _ in query_of(hc.announce_url("http://t/announce", req()))]
    assert names == [
        "info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "compact", "no_peer_id",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "prefix"),
    [
        ("http://t/announce?passkey=abc", "http://t/announce?passkey=abc&info_hash="),
        ("http://t/announce?passkey=abc&", "http://t/announce?passkey=abc&info_hash="),
        ("http://t/announce?", "http://t/announce?info_hash="),
        ("https://t/a.php?x=1#frag", "https://t/a.php?x=1&info_hash="),
    ],
)
def test_announce_url_appends_to_existing_query(base: str, prefix: str) -> None:
    url = hc.announce_url(base, req())
    assert url.startswith(prefix)
    assert "#" not in url


@pytest.mark.parametrize("base", ["udp://t:1/announce", "ftp://t/announce", "http:///x", "x"])
def test_announce_url_refuses_non_http(base: str) -> None:
    with pytest.raises(TrackerError):
        hc.announce_url(base, req())


def test_announce_request_validates_our_own_values() -> None:
    with pytest.raises(ValueError):
        req(info_hash=b"short")
    with pytest.raises(ValueError):
        req(port=70000)
    with pytest.raises(ValueError):
        req(left=-1)
    with pytest.raises(ValueError):
        req(key=2**32)


# -- HTTP announce response ------------------------------------------------------------------


def test_parse_compact_response() -> None:
    body = encode(
        {
            b"interval": 1800,
            b"min interval": 900,
            b"complete": 3,
            b"incomplete": 7,
            b"tracker id": b"T-42",
            b"warning message": b"be nice",
            b"peers": bytes([10, 0, 0, 1, 0x1A, 0xE1, 192, 168, 1, 2, 0, 80]),
            b"peers6": bytes(15) + b"\x01" + b"\x1a\xe1",
        }
    )
    r = hc.parse_announce_response(body)
    assert r == AnnounceResponse(
        interval=1800,
        min_interval=900,
        peers=(PeerAddress("10.0.0.1", 6881), PeerAddress("192.168.1.2", 80)),
        peers6=(PeerAddress("::1", 6881),),
        tracker_id=b"T-42",
        warning="be nice",
        complete=3,
        incomplete=7,
    )


def test_parse_dict_peers_validates_and_drops_bad_entries() -> None:
    peers = [
        {b"ip": b"10.0.0.1", b"port": 6881, b"peer id": b"x" * 20},
        {b"ip": b"10.0.0.2", b"port": 0},  # port 0
        {b"ip": b"10.0.0.3", b"port": 70000},  # out of range
        {b"ip": b"10.0.0.4", b"port": b"6881"},  # wrong type
        {b"ip": b"0.0.0.0", b"port": 1},  # unspecified
        {b"ip": b"999.1.1.1", b"port": 1},  # malformed address
        {b"ip": b"peer.example.org", b"port": 51413},  # a DNS name is allowed (BEP 3)
        {b"ip": b"bad name!", b"port": 1},
        {b"ip": b"\xff\xfe", b"port": 1},
        {b"ip": b"2001:db8::7", b"port": 7},
        {b"ip": b"::ffff:10.0.0.9", b"port": 9},  # v4-mapped: an IPv4 peer
        {b"port": 1},
        b"not a dict",
        {b"ip": b"10.0.0.1", b"port": 6881},  # duplicate
    ]
    r = hc.parse_announce_response(encode({b"interval": 60, b"peers": peers}))
    assert r.peers == (
        PeerAddress("10.0.0.1", 6881),
        PeerAddress("peer.example.org", 51413),
        PeerAddress("10.0.0.9", 9),
    )
    assert r.peers6 == (PeerAddress("2001:db8::7", 7),)


def test_compact_peers_drop_port_zero_and_ragged_tail() -> None:
    data = bytes([1, 2, 3, 4, 0, 0, 1, 2, 3, 5, 0, 1, 9, 9, 9])
    assert parse_compact_peers(data) == [PeerAddress("1.2.3.5", 1)]
    six = bytes(15) + b"\x02" + b"\x00\x00" + bytes(15) + b"\x03" + b"\x00\x05" + b"\x01"
    assert parse_compact_peers6(six) == [PeerAddress("::3", 5)]


def test_peer_lists_are_capped() -> None:
    many = b"".join(
        bytes([10, i >> 8 & 255, i & 255, 1]) + b"\x00\x50" for i in range(MAX_PEERS + 50)
    )
    assert len(parse_compact_peers(many)) == MAX_PEERS


def test_failure_reason_raises() -> None:
    body = encode({b"failure reason": b"Requested download is not authorized", b"interval": 5})
    with pytest.raises(TrackerFailure) as info:
        hc.parse_announce_response(body)
    assert info.value.reason == "Requested download is not authorized"
    assert isinstance(info.value, TrackerError)


def test_missing_or_negative_interval_gets_the_default() -> None:
    assert hc.parse_announce_response(encode({b"peers": b""})).interval == hc.DEFAULT_INTERVAL
    r = hc.parse_announce_response(encode({b"interval": -5, b"complete": -1}))
    assert r.interval == hc.DEFAULT_INTERVAL
    assert r.complete is None


def test_trailing_newline_is_tolerated() -> None:
    assert hc.parse_announce_response(encode({b"interval": 42}) + b"\r\n").interval == 42


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>Not Found</html>",
        b"li1ee",
        b"d8:intervali10e",  # truncated
        b"d8:intervali10eeXX",  # trailing garbage
        b"d" * 100 + b"e" * 100,  # too deep
        b"d5:peers" + b"9999999999:",  # huge length prefix
        b"x" * (hc.MAX_BODY + 1),
    ],
)
def test_garbage_raises_tracker_error(body: bytes) -> None:
    with pytest.raises(TrackerError):
        hc.parse_announce_response(body)


# -- scrape ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("announce", "scrape"),
    [
        ("http://example.com/announce", "http://example.com/scrape"),
        ("http://example.com/x/announce", "http://example.com/x/scrape"),
        ("http://example.com/announce.php", "http://example.com/scrape.php"),
        ("http://example.com/a?x2%0644", None),
        ("http://example.com/announce?x2%0644", "http://example.com/scrape?x2%0644"),
        ("http://example.com/announce?x=2/4", "http://example.com/scrape?x=2/4"),
        ("http://example.com/x%064announce", None),
        ("http://example.com/announce/x", None),
        ("http://example.com/", None),
        ("https://t:8443/p/announce_x", "https://t:8443/p/scrape_x"),
    ],
)
def test_scrape_url_convention(announce: str, scrape: str | None) -> None:
    assert hc.scrape_url(announce) == scrape


def test_scrape_request_and_response() -> None:
    other = b"\x01" * 20
    url = hc.scrape_request_url("http://t/scrape?k=1", [INFO_HASH, other])
    hashes = [unquote_to_bytes(v) for k, v in query_of(url) if k == "info_hash"]
    assert hashes == [INFO_HASH, other]
    body = encode(
        {
            b"files": {
                INFO_HASH: {b"complete": 5, b"downloaded": 50, b"incomplete": 10},
                other: {b"complete": 1, b"incomplete": 0},
                b"short": {b"complete": 1, b"incomplete": 1},
                b"\x02" * 20: b"junk",
            }
        }
    )
    assert hc.parse_scrape_response(body) == {
        INFO_HASH: ScrapeStats(5, 50, 10),
        other: ScrapeStats(1, 0, 0),
    }
    with pytest.raises(TrackerFailure):
        hc.parse_scrape_response(encode({b"failure reason": b"no"}))
    with pytest.raises(TrackerError):
        hc.parse_scrape_response(encode({b"interval": 1}))


# -- fuzzing: only TorrentfsError may escape ---------------------------------------------------

scalars = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.binary(max_size=40)
field_names = st.sampled_from(
    [b"interval", b"min interval", b"peers", b"peers6", b"failure reason", b"warning message",
     b"tracker id", b"complete", b"incomplete", b"downloaded", b"files", b"ip", b"port"]
)  # fmt: skip
small_dicts = st.dictionaries(field_names | st.binary(max_size=20), scalars, max_size=3)
values = (
    scalars
    | st.lists(small_dicts | scalars, max_size=4)
    | st.dictionaries(st.binary(min_size=19, max_size=21), small_dicts | scalars, max_size=3)
)
responses = st.dictionaries(field_names, values, max_size=6)


@settings(max_examples=2000)
@given(st.binary(max_size=200))
def test_fuzz_raw_bytes(body: bytes) -> None:
    for parse in (hc.parse_announce_response, hc.parse_scrape_response):
        try:
            parse(body)
        except TorrentfsError:
            pass


@settings(max_examples=1000)
@given(responses)
def test_fuzz_structured_responses(response: dict[bytes, object]) -> None:
    body = encode(response)
    try:
        r = hc.parse_announce_response(body)
    except TrackerFailure:
        assert b"failure reason" in response
    except TrackerError:
        pass
    else:
        assert r.interval >= 0
        for p in (*r.peers, *r.peers6):
            assert 0 < p.port < 65536
    try:
        hc.parse_scrape_response(body)
    except TorrentfsError:
        pass


# -- UDP (BEP 15) -------------------------------------------------------------------------------


def test_connect_request_bytes() -> None:
    packet = uc.encode_connect_request(0x12345678)
    assert packet == bytes.fromhex("00000417271019800000000012345678")
    assert uc.decode_request(packet) == uc.ConnectPacket(0x12345678)


def test_announce_request_round_trip_and_layout() -> None:
    r = req(event=Event.COMPLETED, numwant=33, key=0xFFFFFFFF, uploaded=2**40)
    packet = uc.encode_announce_request(-7, 0xFEDCBA98, r)
    assert len(packet) == 98
    assert packet[8:12] == b"\x00\x00\x00\x01"
    assert packet[16:36] == INFO_HASH and packet[36:56] == PEER_ID
    assert struct.unpack(">i", packet[80:84]) == (1,)  # completed
    assert packet[96:98] == (6881).to_bytes(2, "big")
    decoded = uc.decode_request(packet)
    assert isinstance(decoded, uc.AnnouncePacket)
    assert decoded.connection_id == -7
    assert decoded.transaction_id & 0xFFFFFFFF == 0xFEDCBA98
    assert decoded.request == r
    assert decoded.ip == 0
    assert uc.decode_request(uc.encode_announce_request(1, 2, req())).request.numwant is None


@pytest.mark.parametrize(("event", "number"), [(Event.NONE, 0), (Event.STARTED, 2),
                                               (Event.STOPPED, 3)])  # fmt: skip
def test_udp_event_numbers(event: Event, number: int) -> None:
    packet = uc.encode_announce_request(1, 2, req(event=event))
    assert struct.unpack(">i", packet[80:84]) == (number,)


@pytest.mark.parametrize("ipv6", [False, True])
def test_announce_response_round_trip(ipv6: bool) -> None:
    peers = (
        [PeerAddress("2001:db8::1", 1), PeerAddress("::2", 65535)]
        if ipv6
        else [PeerAddress("10.1.2.3", 1), PeerAddress("127.0.0.1", 65535)]
    )
    packet = uc.encode_announce_response(
        99, interval=120, leechers=4, seeders=2, peers=peers, ipv6=ipv6
    )
    assert len(packet) == 20 + (18 if ipv6 else 6) * 2
    r = uc.decode_announce_response(packet, ipv6=ipv6)
    assert (r.interval, r.incomplete, r.complete) == (120, 4, 2)
    assert list(r.peers6 if ipv6 else r.peers) == peers
    assert not (r.peers if ipv6 else r.peers6)


def test_scrape_round_trip() -> None:
    hashes = [INFO_HASH, b"\x07" * 20]
    packet = uc.encode_scrape_request(5, 6, hashes)
    assert uc.decode_request(packet) == uc.ScrapePacket(5, 6, tuple(hashes))
    stats = [ScrapeStats(1, 2, 3), ScrapeStats(4, 5, 6)]
    assert uc.decode_scrape_response(uc.encode_scrape_response(6, stats), 2) == stats
    with pytest.raises(TrackerError):
        uc.decode_scrape_response(uc.encode_scrape_response(6, stats[:1]), 2)
    with pytest.raises(ValueError):
        uc.encode_scrape_request(5, 6, [INFO_HASH] * (uc.MAX_SCRAPE_HASHES + 1))


def test_error_packet() -> None:
    assert uc.decode_error(uc.encode_error(1, "Connection ID missmatch.")) == (
        "Connection ID missmatch."
    )
    assert uc.decode_error(uc.encode_error(1, "")) == "UDP tracker error without a message"


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x00" * 15, uc.encode_connect_response(1, 2) + b"x" * 20,
     struct.pack(">qii", 1, 9, 1), struct.pack(">qii", 1, 2, 1) + b"\x01" * 19],
)  # fmt: skip
def test_decode_request_rejects_garbage(packet: bytes) -> None:
    with pytest.raises(TrackerError):
        uc.decode_request(packet)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("udp://tracker.example:6969/announce", ("tracker.example", 6969)),
     ("udp://[::1]:80", ("::1", 80)), ("UDP://h:1", ("h", 1))],
)  # fmt: skip
def test_parse_udp_url(url: str, expected: tuple[str, int]) -> None:
    assert uc.parse_udp_url(url) == expected


@pytest.mark.parametrize("url", ["udp://host/announce", "udp://h:99999", "http://h:1", "udp://:5"])
def test_parse_udp_url_rejects(url: str) -> None:
    with pytest.raises(TrackerError):
        uc.parse_udp_url(url)


def test_retransmit_schedule_is_bep15() -> None:
    assert [uc.retransmit_timeout(n) for n in range(9)] == [15 * 2**n for n in range(9)]
    assert uc.retransmit_timeout(8) == 3840
    assert uc.retransmit_timeout(3, base=0.5) == 4.0


# -- the UDP transaction state machine ---------------------------------------------------------


def tids(*values: int):  # type: ignore[no-untyped-def]
    it = iter(values)
    return lambda: next(it)


def test_connect_then_announce() -> None:
    conn = uc.ConnectionId()
    tx = uc.UdpAnnounce(req(), conn, transaction_id=tids(111, 222))
    packet, wait = tx.send(now=0.0)
    assert uc.decode_request(packet) == uc.ConnectPacket(111)
    assert wait == 15.0
    assert tx.receive(uc.encode_connect_response(999, 5), 0.1) is None  # wrong tid: ignored
    assert tx.receive(b"\x00\x00", 0.1) is None  # too short to tell: ignored
    assert not tx.needs_send
    assert tx.receive(uc.encode_connect_response(111, 0xC0FFEE), 0.2) is None
    assert tx.needs_send and conn.get(0.2) == 0xC0FFEE
    packet, wait = tx.send(now=0.2)
    announce = uc.decode_request(packet)
    assert isinstance(announce, uc.AnnouncePacket)
    assert (announce.connection_id, announce.transaction_id, wait) == (0xC0FFEE, 222, 15.0)
    answer = uc.encode_announce_response(
        111, interval=60, leechers=0, seeders=0, peers=[PeerAddress("1.2.3.4", 5)]
    )
    assert tx.receive(answer, 0.3) is None  # the connect's tid is no longer accepted
    answer = uc.encode_announce_response(
        222, interval=60, leechers=0, seeders=1, peers=[PeerAddress("1.2.3.4", 5)]
    )
    result = tx.receive(answer, 0.3)
    assert result is not None and result.peers == (PeerAddress("1.2.3.4", 5),)


def test_connection_id_reused_within_60_s_then_renewed() -> None:
    conn = uc.ConnectionId()
    conn.set(77, now=100.0)
    packet, _ = uc.UdpAnnounce(req(), conn, transaction_id=tids(1)).send(now=159.9)
    assert isinstance(uc.decode_request(packet), uc.AnnouncePacket)
    packet, _ = uc.UdpAnnounce(req(), conn, transaction_id=tids(2)).send(now=160.0)
    assert uc.decode_request(packet) == uc.ConnectPacket(2)


def test_retransmissions_double_then_give_up() -> None:
    tx = uc.UdpScrape([INFO_HASH], uc.ConnectionId(), transaction_id=tids(5))
    now, waits = 0.0, []
    for _ in range(9):
        packet, wait = tx.send(now)
        assert uc.decode_request(packet) == uc.ConnectPacket(5)  # same packet, same tid
        waits.append(wait)
        now += wait
    assert waits == [15.0 * 2**n for n in range(9)]
    with pytest.raises(TrackerError):
        tx.send(now)


def test_expired_connection_id_is_rerequested_during_retransmissions() -> None:
    conn = uc.ConnectionId()
    tx = uc.UdpAnnounce(req(), conn, retransmit_base=20.0, transaction_id=tids(1, 2, 3))
    tx.send(0.0)
    tx.receive(uc.encode_connect_response(1, 42), 0.0)
    assert isinstance(uc.decode_request(tx.send(0.0)[0]), uc.AnnouncePacket)  # waits 20
    assert isinstance(uc.decode_request(tx.send(20.0)[0]), uc.AnnouncePacket)  # waits 40
    packet, wait = tx.send(60.0)
    assert uc.decode_request(packet) == uc.ConnectPacket(3)
    assert wait == 80.0  # the schedule keeps growing


def test_error_packet_raises_and_forgets_connection_id() -> None:
    conn = uc.ConnectionId()
    conn.set(42, 0.0)
    tx = uc.UdpAnnounce(req(), conn, transaction_id=tids(8))
    tx.send(1.0)
    assert tx.receive(uc.encode_error(9, "not for you"), 1.0) is None
    with pytest.raises(TrackerFailure, match="torrent not registered"):
        tx.receive(uc.encode_error(8, "torrent not registered"), 1.0)
    assert conn.get(1.0) is None


def test_wrong_action_with_right_tid_is_an_error() -> None:
    tx = uc.UdpAnnounce(req(), uc.ConnectionId(), transaction_id=tids(8))
    tx.send(0.0)
    with pytest.raises(TrackerError):
        tx.receive(uc.encode_scrape_response(8, []), 0.0)


def test_tracker_answering_only_connects_is_given_up() -> None:
    conn = uc.ConnectionId()
    tx = uc.UdpAnnounce(req(), conn, transaction_id=itertools.count(1).__next__)
    now = 0.0
    with pytest.raises(TrackerError, match="never the request"):
        for _ in range(100):
            packet, wait = tx.send(now)
            decoded = uc.decode_request(packet)
            if isinstance(decoded, uc.ConnectPacket):
                tx.receive(uc.encode_connect_response(decoded.transaction_id, 1), now)
            else:
                now += wait  # the announce is never answered


@settings(max_examples=2000)
@given(st.binary(max_size=120), st.booleans())
def test_fuzz_udp_answers(data: bytes, connected: bool) -> None:
    conn = uc.ConnectionId()
    if connected:
        conn.set(1, 0.0)
    tx = uc.UdpAnnounce(req(), conn, ipv6=len(data) % 2 == 1, transaction_id=lambda: 0)
    tx.send(0.0)
    try:
        tx.receive(data, 0.0)
    except TrackerError:
        pass
    try:
        uc.decode_request(data)
    except TrackerError:
        pass
