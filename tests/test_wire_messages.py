"""Encoding of peer wire messages and handshakes (BEP 3, BEP 6, BEP 10): exact bytes, and
our own invalid arguments reported as ProtocolError(remote=False)."""

from __future__ import annotations

import pytest

from torrentfs.errors import ProtocolError
from torrentfs.wire import handshake as hs
from torrentfs.wire import messages as m
from torrentfs.wire.protocol import PeerProtocol

INFO_HASH = bytes(range(20))
PEER_ID = b"-TF0001-abcdefghijkl"


def test_handshake_bytes_follow_bep3() -> None:
    h = hs.Handshake(INFO_HASH, PEER_ID, hs.make_reserved())
    data = hs.encode(h)
    assert len(data) == hs.HANDSHAKE_LEN == 68
    assert data[:20] == b"\x13BitTorrent protocol"
    assert data[20:28] == bytes(8)
    assert data[28:48] == INFO_HASH
    assert data[48:] == PEER_ID
    assert hs.decode(data) == h
    assert h.encode() == data
    assert hs.Handshake.decode(data + b"extra") == h


def test_reserved_bits() -> None:
    assert hs.make_reserved(extensions=True) == bytes([0, 0, 0, 0, 0, 0x10, 0, 0])
    assert hs.make_reserved(fast=True) == bytes([0, 0, 0, 0, 0, 0, 0, 0x04])
    assert hs.make_reserved(dht=True) == bytes([0, 0, 0, 0, 0, 0, 0, 0x01])
    everything = hs.make_reserved(extensions=True, fast=True, dht=True)
    h = hs.Handshake(INFO_HASH, PEER_ID, everything)
    assert h.supports_extensions and h.supports_fast and h.supports_dht
    plain = hs.Handshake(INFO_HASH, PEER_ID, bytes(8))
    assert not (plain.supports_extensions or plain.supports_fast or plain.supports_dht)
    ours = hs.Handshake.ours(INFO_HASH, PEER_ID)
    assert ours.supports_extensions and ours.supports_fast and not ours.supports_dht
    assert hs.Handshake.ours(INFO_HASH, PEER_ID, dht=True).supports_dht


def test_handshake_decode_rejects_garbage() -> None:
    good = hs.encode(hs.Handshake(INFO_HASH, PEER_ID))
    with pytest.raises(ProtocolError) as info:
        hs.decode(good[:67])
    assert info.value.remote
    with pytest.raises(ProtocolError):
        hs.decode(b"\x13BitTorrent protocoL" + good[20:])
    with pytest.raises(ProtocolError):
        hs.check_prefix(b"GET / HTTP/1.1")
    hs.check_prefix(b"")
    hs.check_prefix(good[:7])


def test_handshake_with_bad_fields_is_our_bug() -> None:
    with pytest.raises(ProtocolError) as info:
        hs.Handshake(b"short", PEER_ID)
    assert not info.value.remote
    with pytest.raises(ProtocolError):
        hs.Handshake(INFO_HASH, PEER_ID, b"\x00")


GOLDEN: list[tuple[m.Message, bytes]] = [
    (m.KeepAlive(), b"\x00\x00\x00\x00"),
    (m.Choke(), b"\x00\x00\x00\x01\x00"),
    (m.Unchoke(), b"\x00\x00\x00\x01\x01"),
    (m.Interested(), b"\x00\x00\x00\x01\x02"),
    (m.NotInterested(), b"\x00\x00\x00\x01\x03"),
    (m.Have(258), b"\x00\x00\x00\x05\x04\x00\x00\x01\x02"),
    (m.BitfieldMsg(b"\xf0\x80"), b"\x00\x00\x00\x03\x05\xf0\x80"),
    (
        m.Request(1, 16384, 16384),
        b"\x00\x00\x00\x0d\x06\x00\x00\x00\x01\x00\x00\x40\x00\x00\x00\x40\x00",
    ),
    (m.Piece(2, 4, b"abc"), b"\x00\x00\x00\x0c\x07\x00\x00\x00\x02\x00\x00\x00\x04abc"),
    (m.Cancel(1, 0, 1), b"\x00\x00\x00\x0d\x08" + bytes([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])),
    (m.Port(6881), b"\x00\x00\x00\x03\x09\x1a\xe1"),
    (m.Suggest(7), b"\x00\x00\x00\x05\x0d\x00\x00\x00\x07"),
    (m.HaveAll(), b"\x00\x00\x00\x01\x0e"),
    (m.HaveNone(), b"\x00\x00\x00\x01\x0f"),
    (m.RejectRequest(0, 0, 5), b"\x00\x00\x00\x0d\x10" + bytes(8) + b"\x00\x00\x00\x05"),
    (m.AllowedFast(3), b"\x00\x00\x00\x05\x11\x00\x00\x00\x03"),
    (m.Extended(0, b"de"), b"\x00\x00\x00\x04\x14\x00de"),
]


