"""PeerProtocol: framing under any TCP chunking, validation of everything a peer sends, and a
whole download conversation between two sans-IO peers (BEP 3, BEP 6, BEP 10)."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torrentfs.errors import ProtocolError
from torrentfs.wire import extension
from torrentfs.wire import handshake as hs
from torrentfs.wire import messages as m
from torrentfs.wire.protocol import MAX_BLOCK_LENGTH, MAX_PIECES_UNKNOWN, Event, PeerProtocol

INFO_HASH = hashlib.sha1(b"torrent").digest()
OTHER_HASH = hashlib.sha1(b"another torrent").digest()
PEER_A = b"-TF0001-aaaaaaaaaaaa"
PEER_B = b"-TF0001-bbbbbbbbbbbb"
NUM_PIECES = 37
PIECE_LENGTH = 65536
LAST_PIECE = 10000


def piece_size(index: int) -> int:
    return LAST_PIECE if index == NUM_PIECES - 1 else PIECE_LENGTH


def their_handshake(reserved: bytes = hs.DEFAULT_RESERVED, info_hash: bytes = INFO_HASH) -> bytes:
    return hs.encode(hs.Handshake(info_hash, PEER_B, reserved))


def new_protocol(**kwargs: object) -> PeerProtocol:
    return PeerProtocol(NUM_PIECES, piece_size, info_hash=INFO_HASH, **kwargs)  # type: ignore[arg-type]


def connected(reserved: bytes = hs.DEFAULT_RESERVED) -> PeerProtocol:
    """A protocol object that has already parsed the peer's handshake."""
    proto = new_protocol()
    proto.receive(their_handshake(reserved))
    [event] = proto.next_events()
    assert isinstance(event, hs.Handshake)
    return proto


