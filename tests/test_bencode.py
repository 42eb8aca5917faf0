"""Unit tests for torrentfs.bencode: strict grammar, limits, and the exact info span (BEP 3)."""

from __future__ import annotations

import hashlib
import re

import fastbencode
import pytest

from torrentfs import bencode
from torrentfs.bencode import decode, decode_torrent, encode
from torrentfs.errors import BencodeError


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"i0e", 0),
        (b"i-7e", -7),
        (b"i9223372036854775807e", 2**63 - 1),
        (b"i-9223372036854775808e", -(2**63)),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"le", []),
        (b"de", {}),
        (b"l4:spami42ee", [b"spam", 42]),
        (b"d3:cow3:moo4:spaml1:a1:bee", {b"cow": b"moo", b"spam": [b"a", b"b"]}),
        (b"d1:ad1:bd1:cleeee", {b"a": {b"b": {b"c": []}}}),
    ],
)
def test_decode_valid(data: bytes, value: object) -> None:
    assert decode(data) == value
    assert encode(value) == data


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty input"),
        (b"i01e", "leading zero"),
        (b"i-01e", "leading zero"),
        (b"i-0e", "invalid integer b'-0'"),
        (b"i-e", "invalid integer"),
        (b"ie", "invalid integer"),
        (b"i+1e", "invalid integer"),
        (b"i 1e", "invalid integer"),
        (b"i1", "truncated integer"),
        (b"i9223372036854775808e", "out of 64-bit range"),
        (b"i-9223372036854775809e", "out of 64-bit range"),
        (b"i" + b"9" * 5000 + b"e", "overlong integer"),
        (b"01:a", "string length with leading zero"),
        (b"3:ab", "truncated string"),
        (b"3", "truncated string length"),
        (b"-1:a", "invalid byte"),
        (b"1x", "invalid byte"),
        (b"l", "truncated input"),
        (b"li1e", "truncated input"),
        (b"d1:a", "truncated input"),
        (b"d1:ae", "dict key without a value"),
        (b"di1ei2ee", "dict key is not a byte string"),
        (b"dlei1ee", "dict key is not a byte string"),
        (b"d1:ai1e1:ai2ee", "duplicate dict key"),
        (b"d1:bi1e1:ai2e1:bi3ee", "duplicate dict key"),  # unsorted: not adjacent, still a dup
        (b"e", "invalid byte"),
        (b"x", "invalid byte"),
        (b"i1ei2e", "trailing data"),
        (b"le\n", "trailing data"),
        (b"4:spam ", "trailing data"),
    ],
)
def test_decode_rejects(data: bytes, why: str) -> None:
    with pytest.raises(BencodeError, match=re.escape(why)):
        decode(data)


def test_error_messages_name_the_problem() -> None:
    cases = {
        b"": "empty input",
        b"i01e": "integer with leading zero at offset 0",
        b"i-0e": "invalid integer b'-0' at offset 0",
        b"l3:ab": "truncated string at offset 1",
        b"d1:bi1e1:bi2ee": "duplicate dict key b'b' at offset 7",
        b"l1:ae1:b": "trailing data after the bencoded value at offset 5",
        b"di1ei1ee": "dict key is not a byte string at offset 1",
    }
    for data, message in cases.items():
        with pytest.raises(BencodeError) as info:
            decode(data)
        assert str(info.value) == message, data


def test_unsorted_keys_are_accepted_and_built_in_python() -> None:
    assert decode(b"d1:bi1e1:ai2ee") == {b"a": 2, b"b": 1}
    nested = b"l d1:zi1e1:yd1:qi0e1:pi0eee e".replace(b" ", b"")
    assert decode(nested) == [{b"z": 1, b"y": {b"q": 0, b"p": 0}}]
    # fastbencode alone refuses such input: that is why we build it ourselves.
    with pytest.raises(ValueError):
        fastbencode.bdecode(b"d1:bi1e1:ai2ee")


