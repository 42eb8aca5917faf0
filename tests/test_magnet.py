"""Magnet links: parsing (BEP 9/52/53), errors that say what is wrong, round trips, fuzzing."""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.errors import MagnetError
from torrentfs.magnet import (
    MAX_SELECT_ONLY,
    MAX_URI_LENGTH,
    Magnet,
    magnet_from_metainfo,
    parse_magnet,
)

V1 = bytes(range(20))
V1_HEX = V1.hex()
V2 = bytes(range(100, 132))


def test_minimal_hex_magnet() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}")
    assert m == Magnet(info_hash=V1)
    assert m.info_hash_v2 is None and m.display_name is None and m.select_only is None


def test_base32_and_case_insensitivity() -> None:
    b32 = base64.b32encode(V1).decode()
    assert len(b32) == 32
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32}").info_hash == V1
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32.lower()}").info_hash == V1
    assert parse_magnet(f"MAGNET:?XT=URN:BTIH:{V1_HEX.upper()}").info_hash == V1
    assert parse_magnet(f"  magnet:?xt=urn:btih:{V1_HEX}\n").info_hash == V1


def test_full_magnet() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{V1_HEX}"
        f"&xt=urn:btmh:1220{V2.hex()}"
        "&xt=urn:sha1:ignoredignored"
        "&dn=Big+Buck%20Bunny%20%E2%9C%93"
        "&tr=udp%3A%2F%2Ftracker.example%3A6969%2Fannounce"
        "&tr.1=http://a.example/announce?passkey%3Dx%26y"
        "&tr.2=udp%3A%2F%2Ftracker.example%3A6969%2Fannounce"  # duplicate: kept once
        "&tr="  # empty: ignored
        "&x.pe=10.0.0.1:6881&x.pe=%5B2001:DB8::1%5D:51413&x.pe=peer.example:1"
        "&ws=https://seed.example/files/&xs=http://x.example/t.torrent&as=http://y.example/a"
        "&so=0,2,4-6&so=5,9"
        "&kt=ignored&&mt=ignored"
    )
    m = parse_magnet(uri)
    assert m.info_hash == V1
    assert m.info_hash_v2 == V2
    assert m.display_name == "Big Buck Bunny ✓"
    assert m.trackers == (
        "udp://tracker.example:6969/announce",
        "http://a.example/announce?passkey=x&y",
    )
    assert m.peers == (("10.0.0.1", 6881), ("2001:db8::1", 51413), ("peer.example", 1))
    assert m.web_seeds == ("https://seed.example/files/",)
    assert m.exact_sources == ("http://x.example/t.torrent",)
    assert m.acceptable_sources == ("http://y.example/a",)
    assert m.select_only == (0, 2, 4, 5, 6, 9)
    assert parse_magnet(m.to_uri()) == m


def test_v2_only_magnet_parses() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btmh:1220{V2.hex().upper()}&dn=x")
    assert m.info_hash is None and m.info_hash_v2 == V2
    assert m.to_uri() == f"magnet:?xt=urn:btmh:1220{V2.hex()}&dn=x"


def test_numbered_xt_and_repeated_same_hash() -> None:
    m = parse_magnet(f"magnet:?xt.1=urn:btih:{V1_HEX}&xt.2=urn:btih:{V1_HEX.upper()}")
    assert m.info_hash == V1


