"""BEP 10 extended handshake, BEP 9 ut_metadata (codec and assembler), BEP 11 ut_pex."""

from __future__ import annotations

import hashlib
import random

import fastbencode
import pytest

from torrentfs.errors import ProtocolError
from torrentfs.types import PeerAddress
from torrentfs.wire import extension, ut_metadata, ut_pex
from torrentfs.wire.extension import ExtendedHandshake
from torrentfs.wire.ut_metadata import (
    METADATA_PIECE_SIZE,
    MetadataAssembler,
    MetadataData,
    MetadataHashMismatch,
    MetadataReject,
    MetadataRequest,
)
from torrentfs.wire.ut_pex import PexMessage, PexPeer


def bencode(value: object) -> bytes:
    return bytes(fastbencode.bencode(value))


# ----------------------------------------------------------------------------- BEP 10


def test_extended_handshake_round_trip() -> None:
    h = ExtendedHandshake(
        m={"ut_metadata": 3, "ut_pex": 1, "lt_donthave": 0},
        v="torrentfs 0.1 ü",
        p=51413,
        reqq=500,
        yourip=bytes([127, 0, 0, 1]),
        metadata_size=31235,
    )
    assert extension.decode_handshake(extension.encode_handshake(h)) == h
    assert extension.decode_handshake(extension.encode_handshake(ExtendedHandshake())) == (
        ExtendedHandshake()
    )


def test_extended_handshake_wire_form() -> None:
    payload = extension.encode_handshake(ExtendedHandshake(m={"ut_pex": 2}, p=6881))
    assert payload == b"d1:md6:ut_pexi2ee1:pi6881ee"


def test_extended_handshake_from_libtorrent_style_payload() -> None:
    payload = bencode(
        {
            b"m": {b"ut_metadata": 2, b"ut_pex": 1, b"upload_only": 3, b"lt_donthave": 7},
            b"metadata_size": 12345,
            b"complete_ago": 1,
            b"reqq": 500,
            b"v": b"libtorrent 2.0.10",
            b"yourip": bytes(16),
            b"ipv4": b"\x7f\x00\x00\x01",
            b"upload_only": 1,
        }
    )
    h = extension.decode_handshake(payload)
    assert h.m == {"ut_metadata": 2, "ut_pex": 1, "upload_only": 3, "lt_donthave": 7}
    assert (h.metadata_size, h.reqq, h.v, h.yourip) == (12345, 500, "libtorrent 2.0.10", bytes(16))


def test_bad_optional_fields_are_ignored() -> None:
    payload = bencode(
        {
            b"m": {b"ut_pex": b"one", b"ut_metadata": 300, b"x": -1, b"\xff\xfe": 4, b"ok": 5},
            b"v": 12,
            b"p": 70000,
            b"reqq": -3,
            b"yourip": b"abc",
            b"metadata_size": b"100",
            b"unknown": [1, {b"a": b"b"}],
        }
    )
    assert extension.decode_handshake(payload) == ExtendedHandshake(m={"ok": 5})
    assert extension.decode_handshake(bencode({b"m": [1, 2]})).m == {}
    assert extension.decode_handshake(bencode({b"reqq": 10**12})).reqq == extension.MAX_REQQ


