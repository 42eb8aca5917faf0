"""Fuzzing the L1 parsers with hypothesis: only TorrentfsError subclasses may escape.

Inputs: random bytes, bytes over the bencode alphabet, generated bencode structures (canonical
and with unsorted keys), mutated valid torrents (bit flips, truncations, deletions, spliced
fragments) and generated info dictionaries with hostile values. Whatever parses must satisfy the
`Metainfo` invariants (consistent pieces, contiguous files, safe unique paths).

The normal run does over 10,000 examples in total; ``HYPOTHESIS_PROFILE=long`` runs ten times as
many. Profiles ``ci``/``long`` are normally registered by tests/conftest.py; they are registered
here too if absent, so this module also runs on its own.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import fastbencode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from torrentfs import bencode
from torrentfs.bencode import decode, decode_torrent, encode
from torrentfs.errors import BencodeError, MetainfoError, TorrentfsError
from torrentfs.metainfo import MAX_COMPONENT_BYTES, Metainfo, parse_info, parse_metainfo

_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
for _name, _examples in (("ci", 100), ("long", 5000)):
    try:
        settings.get_profile(_name)
    except InvalidArgument:
        settings.register_profile(_name, deadline=None, max_examples=_examples)
_SCALE = 10 if _PROFILE == "long" else 1


def fuzz(examples: int) -> settings:
    """Settings for one fuzz test: `examples` in the ci profile, ten times that in long."""
    return settings(
        settings.get_profile(_PROFILE),
        max_examples=examples * _SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- helpers ---------------------------------------------------------------------------------


def encode_reversed(value: object) -> bytes:
    """Bencode with dict keys in *reverse* order: valid but non-canonical (BEP 3 wants sorted)."""
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list):
        return b"l" + b"".join(encode_reversed(v) for v in value) + b"e"
    assert isinstance(value, dict)
    items = sorted(value.items(), reverse=True)
    return b"d" + b"".join(encode_reversed(k) + encode_reversed(v) for k, v in items) + b"e"


def check_metainfo(m: Metainfo) -> None:
    """The guarantees of torrentfs.metainfo, checked on whatever a fuzzer got through."""
    assert len(m.info_hash) == 20
    assert m.info_hash == hashlib.sha1(m.info_bytes).digest()
    assert m.info_hash_v2 is None or m.info_hash_v2 == hashlib.sha256(m.info_bytes).digest()
    assert m.total_size > 0 and m.piece_length > 0
    assert m.num_pieces == -(-m.total_size // m.piece_length)
    assert len(m.pieces) == 20 * m.num_pieces
    offset = 0
    for i, f in enumerate(m.files):
        assert (f.index, f.offset) == (i, offset) and f.length >= 0
        offset += f.length
    assert offset == m.total_size
    assert m.geometry.num_pieces == m.num_pieces
    visible = [f.path for f in m.visible_files()]
    assert len(set(visible)) == len(visible)
    if m.multi_file:
        dirs = {p[:i] for p in visible for i in range(1, len(p))}
        assert not dirs & set(visible)
    for path in [*(f.path for f in m.files), (m.name,)]:
        assert path
        for c in path:
            assert c not in ("", ".", "..")
            assert not any(ch in c for ch in "/\\\x00\n")
            assert len(c.encode()) <= MAX_COMPONENT_BYTES


def parse_all(data: bytes) -> None:
    """Run every parser on `data`; anything but a TorrentfsError propagates and fails."""
    for parse in (decode, decode_torrent):
        try:
            parse(data)
        except BencodeError:
            pass
    for parse_m in (parse_metainfo, parse_info):
        try:
            m = parse_m(data)
        except MetainfoError:
            continue
        check_metainfo(m)


# -- strategies ------------------------------------------------------------------------------

_ints = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.integers(-3, 70000), st.sampled_from([0, 1, 2**31])
)
_bencode_values = st.recursive(
    st.one_of(_ints, st.binary(max_size=24)),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.binary(max_size=8), children, max_size=5),
    ),
    max_leaves=12,
)

_component = st.one_of(
    st.binary(max_size=12),
    st.sampled_from(
        [b"", b".", b"..", b"/", b"\\", b"a", b"a.txt", b"a.1.txt", b"\xff", b"x" * 300 + b".mkv"]
    ),
)
_path = st.lists(_component, max_size=3)
_file_entry = st.fixed_dictionaries(
    {b"path": _path, b"length": st.integers(-2, 70000)},
    optional={
        b"attr": st.sampled_from([b"", b"p", b"l", b"x", b"h", b"pl", b"\xff"]),
        b"path.utf-8": _path,
        b"symlink path": _path,
        b"mtime": st.integers(-1, 2**40),
    },
)
_INFO_KEYS = [
    b"name",
    b"name.utf-8",
    b"piece length",
    b"pieces",
    b"length",
    b"files",
    b"private",
    b"meta version",
    b"file tree",
]


@st.composite
def info_dicts(draw: st.DrawFn) -> dict[bytes, Any]:
    """Mostly well-formed info dicts with hostile details; sometimes pure type confusion."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.dictionaries(st.sampled_from(_INFO_KEYS), _bencode_values))
    piece_length = draw(st.sampled_from([16384, 16384, 32768, 1, 7, 0, -16384, 2**29]))
    info: dict[bytes, Any] = {b"name": draw(_component), b"piece length": piece_length}
    if draw(st.booleans()):
        files: list[dict[bytes, Any]] = draw(st.lists(_file_entry, max_size=6))
        info[b"files"] = files
        total = 0
        for f in files:
            if b"l" not in f.get(b"attr", b""):
                total += f[b"length"]
    else:
        total = draw(st.integers(-1, 200000))
        info[b"length"] = total
    pieces = max(0, -(-total // piece_length)) if piece_length > 0 else 1
    pieces += draw(st.sampled_from([0, 0, 0, 1, -1]))
    info[b"pieces"] = b"\x01" * 20 * max(0, min(pieces, 1000)) + draw(
        st.sampled_from([b"", b"", b"x"])
    )
    if draw(st.integers(0, 4)) == 0:
        info[b"private"] = draw(_ints)
    if draw(st.integers(0, 4)) == 0:
        info[b"meta version"] = draw(st.sampled_from([1, 2, 2, 3, b"2"]))
        info[b"file tree"] = draw(_bencode_values)
    return info


def _seed_torrents() -> list[bytes]:
    """Valid torrents of every shape to mutate: single, multi with pads, hybrid, unsorted."""
    pl = 16384

    def pieces(total: int) -> bytes:
        return b"\xab" * 20 * -(-total // pl)

    single = {b"name": b"a.bin", b"piece length": pl, b"length": 40000, b"pieces": pieces(40000)}
    files = [
        {b"path": [b"d", b"x.txt"], b"length": 100},
        {b"path": [b".pad", b"16284"], b"length": pl - 100, b"attr": b"p"},
        {b"path": [b"d", b"y"], b"length": 5000, b"path.utf-8": [b"d", b"y"]},
        {b"path": [b"e"], b"length": 0},
    ]
    multi = {b"name": b"m", b"piece length": pl, b"files": files, b"pieces": pieces(pl + 5000)}
    hybrid = dict(multi)
    leaf = {b"pieces root": b"r" * 32}
    hybrid[b"meta version"] = 2
    hybrid[b"file tree"] = {
        b"d": {b"x.txt": {b"": {**leaf, b"length": 100}}, b"y": {b"": {**leaf, b"length": 5000}}},
        b"e": {b"": {b"length": 0}},
    }
    outer = {
        b"announce": b"http://t/a",
        b"announce-list": [[b"http://t/a", b"udp://u:1"], [b"http://t/b"]],
        b"url-list": [b"http://ws/"],
        b"nodes": [[b"127.0.0.1", 6881]],
        b"creation date": 1,
        b"comment": b"c",
    }
    seeds = [encode({**outer, b"info": info}) for info in (single, multi, hybrid)]
    seeds.append(encode_reversed({**outer, b"info": multi}))
    for seed in seeds:
        check_metainfo(parse_metainfo(seed))
    return seeds


SEEDS = _seed_torrents()


@st.composite
def mutated_torrents(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "byte", "truncate", "delete", "splice", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if not data:
            break
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.sampled_from(b"ilde:0123456789-x\x00\xff"))
        elif op == "truncate":
            del data[pos:]
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "splice":
            donor = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, len(donor) - 1))
            data[pos:pos] = donor[start : start + draw(st.integers(1, 64))]
        else:
            end = pos + draw(st.integers(1, 32))
            data[pos:pos] = data[pos:end]
    return bytes(data)


# -- the fuzz tests (10,000+ examples in the ci profile) ---------------------------------------


@fuzz(3500)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    parse_all(data)
    parse_all(b"d4:info" + data + b"e")


@fuzz(3000)
@given(st.text(alphabet="ilde0123456789:-", max_size=60))
def test_bencode_alphabet(text: str) -> None:
    data = text.encode()
    parse_all(data)
    try:
        value = decode(data)
    except BencodeError:
        return
    assert decode(encode(value)) == value


@fuzz(700)
@given(_bencode_values)
def test_generated_structures_round_trip(value: object) -> None:
    canonical = encode(value)
    assert canonical == fastbencode.bencode(value)
    assert decode(canonical) == value
    assert decode(encode_reversed(value)) == value  # the pure-Python builder agrees
    data = b"d1:ai0e4:info" + encode_reversed(value) + b"1:zi0ee"
    top, span = decode_torrent(data)
    assert span is not None and decode(data[span[0] : span[1]]) == value == top[b"info"]


@fuzz(2500)
@given(mutated_torrents())
def test_mutated_torrents(data: bytes) -> None:
    try:
        m = parse_metainfo(data)
    except MetainfoError:
        return
    check_metainfo(m)


@fuzz(800)
@given(info_dicts(), st.booleans())
def test_generated_info_dicts(info: dict[bytes, Any], unsorted: bool) -> None:
    raw = encode_reversed(info) if unsorted else encode(info)
    for data, parse in ((raw, parse_info), (b"d4:info" + raw + b"e", parse_metainfo)):
        try:
            m = parse(data)
        except MetainfoError:
            continue
        check_metainfo(m)
        assert m.info_bytes == raw


# -- hostile sizes are refused early, without reaching fastbencode -----------------------------


@pytest.fixture
def no_fastbencode(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes) -> object:
        raise AssertionError("fastbencode must not see input the scan rejects")

    monkeypatch.setattr(bencode.fastbencode, "bdecode", refuse)


@pytest.mark.parametrize("opener", [b"l", b"d1:a"])
def test_deep_nesting_is_rejected_at_the_limit(opener: bytes, no_fastbencode: None) -> None:
    data = opener * 100_000 + b"e" * 100_000
    with pytest.raises(BencodeError) as info:
        decode(data)
    # The offset proves the scan stopped at the 65th container instead of walking the input.
    assert str(info.value) == f"bencoded nesting deeper than 64 at offset {64 * len(opener)}"
    with pytest.raises(MetainfoError, match="nesting deeper than 64"):
        parse_metainfo(b"d4:info" + data + b"e")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"999999999999999999:x", "truncated string at offset 0"),
        (b"l9223372036854775807:x", "truncated string at offset 1"),
        (b"99999999999999999999999:x", "string length too large at offset 0"),
        (b"i" + b"1" * 100_000 + b"e", "invalid or overlong integer at offset 0"),
        (b"d4:info" + b"9" * 100_000 + b":", "string length too large at offset 7"),
    ],
)
def test_huge_lengths_are_rejected_without_allocating(
    data: bytes, message: str, no_fastbencode: None
) -> None:
    with pytest.raises(BencodeError) as info:
        decode(data)
    assert str(info.value) == message
    with pytest.raises(TorrentfsError):
        parse_metainfo(data)
