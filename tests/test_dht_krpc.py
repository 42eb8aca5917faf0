"""KRPC codec (BEP 5/32/42/43), BEP 42 node ids and write tokens."""

from __future__ import annotations

import random

import pytest

from torrentfs.bencode import decode as bdecode
from torrentfs.bencode import encode as bencode
from torrentfs.dht.krpc import (
    ERROR_METHOD_UNKNOWN,
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
    Response,
    decode_message,
    encode_message,
)
from torrentfs.dht.node_id import (
    crc32c,
    generate_node_id,
    is_exempt,
    verify_node_id,
)
from torrentfs.dht.tokens import ROTATE_INTERVAL, TokenManager
from torrentfs.errors import ProtocolError
from torrentfs.types import PeerAddress

A = b"A" * 20
B = b"B" * 20
H = bytes(range(20))


@pytest.mark.parametrize(
    "msg",
    [
        Query(b"aa", A, Ping()),
        Query(b"aa", A, Ping(), version=b"LT\x01\x02", read_only=True),
        Query(b"t1", A, FindNode(B)),
        Query(b"t2", A, GetPeers(H)),
        Query(b"t3", A, AnnouncePeer(H, 6881, b"tok")),
        Query(b"t3", A, AnnouncePeer(H, 0, b"tok", implied_port=True)),
        Response(b"aa", B),
        Response(
            b"aa",
            B,
            nodes=(NodeInfo(A, "1.2.3.4", 6881), NodeInfo(H, "5.6.7.8", 1)),
            nodes6=(NodeInfo(A, "2001:db8::1", 65535),),
            values=(PeerAddress("9.9.9.9", 51413), PeerAddress("2001:db8::2", 80)),
            token=b"12345678",
            version=b"TF\x00\x01",
            ip=PeerAddress("10.0.0.1", 4000),
        ),
        ErrorReply(b"x", 201, "A Generic Error Ocurred"),
        ErrorReply(b"x", 204, "Method Unknown", ip=PeerAddress("::1", 5)),
    ],
)
def test_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert encode_message(decode_message(data)) == data


def test_bep5_example_wire_format() -> None:
    # The ping example of BEP 5, byte for byte.
    ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    msg = decode_message(ping)
    assert msg == Query(b"aa", b"abcdefghij0123456789", Ping())
    assert encode_message(msg) == ping
    reply = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re"
    assert decode_message(reply) == Response(b"aa", b"mnopqrstuvwxyz123456")
    err = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee"
    assert decode_message(err) == ErrorReply(b"aa", 201, "A Generic Error Ocurred")
    ann = (
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
        b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"
    )
    q = decode_message(ann)
    assert isinstance(q, Query) and isinstance(q.body, AnnouncePeer)
    assert q.body.implied_port and q.body.token == b"aoeusnth" and q.body.port == 6881


def _query(args: dict[bytes, object], q: bytes = b"ping", **top: object) -> bytes:
    msg: dict[bytes, object] = {b"t": b"tt", b"y": b"q", b"q": q, b"a": args}
    msg.update({k.encode(): v for k, v in top.items()})
    return bencode(msg)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "bencoding"),
        (b"le", "not a dictionary"),
        (b"d1:y1:qe", "transaction id"),
        (bencode({b"t": b"", b"y": b"q"}), "transaction id"),
        (bencode({b"t": b"x" * 33, b"y": b"q"}), "transaction id"),
        (bencode({b"t": b"aa", b"y": b"z"}), "unknown message kind"),
        (_query({b"id": b"short"}), "id must be 20 bytes"),
        (_query({}), "id"),
        (_query({b"id": A, b"target": B[:19]}, b"find_node"), "target"),
        (_query({b"id": A}, b"get_peers"), "info_hash"),
        (_query({b"id": A, b"info_hash": H, b"port": 0, b"token": b"t"}, b"announce_peer"), "port"),
        (
            _query({b"id": A, b"info_hash": H, b"port": 65536, b"token": b"t"}, b"announce_peer"),
            "port",
        ),
        (_query({b"id": A, b"info_hash": H, b"port": 1}, b"announce_peer"), "token"),
        (_query({b"id": A}, ro=b"1"), "ro"),
        (bencode({b"t": b"aa", b"y": b"r", b"r": {b"id": A, b"nodes": b"x" * 25}}), "multiple"),
        (bencode({b"t": b"aa", b"y": b"r", b"r": {b"id": A, b"nodes": b"x" * 26 * 65}}), "more"),
        (bencode({b"t": b"aa", b"y": b"r", b"r": {b"id": A, b"values": [b"x" * 7]}}), "compact"),
        (bencode({b"t": b"aa", b"y": b"r", b"r": {b"id": A, b"values": [b"x" * 6] * 257}}), "257"),
        (bencode({b"t": b"aa", b"y": b"r", b"r": {b"id": A, b"token": b""}}), "token"),
        (bencode({b"t": b"aa", b"y": b"e", b"e": [b"x", b"y"]}), "code"),
        (b"d1:ad2:id20:" + b"a" * 20 + b"e1:t2:aa" + b"l" * 10 + b"e" * 10 + b"e", "bencoding"),
        (b"d1:t2:aa1:y1:q" + b"1:x" * 100 + b"e", "bencoding"),
    ],
)
def test_malformed_raise_krpc_error(data: bytes, fragment: str) -> None:
    with pytest.raises(KrpcError) as info:
        decode_message(data)
    assert isinstance(info.value, ProtocolError) and info.value.remote
    if fragment == "257":
        assert "256" in str(info.value)
    else:
        assert fragment in str(info.value)


