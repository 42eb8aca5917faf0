"""Fuzzing the wire parsers: whatever a peer sends, only ProtocolError escapes (DESIGN.md §3.7).

Random bytes alone mostly die at the first check, so the strategies also build near-valid
input: a real handshake followed by random frames, mutated valid streams, and bencoded
dicts with the right keys holding random values.
"""

from __future__ import annotations

import hashlib
import struct

import fastbencode
from fuzz_scale import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.errors import ProtocolError
from torrentfs.wire import extension, ut_metadata, ut_pex
from torrentfs.wire import handshake as hs
from torrentfs.wire import messages as m
from torrentfs.wire.protocol import PeerProtocol

INFO_HASH = hashlib.sha1(b"fuzz").digest()
NUM_PIECES = 21
EXAMPLES = settings(max_examples=examples(700))


def piece_size(index: int) -> int:
    return 5000 if index == NUM_PIECES - 1 else 32768


reserved = st.sampled_from(
    [hs.DEFAULT_RESERVED, bytes(8), hs.make_reserved(extensions=True), hs.make_reserved(fast=True)]
)
small_ints = st.integers(0, 40) | st.integers(0, 2**32 - 1)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A frame with a plausible id and random (often wrong) length and fields."""
    msg_id = draw(st.sampled_from([*range(0, 10), *range(13, 18), 20, 21, 99]))
    payload_kind = draw(st.integers(0, 2))
    if payload_kind == 0:
        payload = draw(st.binary(max_size=40))
    elif payload_kind == 1:
        fields = draw(st.lists(small_ints, max_size=4))
        payload = b"".join(struct.pack(">I", f) for f in fields)
    else:
        payload = draw(st.binary(min_size=5, max_size=5)) * draw(st.integers(0, 5))
    length = 1 + len(payload)
    if draw(st.integers(0, 9)) == 0:
        length = draw(st.integers(0, 2**32 - 1))
    return struct.pack(">IB", length, msg_id) + payload


@st.composite
def peer_streams(draw: st.DrawFn) -> bytes:
    head = hs.encode(hs.Handshake(INFO_HASH, b"p" * 20, draw(reserved)))
    body = b"".join(draw(st.lists(frames(), max_size=12)))
    data = head + body
    if draw(st.booleans()):  # mutate a few bytes
        buf = bytearray(data)
        for pos, value in draw(
            st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4)
        ):
            buf[pos % len(buf)] = value
        data = bytes(buf)
    return data


def feed(proto: PeerProtocol, data: bytes, cuts: list[int]) -> None:
    start = 0
    for point in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        proto.receive(data[start:point])
        start = point
    proto.next_events()


@settings(max_examples=examples(1000))
@given(
    st.binary(max_size=200) | peer_streams(),
    st.lists(st.integers(0, 10**6), max_size=8),
    st.booleans(),
    reserved,
)
def test_peer_protocol_raises_only_protocol_error(
    data: bytes, cuts: list[int], known: bool, ours: bytes
) -> None:
    proto = (
        PeerProtocol(NUM_PIECES, piece_size, info_hash=INFO_HASH, reserved=ours)
        if known
        else PeerProtocol(None, reserved=ours)
    )
    try:
        feed(proto, data, cuts)
    except ProtocolError as exc:
        assert exc.remote


leaves = st.integers(-(2**70), 2**70) | st.binary(max_size=20)
flat_values = (
    leaves
    | st.lists(leaves, max_size=3)
    | st.dictionaries(st.binary(max_size=8), leaves, max_size=3)
)
bencode_values = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.binary(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
handshake_keys = st.sampled_from(
    [b"m", b"v", b"p", b"reqq", b"yourip", b"metadata_size", b"ut_pex", b"ut_metadata", b"x"]
)
handshake_dicts = st.dictionaries(
    handshake_keys,
    bencode_values | st.dictionaries(st.binary(max_size=12), st.integers(-5, 300), max_size=4),
    max_size=7,
)


def encoded(value: object) -> bytes:
    return bytes(fastbencode.bencode(value))


@EXAMPLES
@given(st.binary(max_size=300) | handshake_dicts.map(encoded) | bencode_values.map(encoded))
def test_extended_handshake_raises_only_protocol_error(payload: bytes) -> None:
    try:
        h = extension.decode_handshake(payload)
    except ProtocolError as exc:
        assert exc.remote
        return
    assert all(isinstance(k, str) and 0 <= v <= 255 for k, v in h.m.items())
    assert h.metadata_size is None or 0 < h.metadata_size <= extension.MAX_METADATA_SIZE
    assert h.yourip is None or len(h.yourip) in (4, 16)
    # What we accepted we can send back.
    assert extension.decode_handshake(extension.encode_handshake(h)) == h


metadata_dicts = st.dictionaries(
    st.sampled_from([b"msg_type", b"piece", b"total_size", b"extra"]),
    st.integers(-3, 3) | st.integers(0, 2**40) | flat_values,
    max_size=4,
)


@EXAMPLES
@given(
    st.binary(max_size=300)
    | st.tuples(metadata_dicts.map(encoded), st.binary(max_size=40)).map(lambda t: t[0] + t[1])
)
def test_ut_metadata_raises_only_protocol_error(payload: bytes) -> None:
    try:
        msg = ut_metadata.decode(payload)
    except ProtocolError as exc:
        assert exc.remote
        return
    if msg is not None:
        assert ut_metadata.decode(ut_metadata.encode(msg)) == msg
        if isinstance(msg, ut_metadata.MetadataData):
            asm = ut_metadata.MetadataAssembler(INFO_HASH, msg.total_size)
            try:
                asm.receive(msg, "peer")
            except ProtocolError as exc:  # a one-piece info dict with the wrong hash
                assert exc.remote


pex_dicts = st.dictionaries(
    st.sampled_from([b"added", b"added.f", b"added6", b"added6.f", b"dropped", b"dropped6"]),
    st.binary(max_size=80) | flat_values,
    max_size=6,
)


@EXAMPLES
@given(st.binary(max_size=300) | pex_dicts.map(encoded))
def test_ut_pex_raises_only_protocol_error(payload: bytes) -> None:
    try:
        msg = ut_pex.decode(payload)
    except ProtocolError as exc:
        assert exc.remote
        return
    assert len(msg.added) <= ut_pex.MAX_RECEIVE and len(msg.dropped) <= ut_pex.MAX_RECEIVE
    assert all(p.address.port != 0 and 0 <= p.flags <= 255 for p in msg.added)
    for start in range(0, len(msg.added), ut_pex.MAX_SEND):  # what we accepted we can forward
        ut_pex.encode(ut_pex.PexMessage(added=msg.added[start : start + ut_pex.MAX_SEND]))


@settings(max_examples=examples(300))
@given(
    st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=20), st.integers(0, 5)), max_size=12)
)
def test_metadata_assembler_never_returns_unverified_bytes(
    pieces: list[tuple[int, bytes, int]],
) -> None:
    info = b"d4:name4:fuzze" * 3000  # 42000 bytes: three pieces
    asm = ut_metadata.MetadataAssembler(hashlib.sha1(info).digest(), len(info))
    for index, junk, peer in pieces:
        real = info[index * 16384 : (index + 1) * 16384]
        data = real if peer % 2 else junk
        try:
            result = asm.receive(ut_metadata.MetadataData(index, len(info), data), peer)
        except ProtocolError as exc:
            assert exc.remote
            continue
        assert result is None or result == info


def test_fuzz_corpus_smoke() -> None:
    """Fixed nasty inputs that once were interesting, run every time without hypothesis."""
    head = hs.encode(hs.Handshake(INFO_HASH, b"p" * 20))
    cases = [
        head + b"\xff\xff\xff\xff",
        head + m.encode(m.Extended(0, b"d1:md" * 1000)),
        head + struct.pack(">IB", 2, 20),
        head + struct.pack(">IBB", 2, 20, 0),
    ]
    for data in cases:
        proto = PeerProtocol(NUM_PIECES, piece_size)
        try:
            proto.receive(data)
        except ProtocolError:
            pass
        for event in proto.next_events():
            if isinstance(event, m.Extended):
                try:
                    extension.decode_handshake(event.payload)
                except ProtocolError:
                    pass