def test_first_display_name_wins() -> None:
    assert parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&dn=&dn=a&dn=b").display_name == "a"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "not a magnet URI"),
        ("http://example.com/?xt=urn:btih:" + "0" * 40, "not a magnet URI"),
        ("magnet:xt=urn:btih:" + "0" * 40, "not a magnet URI"),
        ("magnet:?", "no urn:btih or urn:btmh exact topic"),
        ("magnet:?dn=x&xt=urn:sha1:abc", "no urn:btih or urn:btmh exact topic"),
        ("magnet:?xt=urn:btih:" + "0" * 39, "bad info-hash length 39"),
        ("magnet:?xt=urn:btih:" + "0" * 41, "bad info-hash length 41"),
        ("magnet:?xt=urn:btih:", "bad info-hash length 0"),
        ("magnet:?xt=urn:btih:" + "g" * 40, "not hexadecimal"),
        ("magnet:?xt=urn:btih:" + "0" * 38 + " 0", "not hexadecimal"),
        ("magnet:?xt=urn:btih:" + "1" * 32, "not base32"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&xt=urn:btih:{'0' * 40}", "several different urn:btih"),
        ("magnet:?xt=urn:btmh:1220" + "0" * 62, "bad v2 info-hash length 31"),
        ("magnet:?xt=urn:btmh:1114" + "0" * 40, "not sha2-256"),
        ("magnet:?xt=urn:btmh:122", "not hexadecimal"),
        (
            f"magnet:?xt=urn:btmh:1220{'0' * 64}&xt=urn:btmh:1220{'1' * 64}",
            "several different urn:btmh",
        ),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=x", "bad peer address 'x'"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=1.2.3.4:0", "bad peer address '1.2.3.4:0'"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=1.2.3.4:65536", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=1.2.3.4:-1", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=1.2.3.4:", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=:80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=1.2.3.256:80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=2001:db8::1:80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=[2001:db8::1]80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=[fe80::1%25eth0]:80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=[nonsense]:80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=bad_host!:80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=-bad.example:80", "bad peer address"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&so=1,,2", "bad select-only item ''"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&so=a", "bad select-only item 'a'"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&so=6-4", "bad select-only range '6-4'"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&so=1-", "bad select-only item"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&so=0-999999999", "select-only names more than"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&so=1234567890", "bad select-only item"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&dn=%FF", "dn is not UTF-8"),
        (f"magnet:?xt=urn:btih:{V1_HEX}&justakey", "without '='"),
        ("magnet:?xt=urn:btih:" + V1_HEX + "&dn=\ud800", "invalid Unicode"),
    ],
)
def test_malformed_uris_say_what_is_wrong(uri: str, message: str) -> None:
    with pytest.raises(MagnetError, match=re.escape(message)):
        parse_magnet(uri)


def test_length_cap() -> None:
    base = f"magnet:?xt=urn:btih:{V1_HEX}&dn="
    assert parse_magnet(base + "a" * (MAX_URI_LENGTH - len(base))).display_name
    with pytest.raises(MagnetError, match="too long"):
        parse_magnet(base + "a" * (MAX_URI_LENGTH - len(base) + 1))


def test_select_only_cap_is_exact_and_overlaps_count() -> None:
    ok = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&so=0-{MAX_SELECT_ONLY - 1}")
    assert ok.select_only is not None and len(ok.select_only) == MAX_SELECT_ONLY
    with pytest.raises(MagnetError):
        parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&so=0-{MAX_SELECT_ONLY}")
    # overlapping ranges are counted before merging: no way around the cap by repetition
    with pytest.raises(MagnetError):
        parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&so=" + ",".join(["0-99999"] * 2))


def test_to_uri_format() -> None:
    m = Magnet(
        info_hash=V1,
        info_hash_v2=V2,
        display_name="a&b=c+d e",
        trackers=("udp://t.example:1/announce", "http://t.example/a?k=v&x=y"),
        peers=(("::1", 5), ("1.2.3.4", 6)),
        select_only=(0, 1, 2, 5, 7, 8),
    )
    uri = m.to_uri()
    assert uri == (
        f"magnet:?xt=urn:btih:{V1_HEX}&xt=urn:btmh:1220{V2.hex()}"
        "&dn=a%26b%3Dc%2Bd%20e"
        "&tr=udp://t.example:1/announce&tr=http://t.example/a%3Fk%3Dv%26x%3Dy"
        "&x.pe=[::1]:5&x.pe=1.2.3.4:6&so=0-2,5,7-8"
    )
    assert parse_magnet(uri) == m