def test_unknown_method_carries_tid_and_204() -> None:
    with pytest.raises(KrpcError) as info:
        decode_message(_query({b"id": A}, b"sample_infohashes"))
    assert info.value.tid == b"tt" and info.value.code == ERROR_METHOD_UNKNOWN
    with pytest.raises(KrpcError) as info:
        decode_message(_query({b"id": b"x"}))
    assert info.value.tid == b"tt" and info.value.code == ERROR_PROTOCOL


def test_lenient_where_harmless() -> None:
    # Unknown keys ignored, odd 'v' ignored, port-0 nodes and peers dropped.
    bad_node = b"N" * 20 + bytes([1, 2, 3, 4, 0, 0])
    good_node = b"G" * 20 + bytes([1, 2, 3, 4, 0x1A, 0xE1])
    data = bencode(
        {
            b"t": b"aa",
            b"y": b"r",
            b"v": 5,
            b"zz": b"future",
            b"r": {
                b"id": A,
                b"nodes": bad_node + good_node,
                b"values": [bytes([1, 1, 1, 1, 0, 0]), bytes([2, 2, 2, 2, 0, 80])],
                b"samples": b"",
            },
        }
    )
    msg = decode_message(data)
    assert isinstance(msg, Response)
    assert msg.version is None
    assert msg.nodes == (NodeInfo(b"G" * 20, "1.2.3.4", 6881),)
    assert msg.values == (PeerAddress("2.2.2.2", 80),)
    # implied_port makes the port argument irrelevant (may be missing).
    q = decode_message(
        _query({b"id": A, b"info_hash": H, b"token": b"t", b"implied_port": 1}, b"announce_peer")
    )
    assert isinstance(q, Query) and q.body == AnnouncePeer(H, 0, b"t", implied_port=True)


def test_encode_rejects_our_own_mistakes() -> None:
    with pytest.raises(KrpcError) as info:
        encode_message(Query(b"aa", b"short", Ping()))
    assert not info.value.remote
    with pytest.raises(KrpcError):
        encode_message(Query(b"aa", A, AnnouncePeer(H, 0, b"t")))
    with pytest.raises(KrpcError):
        encode_message(Response(b"aa", A, values=(PeerAddress("host.example", 1),)))


def test_ip_field_and_ro() -> None:
    data = encode_message(Query(b"aa", A, Ping(), read_only=True))
    assert bdecode(data)[b"ro"] == 1  # type: ignore[index]
    data = encode_message(Response(b"aa", A, ip=PeerAddress("124.31.75.21", 6881)))
    assert bdecode(data)[b"ip"] == bytes([124, 31, 75, 21, 0x1A, 0xE1])  # type: ignore[index]


# -- BEP 42 ------------------------------------------------------------------------------------

# The table of BEP 42: IP, rand (last byte), node id (first 21 bits fixed by the IP).
BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize(("ip", "rand", "node_id"), BEP42_VECTORS)
def test_bep42_vectors_verify(ip: str, rand: int, node_id: str) -> None:
    nid = bytes.fromhex(node_id)
    assert nid[19] == rand
    assert verify_node_id(nid, ip)
    flipped = bytearray(nid)
    flipped[1] ^= 0x01
    assert not verify_node_id(bytes(flipped), ip)
    assert not verify_node_id(nid, "8.8.8.8")


@pytest.mark.parametrize(("ip", "rand", "node_id"), BEP42_VECTORS)
def test_bep42_generate_matches_prefix(ip: str, rand: int, node_id: str) -> None:
    for seed in range(50):
        generated = generate_node_id(ip, random.Random(seed))
        if generated[19] == rand:
            want = bytes.fromhex(node_id)
            assert generated[:2] == want[:2] and generated[2] & 0xF8 == want[2] & 0xF8
            break
    for seed in range(20):
        assert verify_node_id(generate_node_id(ip, random.Random(seed)), ip)


def test_bep42_ipv6_and_exemptions() -> None:
    ip6 = "2001:db8:1234:5678::1"
    nid = generate_node_id(ip6, random.Random(3))
    assert verify_node_id(nid, ip6)
    assert not verify_node_id(nid, "2001:db8:ffff:5678::1")
    for ip in (
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.0.9",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
    ):
        assert is_exempt(ip), ip
        assert verify_node_id(b"\x00" * 20, ip)
    for ip in ("172.32.0.1", "8.8.8.8", "2001:db8::1", "11.0.0.1"):
        assert not is_exempt(ip), ip
    assert not verify_node_id(b"short", "127.0.0.1")


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_rotate() -> None:
    rng = random.Random(1)
    tm = TokenManager(rng.randbytes, now=0.0)
    tok = tm.issue("1.2.3.4", 10.0)
    assert len(tok) == 8
    assert tm.check(tok, "1.2.3.4", 10.0)
    assert not tm.check(tok, "1.2.3.5", 10.0)  # bound to the IP
    assert tm.check(tok, "1.2.3.4", 10.0 + ROTATE_INTERVAL)  # previous secret still accepted
    assert not tm.check(tok, "1.2.3.4", 2 * ROTATE_INTERVAL)  # two rotations later: stale
    # Lazy rotation keeps to the schedule: a late first check cannot extend a token's life.
    tm2 = TokenManager(random.Random(2).randbytes, now=0.0)
    tok2 = tm2.issue("1.2.3.4", 0.0)
    assert tm2.check(tok2, "1.2.3.4", 2 * ROTATE_INTERVAL - 1)
    assert not tm2.check(tok2, "1.2.3.4", 2 * ROTATE_INTERVAL + 1)
    assert not tm2.check(b"", "1.2.3.4", 0.0)
