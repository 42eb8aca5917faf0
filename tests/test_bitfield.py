"""Bitfield: BEP 3 bit order, spare-bit and length checks, counts and iteration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.bitfield import Bitfield
from torrentfs.errors import ProtocolError


def test_high_bit_of_first_byte_is_piece_zero() -> None:
    bf = Bitfield(10)
    assert bf.to_bytes() == b"\x00\x00"
    assert bf.set(0) is True
    assert bf.set(0) is False
    bf.set(9)
    assert bf.to_bytes() == bytes([0b1000_0000, 0b0100_0000])
    assert bf[0] and bf[9] and not bf[1]
    assert bf.count() == 2
    assert list(bf.iter_set()) == [0, 9]
    assert list(bf.iter_clear()) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert bf.clear(0) is True
    assert bf.clear(0) is False
    assert bf.count() == 1


def test_from_bytes_accepts_a_valid_field() -> None:
    bf = Bitfield.from_bytes(12, bytes([0xA5, 0xF0]))
    assert list(bf.iter_set()) == [0, 2, 5, 7, 8, 9, 10, 11]
    assert bf.count() == 8
    assert bf.to_bytes() == bytes([0xA5, 0xF0])
    assert Bitfield.from_bytes(12, memoryview(bytes([0xA5, 0xF0]))) == bf
    assert Bitfield.from_bytes(0, b"").all()


@pytest.mark.parametrize(
    ("size", "data", "why"),
    [
        (12, b"\xff", "1 bytes, expected 2"),
        (12, b"\xff\xf0\x00", "3 bytes, expected 2"),
        (16, b"\xff", "1 bytes, expected 2"),
        (0, b"\x00", "1 bytes, expected 0"),
        (12, b"\xff\xf8", "spare bits"),
        (12, b"\x00\x01", "spare bits"),
        (1, b"\x40", "spare bits"),
    ],
)
def test_from_bytes_rejects_wrong_length_and_spare_bits(size: int, data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why) as info:
        Bitfield.from_bytes(size, data)
    assert info.value.remote is True


def test_all_any_set_all_clear_all() -> None:
    bf = Bitfield(13)
    assert not bf.any() and not bf.all()
    bf.set_all()
    assert bf.all() and bf.count() == 13
    assert bf.to_bytes() == b"\xff\xf8"  # spare bits stay zero
    assert list(bf.iter_clear()) == []
    assert list(bf.iter_set()) == list(range(13))
    bf.clear_all()
    assert not bf.any() and bf.count() == 0
    assert list(bf.iter_clear()) == list(range(13))
    empty = Bitfield(0)
    empty.set_all()
    assert empty.all() and not empty.any() and empty.to_bytes() == b""


def test_indexes_are_bounded() -> None:
    bf = Bitfield(9)
    for bad in (-1, 9, 100):
        with pytest.raises(IndexError):
            bf[bad]
        with pytest.raises(IndexError):
            bf.set(bad)
        with pytest.raises(IndexError):
            bf.clear(bad)
    with pytest.raises(ValueError):
        Bitfield(-1)


def test_copy_is_independent_and_equality() -> None:
    bf = Bitfield(20)
    bf.set(3)
    other = bf.copy()
    assert other == bf and len(other) == 20 and other.size == 20
    other.set(4)
    assert other != bf and not bf[4] and bf.count() == 1 and other.count() == 2
    assert Bitfield(8) != Bitfield(7)
    assert Bitfield(8) != b"\x00"


def test_mutation_while_iterating_walks_the_snapshot() -> None:
    bf = Bitfield(100)
    for i in range(0, 100, 3):
        bf.set(i)
    seen = []
    for i in bf.iter_set():
        bf.clear(i)
        bf.set_all()
        bf.clear_all()
        seen.append(i)
    assert seen == list(range(0, 100, 3))


def test_large_sparse_field_iterates_only_its_bits() -> None:
    n = 100_000
    bf = Bitfield(n)
    for i in (0, 12_345, 99_999):
        bf.set(i)
    assert list(bf.iter_set()) == [0, 12_345, 99_999]
    bf.set_all()
    for i in (7, 50_000, 99_998):
        bf.clear(i)
    assert list(bf.iter_clear()) == [7, 50_000, 99_998]
    assert bf.count() == n - 3


@st.composite
def fields(draw: st.DrawFn) -> tuple[int, set[int]]:
    size = draw(st.integers(0, 300))
    members = draw(st.sets(st.integers(0, size - 1))) if size else set()
    return size, members


@settings(max_examples=300, deadline=None)
@given(fields())
def test_round_trip_and_model(field: tuple[int, set[int]]) -> None:
    size, members = field
    bf = Bitfield(size)
    for i in members:
        bf.set(i)
    assert bf.count() == len(members)
    assert list(bf.iter_set()) == sorted(members)
    assert list(bf.iter_clear()) == sorted(set(range(size)) - members)
    assert [bf[i] for i in range(size)] == [i in members for i in range(size)]
    assert bf.all() == (len(members) == size)
    assert bf.any() == bool(members)
    wire = bf.to_bytes()
    assert len(wire) == (size + 7) // 8
    again = Bitfield.from_bytes(size, wire)
    assert again == bf and again.count() == bf.count()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 64), st.binary(max_size=10))
def test_from_bytes_raises_only_protocol_error(size: int, data: bytes) -> None:
    try:
        bf = Bitfield.from_bytes(size, data)
    except ProtocolError:
        assert len(data) != (size + 7) // 8 or int.from_bytes(data, "big") & (
            (1 << (len(data) * 8 - size)) - 1
        )
    else:
        assert bf.to_bytes() == data
        assert bf.count() == int.from_bytes(data, "big").bit_count()


@settings(max_examples=300)
@given(st.data())
def test_all_in_is_every_bit_of_the_range(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 70))
    bf = Bitfield(size)
    for i in data.draw(st.sets(st.integers(0, size - 1))):
        bf.set(i)
    if data.draw(st.booleans()):  # mostly full fields: the interesting case for a window
        for i in range(size):
            if data.draw(st.integers(0, 9)):
                bf.set(i)
    start = data.draw(st.integers(0, size))
    stop = data.draw(st.integers(start, size))
    assert bf.all_in(start, stop) == all(bf[i] for i in range(start, stop))


def test_all_in_checks_its_bounds() -> None:
    bf = Bitfield(10)
    bf.set_all()
    assert bf.all_in(0, 10) and bf.all_in(3, 3) and bf.all_in(9, 10)
    with pytest.raises(IndexError):
        bf.all_in(5, 11)
    with pytest.raises(IndexError):
        bf.all_in(-1, 3)