def test_depth_limit_is_exact() -> None:
    assert decode(b"l" * 64 + b"e" * 64) is not None
    with pytest.raises(BencodeError, match="nesting deeper than 64"):
        decode(b"l" * 65 + b"e" * 65)
    assert decode(b"l" * 5 + b"e" * 5, max_depth=5) == [[[[[]]]]]
    with pytest.raises(BencodeError, match="nesting deeper than 4"):
        decode(b"l" * 5 + b"e" * 5, max_depth=4)


def test_size_and_token_limits() -> None:
    with pytest.raises(BencodeError, match="too large"):
        decode(b"4:spam", max_size=5)
    assert decode(b"4:spam", max_size=6) == b"spam"
    assert decode(b"li1ei2ee", max_tokens=3) == [1, 2]
    with pytest.raises(BencodeError, match="too many"):
        decode(b"li1ei2ei3ee", max_tokens=3)


def test_input_types() -> None:
    assert decode(bytearray(b"i5e")) == 5
    assert decode(memoryview(b"xi5e")[1:]) == 5
    with pytest.raises(BencodeError, match="expected bytes"):
        decode("i5e")  # type: ignore[arg-type]


def test_encode() -> None:
    assert encode({b"b": 1, b"a": [b"x", 2]}) == b"d1:al1:xi2ee1:bi1ee"
    assert encode((1, 2)) == b"li1ei2ee"
    for bad in ("text", {"a": 1}, 1.5, None):
        with pytest.raises(BencodeError):
            encode(bad)


def _torrent(info: bytes, before: bytes = b"", after: bytes = b"") -> bytes:
    return b"d" + before + b"4:info" + info + after + b"e"


def test_info_span_canonical() -> None:
    info = encode({b"name": b"x", b"length": 1})
    data = _torrent(info, before=b"8:announce3:url", after=b"1:zi0e")
    top, span = decode_torrent(data)
    assert span is not None
    assert data[span[0] : span[1]] == info
    assert top[b"info"] == {b"name": b"x", b"length": 1}


def test_info_span_non_canonical_hashes_original_bytes() -> None:
    info = b"d6:lengthi1e4:name1:x3:zzzi0e1:ai0ee"  # keys out of order
    data = _torrent(info, before=b"1:ai1e", after=b"1:bi2e")
    top, span = decode_torrent(data)
    assert span is not None
    assert data[span[0] : span[1]] == info
    reencoded = encode(top[b"info"])
    assert reencoded != info
    assert hashlib.sha1(data[span[0] : span[1]]).digest() != hashlib.sha1(reencoded).digest()


def test_info_span_scalar_and_nested_and_missing() -> None:
    data = _torrent(b"5:hello")
    _, span = decode_torrent(data)
    assert span is not None and data[span[0] : span[1]] == b"5:hello"
    # An 'info' key below the top level is not the info dict.
    _, span = decode_torrent(b"d1:ad4:infoi1eee")
    assert span is None


def test_decode_torrent_whitespace_and_junk() -> None:
    data = _torrent(b"de")
    assert decode_torrent(data + b"\r\n \t")[1] == decode_torrent(data)[1]
    with pytest.raises(BencodeError, match="trailing"):
        decode_torrent(data + b"x")
    with pytest.raises(BencodeError, match="not a dictionary"):
        decode_torrent(b"l4:infoe")
    with pytest.raises(BencodeError, match="truncated"):
        decode_torrent(b"l4:info")
    with pytest.raises(BencodeError, match="empty"):
        decode_torrent(b"")
    with pytest.raises(BencodeError):
        decode_torrent(b"\n\n")


def test_duplicate_top_level_info_is_rejected() -> None:
    with pytest.raises(BencodeError, match="duplicate"):
        decode_torrent(b"d4:infode4:infodee")
    with pytest.raises(BencodeError, match="duplicate"):
        decode_torrent(b"d4:infode1:ai0e4:infodee")


def test_fastbencode_never_sees_rejected_input(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes) -> object:
        raise AssertionError("fastbencode called")

    monkeypatch.setattr(bencode.fastbencode, "bdecode", refuse)
    for bad in (b"l" * 100_000, b"i01e", b"99999999999999999:x", b"d1:ai1e1:ai1ee"):
        with pytest.raises(BencodeError):
            decode(bad)