@pytest.mark.parametrize(("msg", "expected"), GOLDEN, ids=lambda x: type(x).__name__)
def test_encode_golden_bytes(msg: m.Message, expected: bytes) -> None:
    assert m.encode(msg) == expected


@pytest.mark.parametrize(("msg", "encoded"), GOLDEN, ids=lambda x: type(x).__name__)
def test_every_message_round_trips_through_the_parser(msg: m.Message, encoded: bytes) -> None:
    # A fresh connection per message: bitfield/have all/have none are only legal first.
    proto = PeerProtocol(None, remote_handshake=hs.Handshake.ours(INFO_HASH, PEER_ID))
    proto.receive(encoded)
    assert proto.next_events() == [msg]


def test_message_ids_match_the_beps() -> None:
    ids: dict[type, int] = {
        m.Choke: 0,
        m.Unchoke: 1,
        m.Interested: 2,
        m.NotInterested: 3,
        m.Have: 4,
        m.BitfieldMsg: 5,
        m.Request: 6,
        m.Piece: 7,
        m.Cancel: 8,
        m.Port: 9,
        m.Suggest: 0x0D,
        m.HaveAll: 0x0E,
        m.HaveNone: 0x0F,
        m.RejectRequest: 0x10,
        m.AllowedFast: 0x11,
        m.Extended: 20,
    }
    for cls, msg_id in ids.items():
        assert getattr(cls, "msg_id") == msg_id  # noqa: B009


@pytest.mark.parametrize(
    "msg",
    [
        m.Have(-1),
        m.Have(2**32),
        m.Request(0, 0, -5),
        m.Piece(2**32, 0, b"x"),
        m.Port(65536),
        m.Extended(256, b""),
        m.Extended(-1, b""),
    ],
)
def test_unrepresentable_fields_are_our_bug(msg: m.Message) -> None:
    with pytest.raises(ProtocolError) as info:
        m.encode(msg)
    assert not info.value.remote


def test_encoding_a_non_message_is_our_bug() -> None:
    with pytest.raises(ProtocolError) as info:
        m.encode("choke")  # type: ignore[arg-type]
    assert not info.value.remote


def test_request_batch_equals_individual_requests() -> None:
    triples = [(i, b * 16384, 16384) for i in range(5) for b in range(3)]
    expected = b"".join(m.encode(m.Request(*t)) for t in triples)
    assert m.encode_request_batch(triples) == expected
    assert m.encode_request_batch([m.Request(*t) for t in triples]) == expected
    assert m.encode_request_batch([]) == b""
    assert len(expected) == m.REQUEST_MESSAGE_LEN * len(triples)


def test_request_batch_rejects_bad_items_as_our_bug() -> None:
    for bad in ([(0, 0, -1)], [(0, 0)], [(2**32, 0, 1)]):
        with pytest.raises(ProtocolError) as info:
            m.encode_request_batch(bad)  # type: ignore[arg-type]
        assert not info.value.remote


def test_piece_header_plus_block_is_a_piece_message() -> None:
    block = bytes(range(256)) * 64
    header = m.encode_piece_header(9, 32768, len(block))
    assert len(header) == m.PIECE_HEADER_LEN == 13
    assert header + block == m.encode(m.Piece(9, 32768, block))
    with pytest.raises(ProtocolError) as info:
        m.encode_piece_header(-1, 0, 1)
    assert not info.value.remote