def test_magnet_needs_a_well_sized_hash() -> None:
    with pytest.raises(ValueError):
        Magnet(info_hash=None)
    with pytest.raises(ValueError):
        Magnet(info_hash=b"short")
    with pytest.raises(ValueError):
        Magnet(info_hash=None, info_hash_v2=V1)


@dataclass(frozen=True)
class FakeMetainfo:
    """Just the attributes magnet_from_metainfo reads (metainfo.Metainfo has them too)."""

    info_hash: bytes
    info_hash_v2: bytes | None
    name: str
    trackers: tuple[tuple[str, ...], ...]
    web_seeds: tuple[str, ...]


def test_magnet_from_metainfo() -> None:
    meta = FakeMetainfo(
        info_hash=V1,
        info_hash_v2=None,
        name="My Film (2024)",
        trackers=(("udp://a:1/announce", "udp://b:2/announce"), ("udp://a:1/announce",)),
        web_seeds=("https://ws.example/",),
    )
    uri = magnet_from_metainfo(meta)
    assert uri == (
        f"magnet:?xt=urn:btih:{V1_HEX}&dn=My%20Film%20%282024%29"
        "&tr=udp://a:1/announce&tr=udp://b:2/announce&ws=https://ws.example/"
    )
    m = parse_magnet(uri)
    assert m.trackers == ("udp://a:1/announce", "udp://b:2/announce")
    hybrid = parse_magnet(
        magnet_from_metainfo(
            FakeMetainfo(info_hash=V1, info_hash_v2=V2, name="", trackers=(), web_seeds=())
        )
    )
    assert hybrid == Magnet(info_hash=V1, info_hash_v2=V2)


# -- properties ------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
label = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = (
    st.lists(label, min_size=1, max_size=3)
    .map(".".join)
    .filter(lambda h: not all(c.isdigit() or c == "." for c in h))
)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a))),
    hostnames,
)
peers = st.tuples(hosts, st.integers(1, 65535))
unique_texts = st.lists(text, unique=True, max_size=4).map(tuple)

magnets = st.builds(
    Magnet,
    info_hash=st.one_of(st.none(), st.binary(min_size=20, max_size=20)),
    info_hash_v2=st.binary(min_size=32, max_size=32),
    display_name=st.one_of(st.none(), text),
    trackers=unique_texts,
    peers=st.lists(peers, unique=True, max_size=4).map(tuple),
    web_seeds=unique_texts,
    exact_sources=unique_texts,
    acceptable_sources=unique_texts,
    select_only=st.one_of(
        st.none(), st.sets(st.integers(0, 2000), min_size=1).map(lambda s: tuple(sorted(s)))
    ),
) | st.builds(Magnet, info_hash=st.binary(min_size=20, max_size=20))


@settings(max_examples=200, deadline=None)
@given(magnets)
def test_round_trip(m: Magnet) -> None:
    assert parse_magnet(m.to_uri()) == m


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_arbitrary_text_only_raises_magnet_error(uri: str) -> None:
    try:
        parse_magnet(uri)
    except MagnetError:
        pass


magnetish = st.lists(
    st.one_of(
        st.sampled_from(
            [
                f"xt=urn:btih:{V1_HEX}",
                "xt=urn:btih:",
                "xt=urn:btmh:1220",
                "x.pe=",
                "x.pe=[",
                "so=",
                "tr.1=",
                "dn=",
                "=",
                "%",
                "%e2%9c",
                "+",
                "[::1]:",
                "-",
                ",",
                ":",
            ]
        ),
        st.text(max_size=8),
    ),
    max_size=12,
).map(lambda parts: "magnet:?" + "&".join(parts))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(magnetish, st.text(max_size=6)), min_size=1, max_size=3).map("".join))
def test_magnet_shaped_garbage_only_raises_magnet_error(uri: str) -> None:
    try:
        m = parse_magnet(uri)
    except MagnetError:
        return
    assert parse_magnet(m.to_uri()) == m