@pytest.mark.parametrize("size", [0, -1, extension.MAX_METADATA_SIZE + 1, 2**62])
def test_metadata_size_out_of_bounds(size: int) -> None:
    with pytest.raises(ProtocolError) as info:
        extension.decode_handshake(bencode({b"m": {}, b"metadata_size": size}))
    assert info.value.remote


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"le",
        b"i5e",
        b"d1:m",
        b"d1:mdee" + b"junk",
        b"d1:x" + b"l" * 20 + b"e" * 20 + b"e",  # deeper than MAX_DEPTH
        bencode({b"v": b"x" * extension.MAX_HANDSHAKE_SIZE}),  # larger than the limit
    ],
)
def test_malformed_handshakes(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        extension.decode_handshake(payload)
    assert info.value.remote


@pytest.mark.parametrize(
    "h",
    [
        ExtendedHandshake(m={"ut_pex": 256}),
        ExtendedHandshake(p=0),
        ExtendedHandshake(reqq=0),
        ExtendedHandshake(yourip=b"12345"),
        ExtendedHandshake(metadata_size=0),
    ],
)
def test_encoding_invalid_fields_is_our_bug(h: ExtendedHandshake) -> None:
    with pytest.raises(ProtocolError) as info:
        extension.encode_handshake(h)
    assert not info.value.remote


def test_extension_ids_both_directions() -> None:
    ids = extension.ExtensionIds()
    assert ids.local_name(extension.LOCAL_EXTENSIONS["ut_metadata"]) == "ut_metadata"
    assert ids.local_name(99) is None
    ids.update_remote({"ut_metadata": 3, "ut_pex": 4})
    assert ids.remote_id("ut_metadata") == 3
    ids.update_remote({"ut_pex": 0})  # a later handshake disables ut_pex only
    assert ids.remote_id("ut_pex") is None and ids.remote_id("ut_metadata") == 3


# ----------------------------------------------------------------------------- BEP 9


def test_ut_metadata_wire_forms() -> None:
    assert ut_metadata.encode(MetadataRequest(0)) == b"d8:msg_typei0e5:piecei0ee"
    assert ut_metadata.encode(MetadataReject(1)) == b"d8:msg_typei2e5:piecei1ee"
    data = MetadataData(0, 3, b"abc")
    assert ut_metadata.encode(data) == b"d8:msg_typei1e5:piecei0e10:total_sizei3eeabc"


@pytest.mark.parametrize(
    "msg",
    [
        MetadataRequest(3),
        MetadataReject(0),
        MetadataData(0, 40000, b"\x00" * METADATA_PIECE_SIZE),
        MetadataData(2, 40000, b"e" * (40000 - 2 * METADATA_PIECE_SIZE)),
        MetadataData(0, 1, b"d"),
    ],
)
def test_ut_metadata_round_trip(msg: ut_metadata.MetadataMessage) -> None:
    assert ut_metadata.decode(ut_metadata.encode(msg)) == msg


def test_ut_metadata_unknown_type_is_ignored() -> None:
    assert ut_metadata.decode(bencode({b"msg_type": 7, b"piece": 0})) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"d8:msg_typei0ee",  # no piece
        bencode({b"msg_type": b"0", b"piece": 0}),
        bencode({b"msg_type": 0, b"piece": -1}),
        bencode({b"msg_type": 0, b"piece": 10**9}),
        bencode({b"msg_type": 0, b"piece": 0}) + b"trailing",
        bencode({b"msg_type": 1, b"piece": 0}) + b"x",  # no total_size
        bencode({b"msg_type": 1, b"piece": 0, b"total_size": 3}) + b"ab",  # short
        bencode({b"msg_type": 1, b"piece": 0, b"total_size": 3}) + b"abcd",  # long
        bencode({b"msg_type": 1, b"piece": 1, b"total_size": 3}) + b"abc",  # beyond the end
        bencode({b"msg_type": 1, b"piece": 0, b"total_size": 0}),
        bencode({b"msg_type": 1, b"piece": 0, b"total_size": 2**40}) + b"x" * 16384,
        b"d8:msg_typei1e5:piecei0e10:total_sizei3e",  # unterminated dict
        b"d" + b"l" * 50,
        b"d9999999999999:x",
        b"x",
    ],
)
def test_ut_metadata_malformed(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        ut_metadata.decode(payload)
    assert info.value.remote


def test_ut_metadata_piece_data_that_looks_like_bencode() -> None:
    msg = MetadataData(0, 5, b"i1e4:")
    assert ut_metadata.decode(ut_metadata.encode(msg)) == msg


def test_answer_serves_our_info_dict() -> None:
    info = bytes(range(256)) * 100  # 25600 bytes: two pieces
    assert ut_metadata.answer(info, MetadataRequest(1)) == MetadataData(
        1, len(info), info[METADATA_PIECE_SIZE:]
    )
    assert ut_metadata.answer(info, MetadataRequest(2)) == MetadataReject(2)
    assert ut_metadata.answer(None, MetadataRequest(0)) == MetadataReject(0)


def make_info(size: int) -> tuple[bytes, bytes]:
    info = random.Random(size).randbytes(size)
    return info, hashlib.sha1(info).digest()


def test_assembler_collects_pieces_from_several_peers() -> None:
    info, info_hash = make_info(3 * METADATA_PIECE_SIZE + 100)
    asm = MetadataAssembler(info_hash, len(info))
    assert asm.num_pieces == 4 and asm.needed() == [0, 1, 2, 3]
    assert [asm.pick("a"), asm.pick("b"), asm.pick("a"), asm.pick("b"), asm.pick("c")] == [
        0,
        1,
        2,
        3,
        None,
    ]
    asm.rejected(1, "b")
    asm.peer_gone("a")
    assert asm.pick("c") == 0
    assert asm.pick("c") == 1
    replies = [ut_metadata.answer(info, MetadataRequest(i)) for i in (3, 1, 0)]
    for reply, peer in zip(replies, ["b", "c", "c"], strict=True):
        assert isinstance(reply, MetadataData)
        assert asm.receive(reply, peer) is None
    assert isinstance(replies[0], MetadataData)
    assert asm.receive(replies[0], "b") is None  # duplicate: ignored
    assert asm.needed() == [2] and not asm.done
    last = ut_metadata.answer(info, MetadataRequest(2))
    assert isinstance(last, MetadataData)
    assert asm.receive(last, "d") == info
    assert asm.done and asm.result == info and asm.pick("x") is None


def test_assembler_bad_hash_names_the_contributors_and_starts_over() -> None:
    info, info_hash = make_info(2 * METADATA_PIECE_SIZE)
    asm = MetadataAssembler(info_hash, len(info))
    asm.receive(MetadataData(0, len(info), info[:METADATA_PIECE_SIZE]), "honest")
    with pytest.raises(MetadataHashMismatch) as info_exc:
        asm.receive(MetadataData(1, len(info), bytes(METADATA_PIECE_SIZE)), "liar")
    assert info_exc.value.peers == frozenset({"honest", "liar"})
    assert info_exc.value.remote
    assert asm.needed() == [0, 1] and not asm.done
    asm.receive(MetadataData(1, len(info), info[METADATA_PIECE_SIZE:]), "honest")
    assert asm.receive(MetadataData(0, len(info), info[:METADATA_PIECE_SIZE]), "b") == info


def test_assembler_rejects_inconsistent_data() -> None:
    info, info_hash = make_info(1000)
    asm = MetadataAssembler(info_hash, len(info))
    with pytest.raises(ProtocolError):
        asm.receive(MetadataData(0, 1001, info + b"x"), "p")  # disagrees with metadata_size
    with pytest.raises(ProtocolError):
        asm.receive(MetadataData(0, 1000, info[:999]), "p")
    with pytest.raises(ProtocolError):
        MetadataAssembler(info_hash, extension.MAX_METADATA_SIZE + 1)
    with pytest.raises(ProtocolError):
        MetadataAssembler(info_hash, 0)


# ----------------------------------------------------------------------------- BEP 11


def test_pex_round_trip_both_families() -> None:
    msg = PexMessage(
        added=(
            PexPeer(PeerAddress("10.0.0.1", 6881), ut_pex.FLAG_SEED | ut_pex.FLAG_REACHABLE),
            PexPeer(PeerAddress("2001:db8::1", 51413), ut_pex.FLAG_UTP),
            PexPeer(PeerAddress("192.168.1.20", 1)),
        ),
        dropped=(PeerAddress("10.0.0.2", 80), PeerAddress("2001:db8::7", 443)),
    )
    payload = ut_pex.encode(msg)
    d = fastbencode.bdecode(payload)
    assert d[b"added"] == bytes([10, 0, 0, 1, 0x1A, 0xE1, 192, 168, 1, 20, 0, 1])
    assert d[b"added.f"] == bytes([0x12, 0])
    assert len(d[b"added6"]) == 18 and d[b"added6.f"] == b"\x04"
    assert len(d[b"dropped"]) == 6 and len(d[b"dropped6"]) == 18
    decoded = ut_pex.decode(payload)
    assert set(decoded.added) == set(msg.added)
    assert set(decoded.dropped) == set(msg.dropped)


def test_pex_ipv4_mapped_entries_become_ipv4() -> None:
    mapped = ut_pex.encode(PexMessage(added=(PexPeer(PeerAddress("::ffff:1.2.3.4", 443)),)))
    assert ut_pex.decode(mapped).added == (PexPeer(PeerAddress("1.2.3.4", 443)),)


def test_pex_send_limits_are_our_bug() -> None:
    many = tuple(PexPeer(PeerAddress(f"10.0.{i // 256}.{i % 256}", 1000)) for i in range(51))
    for bad in [
        PexMessage(added=many),
        PexMessage(dropped=tuple(p.address for p in many)),
        PexMessage(added=(PexPeer(PeerAddress("example.org", 80)),)),
        PexMessage(added=(PexPeer(PeerAddress("10.0.0.1", 0)),)),
        PexMessage(added=(PexPeer(PeerAddress("10.0.0.1", 1), flags=256),)),
    ]:
        with pytest.raises(ProtocolError) as info:
            ut_pex.encode(bad)
        assert not info.value.remote
    assert len(ut_pex.decode(ut_pex.encode(PexMessage(added=many[:50]))).added) == 50


def test_pex_receive_is_bounded_and_tolerant() -> None:
    added = b"".join(
        bytes([10, 1, i // 256, i % 256]) + (1000 + i).to_bytes(2, "big") for i in range(300)
    )
    payload = bencode(
        {
            b"added": added + b"\x01\x02\x03",  # trailing partial entry
            b"added.f": b"\x02",  # too short: the rest default to 0
            b"added6": b"\x00" * 18,  # unspecified address: skipped
            b"dropped": bytes([1, 2, 3, 4, 0, 0]) + bytes([1, 2, 3, 5, 0, 9]),  # port 0: skipped
            b"dropped6": 5,  # wrong type: ignored
            b"something": {b"else": 1},
        }
    )
    msg = ut_pex.decode(payload)
    assert len(msg.added) == ut_pex.MAX_RECEIVE
    assert msg.added[0] == PexPeer(PeerAddress("10.1.0.0", 1000), ut_pex.FLAG_SEED)
    assert msg.added[1] == PexPeer(PeerAddress("10.1.0.1", 1001), 0)
    assert msg.dropped == (PeerAddress("1.2.3.5", 9),)


@pytest.mark.parametrize("payload", [b"", b"le", b"d5:added", b"i1e"])
def test_pex_malformed(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        ut_pex.decode(payload)
    assert info.value.remote