def frame(msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


def assert_violation(proto: PeerProtocol, data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        proto.receive(data)
    assert info.value.remote
    return info.value


# ----------------------------------------------------------------------------- handshake


def test_handshake_is_the_first_event_and_negotiates_features() -> None:
    proto = new_protocol()
    proto.receive(their_handshake(hs.make_reserved(extensions=True, dht=True)))
    [event] = proto.next_events()
    assert event == hs.Handshake(INFO_HASH, PEER_B, hs.make_reserved(extensions=True, dht=True))
    assert proto.remote_handshake == event
    assert proto.extensions and not proto.fast and proto.dht


def test_features_need_both_sides() -> None:
    proto = PeerProtocol(NUM_PIECES, piece_size, reserved=hs.make_reserved(fast=True))
    proto.receive(their_handshake(hs.make_reserved(extensions=True, fast=True)))
    assert proto.fast and not proto.extensions


def test_handshake_arrives_in_pieces() -> None:
    proto = new_protocol()
    data = their_handshake() + m.encode(m.Unchoke())
    for i in range(len(data)):
        proto.receive(data[i : i + 1])
    assert proto.next_events() == [hs.decode(data), m.Unchoke()]


def test_wrong_protocol_string_is_rejected_at_the_first_bad_byte() -> None:
    proto = new_protocol()
    proto.receive(b"\x13Bit")
    assert_violation(proto, b"X")
    assert_violation(new_protocol(), b"GET /announce HTTP/1.1\r\n")


def test_info_hash_mismatch() -> None:
    err = assert_violation(new_protocol(), their_handshake(info_hash=OTHER_HASH))
    assert "info_hash" in str(err)


def test_without_expected_info_hash_any_torrent_is_accepted() -> None:
    proto = PeerProtocol(None)
    proto.receive(their_handshake(info_hash=OTHER_HASH))
    [event] = proto.next_events()
    assert isinstance(event, hs.Handshake) and event.info_hash == OTHER_HASH


def test_handshake_read_elsewhere() -> None:
    remote = hs.Handshake(INFO_HASH, PEER_B, hs.DEFAULT_RESERVED)
    proto = PeerProtocol(NUM_PIECES, piece_size, remote_handshake=remote)
    assert proto.fast and proto.extensions and proto.remote_handshake == remote
    proto.receive(m.encode(m.HaveAll()))
    assert proto.next_events() == [m.HaveAll()]


def test_our_handshake_and_bad_arguments() -> None:
    proto = PeerProtocol(NUM_PIECES, piece_size, reserved=hs.make_reserved(dht=True))
    assert hs.decode(proto.handshake_bytes(INFO_HASH, PEER_A)).supports_dht
    for kwargs in ({"reserved": b"\x00"}, {"info_hash": b"x"}, {"max_message_length": 5}):
        with pytest.raises(ProtocolError) as info:
            PeerProtocol(NUM_PIECES, piece_size, **kwargs)
        assert not info.value.remote
    with pytest.raises(ProtocolError):
        PeerProtocol(NUM_PIECES)
    with pytest.raises(ProtocolError):
        PeerProtocol(0, 16384)


# ----------------------------------------------------------------------------- framing


def block_strategy(draw: st.DrawFn, max_length: int) -> tuple[int, int, int]:
    index = draw(st.integers(0, NUM_PIECES - 1))
    size = piece_size(index)
    begin = draw(st.integers(0, size - 1))
    length = draw(st.integers(1, min(max_length, size - begin)))
    return index, begin, length


@st.composite
def message_strategy(draw: st.DrawFn) -> m.Message | bytes:
    """A valid message after the first one, or raw bytes of an unknown-id frame."""
    kind = draw(st.integers(0, 13))
    index = draw(st.integers(0, NUM_PIECES - 1))
    if kind == 0:
        simple: list[m.Message] = [m.KeepAlive(), m.Choke(), m.Unchoke(), m.Interested()]
        return draw(st.sampled_from(simple))
    if kind == 1:
        return m.NotInterested()
    if kind == 2:
        return m.Have(index)
    if kind == 3:
        return m.Request(*block_strategy(draw, MAX_BLOCK_LENGTH))
    if kind == 4:
        i, begin, length = block_strategy(draw, 300)
        return m.Piece(i, begin, draw(st.binary(min_size=length, max_size=length)))
    if kind == 5:
        return m.Cancel(*block_strategy(draw, 16384))
    if kind == 6:
        return m.Port(draw(st.integers(0, 65535)))
    if kind == 7:
        return m.Suggest(index)
    if kind == 8:
        return m.RejectRequest(*block_strategy(draw, 16384))
    if kind == 9:
        return m.AllowedFast(index)
    if kind == 10:
        return m.Extended(draw(st.integers(0, 255)), draw(st.binary(max_size=40)))
    if kind == 11:
        return m.Piece(index, 0, b"\x00" * min(16384, piece_size(index)))
    if kind == 12:
        unknown_id = draw(st.sampled_from([10, 11, 12, 18, 19, 21, 22, 23, 200, 255]))
        return frame(unknown_id, draw(st.binary(max_size=30)))
    return m.KeepAlive()


@st.composite
def conversation(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """A valid byte stream from a peer (handshake first) and the events it must produce."""
    parts = [their_handshake()]
    expected: list[Event] = [hs.decode(parts[0])]
    first = draw(st.integers(0, 3))
    if first == 1:
        bits = draw(st.lists(st.booleans(), min_size=NUM_PIECES, max_size=NUM_PIECES))
        value = sum(1 << (39 - i) for i, bit in enumerate(bits) if bit)
        expected.append(m.BitfieldMsg(value.to_bytes(5, "big")))
    elif first == 2:
        expected.append(m.HaveAll())
    elif first == 3:
        expected.append(m.HaveNone())
    parts += [m.encode(msg) for msg in expected[1:]]  # type: ignore[arg-type]
    for item in draw(st.lists(message_strategy(), max_size=40)):
        if isinstance(item, bytes):
            parts.append(item)  # unknown id: ignored, no event
        else:
            parts.append(m.encode(item))
            expected.append(item)
    return b"".join(parts), expected


def feed_in_chunks(proto: PeerProtocol, data: bytes, cuts: list[int], kind: str) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        chunk = data[start:point]
        if kind == "bytearray":
            proto.receive(bytearray(chunk))
        elif kind == "memoryview":
            proto.receive(memoryview(bytearray(chunk)))
        else:
            proto.receive(chunk)
        start = point


@given(
    conversation(),
    st.lists(st.integers(0, 10**6), max_size=60),
    st.sampled_from(["bytes", "bytearray", "memoryview"]),
)
def test_any_chunking_gives_the_same_events(
    convo: tuple[bytes, list[Event]], cuts: list[int], kind: str
) -> None:
    data, expected = convo
    whole = new_protocol()
    whole.receive(data)
    assert whole.next_events() == expected
    split = new_protocol()
    feed_in_chunks(split, data, cuts, kind)
    assert split.next_events() == expected


def as_copies(events: list[Event]) -> list[Event]:
    """The events with each piece block copied out (zero-copy blocks are views)."""
    return [
        m.Piece(e.index, e.begin, bytes(e.block)) if isinstance(e, m.Piece) else e for e in events
    ]


@given(conversation(), st.lists(st.integers(1, 5000), min_size=1, max_size=60))
def test_zero_copy_blocks_from_a_reused_buffer(
    convo: tuple[bytes, list[Event]], sizes: list[int]
) -> None:
    """``copy_blocks=False`` as `PeerConnection` uses it: every chunk lands in the same buffer,
    the events of one `receive` are consumed before the next chunk overwrites it, and the
    blocks seen then are exactly the blocks sent, under any chunking."""
    data, expected = convo
    proto = new_protocol(copy_blocks=False)
    buffer = bytearray(max(sizes))
    got: list[Event] = []
    pos = 0
    turn = 0
    while pos < len(data):
        size = min(sizes[turn % len(sizes)], len(data) - pos)
        turn += 1
        buffer[:size] = data[pos : pos + size]
        pos += size
        proto.receive(memoryview(buffer)[:size])
        got += as_copies(proto.next_events())
        buffer[:] = b"\xee" * len(buffer)  # what the next receive would do to stale views
    assert got == expected


def test_zero_copy_block_is_a_view_of_the_callers_buffer() -> None:
    proto = new_protocol(copy_blocks=False)
    proto.receive(their_handshake())
    buf = bytearray(m.encode(m.Piece(1, 0, b"abcd")) + m.encode(m.Piece(1, 4, b"ef")))
    proto.receive(buf)
    [_, piece, _] = proto.next_events()
    assert isinstance(piece, m.Piece) and type(piece.block) is memoryview
    assert piece.block == b"abcd"
    buf[13:17] = b"zzzz"
    assert piece.block == b"zzzz"  # no copy was made: the caller must consume it in time


def test_blocks_of_the_last_piece_are_checked_exactly() -> None:
    """The hot path bounds blocks by the full piece length; the last piece is shorter."""
    for copy_blocks in (True, False):
        proto = new_protocol(copy_blocks=copy_blocks)
        proto.receive(their_handshake())
        proto.receive(m.encode(m.Piece(NUM_PIECES - 1, LAST_PIECE - 2, b"ok")))
        assert isinstance(proto.next_events()[-1], m.Piece)
        error = assert_violation(proto, m.encode(m.Piece(NUM_PIECES - 1, LAST_PIECE - 1, b"no")))
        assert "beyond the end of piece" in str(error)
        proto = new_protocol(copy_blocks=copy_blocks)
        proto.receive(their_handshake())
        error = assert_violation(proto, m.encode(m.Piece(NUM_PIECES, 0, b"x")))
        assert "out of range" in str(error)


def test_byte_by_byte_with_big_pieces() -> None:
    blocks = [m.Piece(i, 0, bytes([i]) * 16384) for i in range(5)]
    data = their_handshake() + b"".join(m.encode(b) for b in blocks)
    proto = new_protocol()
    for i in range(len(data)):
        proto.receive(data[i : i + 1])
    assert proto.next_events()[1:] == blocks


def test_pieces_are_bytes_independent_of_the_callers_buffer() -> None:
    proto = connected()
    buf = bytearray(m.encode(m.Piece(1, 0, b"abcd")))
    proto.receive(buf)
    buf[-4:] = b"zzzz"
    [piece] = proto.next_events()
    assert isinstance(piece, m.Piece) and type(piece.block) is bytes and piece.block == b"abcd"


# ----------------------------------------------------------------------------- length limits


def test_huge_length_prefix_is_rejected_from_its_four_bytes() -> None:
    proto = connected()
    assert_violation(proto, struct.pack(">I", 2**31))


def test_huge_length_prefix_split_over_calls() -> None:
    proto = connected()
    proto.receive(b"\x7f\xff")
    proto.receive(b"\xff")  # 3 bytes are not yet a length
    assert_violation(proto, b"\xff")
    proto = connected()
    proto.receive(b"\x7f\xff\xff")
    assert_violation(proto, b"\xff")


def test_custom_max_message_length() -> None:
    proto = new_protocol(max_message_length=1000)
    proto.receive(their_handshake())
    assert_violation(proto, frame(20, b"\x00" + b"x" * 1000)[:5])


@pytest.mark.parametrize(
    ("msg_id", "payload_len"),
    [(0, 1), (1, 4), (2, 1), (3, 2), (4, 3), (4, 5), (6, 11), (8, 14), (9, 1), (9, 4)],
)
def test_fixed_size_messages_with_wrong_length(msg_id: int, payload_len: int) -> None:
    proto = connected()
    # The header alone is enough to reject: the payload is never waited for.
    assert_violation(proto, frame(msg_id, bytes(payload_len))[:5])


@pytest.mark.parametrize(("msg_id", "payload_len"), [(0x0D, 3), (0x0E, 1), (0x10, 4), (0x11, 8)])
def test_fast_messages_with_wrong_length(msg_id: int, payload_len: int) -> None:
    assert_violation(connected(), frame(msg_id, bytes(payload_len)))


def test_piece_frame_limits() -> None:
    assert_violation(connected(), frame(7, bytes(8)))  # no block at all
    assert_violation(connected(), frame(7, bytes(8)))
    too_big = struct.pack(">IBII", 9 + MAX_BLOCK_LENGTH + 1, 7, 0, 0)
    assert_violation(connected(), too_big)


def test_extended_frame_limits() -> None:
    assert_violation(connected(), frame(20))  # no extended id byte
    assert_violation(connected(), struct.pack(">IB", 3 + 1024 * 1024, 20))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "msg",
    [
        m.Have(NUM_PIECES),
        m.Suggest(NUM_PIECES),
        m.AllowedFast(2**32 - 1),
        m.Request(NUM_PIECES, 0, 16384),
        m.Request(0, 0, 0),
        m.Request(0, 0, MAX_BLOCK_LENGTH + 1),
        m.Request(0, PIECE_LENGTH - 16383, 16384),
        m.Request(NUM_PIECES - 1, 0, 16384),  # the last piece is only 10000 bytes
        m.Cancel(0, 2**32 - 1, 16384),
        m.RejectRequest(NUM_PIECES - 1, LAST_PIECE, 1),
        m.Piece(NUM_PIECES, 0, b"x"),
        m.Piece(NUM_PIECES - 1, LAST_PIECE - 1, b"xy"),
        m.Piece(0, PIECE_LENGTH, b"x"),
    ],
)
def test_indices_and_blocks_are_checked(msg: m.Message) -> None:
    assert_violation(connected(), m.encode(msg))


def test_blocks_at_the_edges_are_accepted() -> None:
    proto = connected()
    msgs: list[m.Message] = [
        m.Request(NUM_PIECES - 1, LAST_PIECE - 16, 16),
        m.Request(0, 0, MAX_BLOCK_LENGTH // 2),
        m.Piece(NUM_PIECES - 1, LAST_PIECE - 1, b"z"),
        m.Have(NUM_PIECES - 1),
        m.Cancel(0, PIECE_LENGTH - 1, 1),
    ]
    proto.receive(b"".join(m.encode(x) for x in msgs))
    assert proto.next_events() == msgs


def test_uniform_piece_length_as_int() -> None:
    proto = PeerProtocol(4, 32768)
    proto.receive(their_handshake())
    proto.next_events()
    proto.receive(m.encode(m.Request(3, 16384, 16384)))
    assert proto.next_events() == [m.Request(3, 16384, 16384)]
    assert_violation(proto, m.encode(m.Request(3, 16385, 16384)))


def test_bitfield_length_and_spare_bits() -> None:
    assert_violation(connected(), m.encode(m.BitfieldMsg(b"\xff" * 4)))
    assert_violation(connected(), m.encode(m.BitfieldMsg(b"\xff" * 6)))
    assert_violation(connected(), m.encode(m.BitfieldMsg(b"\xff" * 4 + b"\xe1")))  # spare bit
    ok = m.BitfieldMsg(b"\xff" * 4 + b"\xe0")  # 37 = 32 + 5 pieces
    proto = connected()
    proto.receive(m.encode(ok))
    assert proto.next_events() == [ok]


@pytest.mark.parametrize("first", [m.Have(1), m.Unchoke(), m.Interested(), m.Request(0, 0, 1)])
@pytest.mark.parametrize(
    "late", [m.BitfieldMsg(bytes(5)), m.HaveAll(), m.HaveNone()], ids=["bitfield", "all", "none"]
)
def test_bitfield_kind_only_first(first: m.Message, late: m.Message) -> None:
    proto = connected()
    proto.receive(m.encode(first))
    assert_violation(proto, m.encode(late))


def test_only_one_bitfield_kind_message() -> None:
    proto = connected()
    proto.receive(m.encode(m.HaveNone()))
    assert_violation(proto, m.encode(m.BitfieldMsg(bytes(5))))


def test_bitfield_may_follow_extended_port_keepalive_and_allowed_fast() -> None:
    # Transmission sends its BEP 10 handshake before its bitfield; libtorrent may send port.
    proto = connected()
    before: list[m.Message] = [m.KeepAlive(), m.Extended(0, b"de"), m.Port(6881), m.AllowedFast(2)]
    proto.receive(b"".join(m.encode(x) for x in [*before, m.HaveAll()]))
    assert proto.next_events() == [*before, m.HaveAll()]


@pytest.mark.parametrize(
    "msg",
    [m.Suggest(0), m.HaveAll(), m.HaveNone(), m.RejectRequest(0, 0, 1), m.AllowedFast(0)],
)
def test_fast_messages_need_the_fast_extension(msg: m.Message) -> None:
    proto = connected(hs.make_reserved(extensions=True))
    assert not proto.fast
    assert_violation(proto, m.encode(msg))


def test_extended_needs_the_extension_protocol() -> None:
    proto = connected(hs.make_reserved(fast=True))
    assert_violation(proto, m.encode(m.Extended(0, b"de")))


def test_unknown_ids_are_ignored_but_bounded() -> None:
    proto = connected()
    proto.receive(frame(42, b"whatever") + frame(21, bytes(1000)) + m.encode(m.Unchoke()))
    assert proto.next_events() == [m.Unchoke()]
    assert_violation(proto, struct.pack(">IB", 10 * 1024 * 1024, 99))


def test_events_before_a_violation_are_kept_and_the_object_stays_dead() -> None:
    proto = connected()
    assert_violation(proto, m.encode(m.Unchoke()) + m.encode(m.Have(999)))
    assert proto.next_events() == [m.Unchoke()]
    assert_violation(proto, m.encode(m.Choke()))


# ----------------------------------------------------------------------------- magnets


def test_unknown_piece_count_defers_index_checks() -> None:
    proto = PeerProtocol(None, info_hash=INFO_HASH)
    raw = b"\xff" * 1000 + b"\x01"  # cannot be judged yet
    msgs: list[m.Message] = [m.BitfieldMsg(raw), m.Have(10**6), m.Request(5000, 10**6, 16384)]
    proto.receive(their_handshake() + b"".join(m.encode(x) for x in msgs))
    assert proto.next_events()[1:] == msgs
    assert proto.num_pieces is None
    proto.set_pieces(NUM_PIECES, piece_size)
    assert proto.num_pieces == NUM_PIECES
    assert_violation(proto, m.encode(m.Have(NUM_PIECES)))


def test_unknown_piece_count_still_bounds_bitfields_and_requests() -> None:
    proto = PeerProtocol(None)
    proto.receive(their_handshake())
    assert_violation(proto, struct.pack(">IB", 2 + (MAX_PIECES_UNKNOWN + 7) // 8, 5))
    proto = PeerProtocol(None)
    proto.receive(their_handshake())
    assert_violation(proto, m.encode(m.Request(0, 0, MAX_BLOCK_LENGTH + 1)))


# ----------------------------------------------------------------------------- sending


def test_send_checks_our_own_messages() -> None:
    proto = connected(hs.make_reserved())  # the peer supports neither BEP 6 nor BEP 10
    assert proto.send(m.Have(3)) == m.encode(m.Have(3))
    bads: list[m.Message] = [
        m.HaveAll(),
        m.Extended(0, b"de"),
        m.Have(NUM_PIECES),
        m.Request(0, PIECE_LENGTH, 1),
        m.Piece(NUM_PIECES - 1, 0, bytes(LAST_PIECE + 1)),
        m.BitfieldMsg(b"\x00"),
    ]
    for bad in bads:
        with pytest.raises(ProtocolError) as info:
            proto.send(bad)
        assert not info.value.remote


# ----------------------------------------------------------------------------- a whole conversation


class Seeder:
    """Test-only peer logic: serves every block it is asked for."""

    def __init__(self, data: bytes, piece_length: int) -> None:
        self.data = data
        self.piece_length = piece_length

    def answer(self, event: Event) -> list[bytes]:
        if isinstance(event, m.Interested):
            return [m.encode(m.Unchoke())]
        if isinstance(event, m.Request):
            start = event.index * self.piece_length + event.begin
            block = self.data[start : start + event.length]
            return [m.encode_piece_header(event.index, event.begin, len(block)), block]
        return []


def test_two_protocol_objects_download_a_torrent() -> None:
    rng = random.Random(7)
    piece_length = 32768
    data = rng.randbytes(piece_length * 9 + 1234)
    num_pieces = -(-len(data) // piece_length)
    hashes = [
        hashlib.sha1(data[i * piece_length : (i + 1) * piece_length]).digest()
        for i in range(num_pieces)
    ]

    def size(i: int) -> int:
        return min(piece_length, len(data) - i * piece_length)

    leecher = PeerProtocol(num_pieces, size, info_hash=INFO_HASH)
    seeder = PeerProtocol(num_pieces, size, info_hash=INFO_HASH)
    seed_logic = Seeder(data, piece_length)
    to_seeder = [leecher.handshake_bytes(INFO_HASH, PEER_A)]
    to_leecher = [seeder.handshake_bytes(INFO_HASH, PEER_B)]
    ours = extension.ExtendedHandshake(m=dict(extension.LOCAL_EXTENSIONS), v="torrentfs", reqq=250)

    def deliver(chunks: list[bytes], proto: PeerProtocol) -> list[Event]:
        stream = b"".join(chunks)
        chunks.clear()
        pos = 0
        while pos < len(stream):  # random TCP segmentation
            step = rng.randint(1, 40000)
            proto.receive(stream[pos : pos + step])
            pos += step
        return proto.next_events()

    pieces: dict[int, bytearray] = {}
    received: list[Event] = []
    pending = [
        (i, b, min(16384, size(i) - b)) for i in range(num_pieces) for b in range(0, size(i), 16384)
    ]
    unchoked = False
    for _round in range(100):
        for event in deliver(to_leecher, leecher):
            received.append(event)
            if isinstance(event, m.HaveAll):
                to_seeder.append(leecher.send(m.Interested()))
            elif isinstance(event, m.Unchoke):
                unchoked = True
            elif isinstance(event, m.Piece):
                buf = pieces.setdefault(event.index, bytearray(size(event.index)))
                buf[event.begin : event.begin + len(event.block)] = event.block
        if unchoked and pending:
            batch, pending = pending[:10], pending[10:]
            to_seeder.append(m.encode_request_batch(batch))
        for event in deliver(to_seeder, seeder):
            if isinstance(event, hs.Handshake):  # now the seeder knows what was negotiated
                payload = extension.encode_handshake(ours)
                to_leecher.append(seeder.send(m.Extended(0, payload)))
                to_leecher.append(seeder.send(m.HaveAll()))
            to_leecher.extend(seed_logic.answer(event))
        if not pending and not to_leecher and not to_seeder:
            break
    assert isinstance(received[0], hs.Handshake) and received[0].peer_id == PEER_B
    assert leecher.fast and leecher.extensions
    handshake_msg = received[1]
    assert isinstance(handshake_msg, m.Extended) and handshake_msg.ext_id == 0
    assert extension.decode_handshake(handshake_msg.payload) == ours
    assert sorted(pieces) == list(range(num_pieces))
    for i, buf in pieces.items():
        assert hashlib.sha1(buf).digest() == hashes[i]
    assert b"".join(pieces[i] for i in range(num_pieces)) == data
