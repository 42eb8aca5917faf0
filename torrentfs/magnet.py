"""Magnet links: parse and build (BEP 9, BEP 53, BEP 52 ``urn:btmh``; L1, pure).

A magnet URI names a torrent by its info-hash and gives hints to find it::

    magnet:?xt=urn:btih:<info-hash>&dn=<name>&tr=<tracker>&x.pe=<peer>&ws=<web seed>&so=<files>

What `parse_magnet` accepts (everything else raises `MagnetError` saying what is wrong, and
nothing but `MagnetError` ever escapes, whatever the input):

* ``xt`` (also numbered ``xt.1``, ``xt.2``…), one or more: ``urn:btih:`` with a v1 info-hash as
  40 hex digits or 32 base32 characters (BEP 9), ``urn:btmh:`` with a hex multihash that must be
  sha2-256 (``1220`` + 64 hex digits) giving the v2 info-hash (BEP 52 hybrids carry both).
  Other URNs (``urn:sha1:``, ``urn:ed2k:``…) are ignored; at least one BitTorrent one is required,
  and two different hashes of the same kind are refused rather than guessed between.
* ``dn`` display name (the first non-empty one). It is untrusted text, only a hint until the
  metadata arrives: sanitise it before using it as a path.
* ``tr`` (also ``tr.1``, ``tr.2``…) trackers, ``ws`` web seeds (BEP 19), ``xs`` exact sources,
  ``as`` acceptable sources: every non-empty value, deduplicated, in order of appearance.
* ``x.pe`` peers (BEP 9): ``host:port``, ``ipv4:port`` or ``[ipv6]:port`` with port 1–65535;
  IPv6 hosts are kept without brackets in canonical form, zone ids are refused.
* ``so`` select-only (BEP 53): ``0,2,4-6`` expands to ``(0, 2, 4, 5, 6)`` (sorted, unique). A
  hostile ``0-999999999`` must not eat memory, so numbers are capped at 9 digits and the
  ranges may name at most `MAX_SELECT_ONLY` indexes in total; beyond that the URI is refused.
* Keys are case-insensitive; unknown keys are ignored; values are ``application/x-www-form-
  urlencoded`` (``+`` is a space, ``%XX`` escapes must decode to UTF-8).
* The whole URI is capped at `MAX_URI_LENGTH` characters and checked before anything else, so
  rejection is linear in the input.

`Magnet.to_uri()` is the inverse: ``parse_magnet(m.to_uri()) == m`` for every `Magnet` that
`parse_magnet` can return. `magnet_from_metainfo` makes the link for a loaded torrent.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote_to_bytes

from torrentfs.errors import MagnetError

__all__ = [
    "MAX_SELECT_ONLY",
    "MAX_URI_LENGTH",
    "Magnet",
    "MetainfoLike",
    "magnet_from_metainfo",
    "parse_magnet",
]

MAX_URI_LENGTH = 64 * 1024
"""Longest magnet URI accepted, in characters (real ones are well under 4 KiB)."""

MAX_SELECT_ONLY = 1 << 17
"""Most file indexes a ``so`` parameter may name (131072: above any real torrent's file count)."""

_PREFIX = "magnet:?"
_BTIH = "urn:btih:"
_BTMH = "urn:btmh:"
_SHA256_MULTIHASH = b"\x12\x20"  # multihash code sha2-256, digest length 32
_HEX = re.compile(r"[0-9a-fA-F]*")
_DIGITS = re.compile(r"[0-9]{1,9}")
_IPV4ISH = re.compile(r"[0-9.]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
# A key, optionally numbered ("tr.1"): the number is dropped, the values are collected in order.
_KEY = re.compile(r"(xt|tr|ws|xs|as|x\.pe|dn|so)(?:\.[0-9]{1,9})?")


def _show(text: str) -> str:
    """Quote a piece of untrusted input for an error message, shortened."""
    return repr(text if len(text) <= 80 else text[:80] + "…")


@dataclass(frozen=True, slots=True)
class Magnet:
    """A parsed magnet link. At least one of `info_hash` (v1, 20 bytes) and `info_hash_v2`
    (32 bytes) is set; `peers` are ``(host, port)`` with IPv6 hosts unbracketed."""

    info_hash: bytes | None
    info_hash_v2: bytes | None = None
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    peers: tuple[tuple[str, int], ...] = ()
    web_seeds: tuple[str, ...] = ()
    exact_sources: tuple[str, ...] = ()
    acceptable_sources: tuple[str, ...] = ()
    select_only: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.info_hash is None and self.info_hash_v2 is None:
            raise ValueError("a magnet needs info_hash or info_hash_v2")
        if self.info_hash is not None and len(self.info_hash) != 20:
            raise ValueError(f"info_hash must be 20 bytes, got {len(self.info_hash)}")
        if self.info_hash_v2 is not None and len(self.info_hash_v2) != 32:
            raise ValueError(f"info_hash_v2 must be 32 bytes, got {len(self.info_hash_v2)}")

    def to_uri(self) -> str:
        """The magnet URI: ``xt`` first (v1 then v2), then dn, tr, x.pe, ws, xs, as, so."""
        parts: list[str] = []
        if self.info_hash is not None:
            parts.append("xt=" + _BTIH + self.info_hash.hex())
        if self.info_hash_v2 is not None:
            parts.append("xt=" + _BTMH + "1220" + self.info_hash_v2.hex())
        if self.display_name:
            parts.append("dn=" + quote(self.display_name, safe=""))
        parts.extend("tr=" + _quote_url(url) for url in self.trackers)
        for host, port in self.peers:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            parts.append("x.pe=" + quote(address, safe=":[]"))
        parts.extend("ws=" + _quote_url(url) for url in self.web_seeds)
        parts.extend("xs=" + _quote_url(url) for url in self.exact_sources)
        parts.extend("as=" + _quote_url(url) for url in self.acceptable_sources)
        if self.select_only:
            parts.append("so=" + _format_ranges(self.select_only))
        return _PREFIX + "&".join(parts)


class MetainfoLike(Protocol):
    """What `magnet_from_metainfo` reads from a `metainfo.Metainfo` (kept structural so that
    this module does not depend on the metainfo parser)."""

    @property
    def info_hash(self) -> bytes: ...

    @property
    def info_hash_v2(self) -> bytes | None: ...

    @property
    def name(self) -> str: ...

    @property
    def trackers(self) -> Sequence[Sequence[str]]: ...

    @property
    def web_seeds(self) -> Sequence[str]: ...


def magnet_from_metainfo(m: MetainfoLike) -> str:
    """The magnet URI of a loaded torrent: v1 (and, for hybrids, v2) info-hash, name, every
    tracker of every tier (BEP 12) once in tier order, and web seeds (BEP 19)."""
    return Magnet(
        info_hash=m.info_hash,
        info_hash_v2=m.info_hash_v2,
        display_name=m.name or None,
        trackers=_unique(url for tier in m.trackers for url in tier if url),
        web_seeds=_unique(url for url in m.web_seeds if url),
    ).to_uri()


def parse_magnet(uri: str) -> Magnet:
    """Parse a magnet URI (surrounding whitespace ignored); raises `MagnetError` only."""
    if not isinstance(uri, str):
        raise MagnetError("not a magnet URI: not a string")
    uri = uri.strip()
    if len(uri) > MAX_URI_LENGTH:
        raise MagnetError(f"magnet URI too long: {len(uri)} characters, limit {MAX_URI_LENGTH}")
    if uri[: len(_PREFIX)].lower() != _PREFIX:
        raise MagnetError(f"not a magnet URI: {_show(uri)}")
    try:
        uri.encode("utf-8")
    except UnicodeEncodeError:
        raise MagnetError("not a magnet URI: invalid Unicode (lone surrogate)")

    info_hash: bytes | None = None
    info_hash_v2: bytes | None = None
    display_name: str | None = None
    trackers: dict[str, None] = {}
    peers: dict[tuple[str, int], None] = {}
    web_seeds: dict[str, None] = {}
    exact_sources: dict[str, None] = {}
    acceptable_sources: dict[str, None] = {}
    select_only: list[str] = []

    for part in uri[len(_PREFIX) :].split("&"):
        if not part:
            continue
        raw_key, sep, raw_value = part.partition("=")
        if not sep:
            raise MagnetError(f"malformed parameter without '=': {_show(part)}")
        match = _KEY.fullmatch(_decode(raw_key, "parameter name").lower())
        if match is None:
            continue  # kt, mt, xl, tr-less extensions…: not ours
        key = match.group(1)
        value = _decode(raw_value, key)
        if not value:
            continue
        if key == "xt":
            lowered = value[: len(_BTIH)].lower()
            if lowered == _BTIH:
                digest = _parse_btih(value[len(_BTIH) :])
                if info_hash is not None and digest != info_hash:
                    raise MagnetError("several different urn:btih exact topics")
                info_hash = digest
            elif lowered == _BTMH:
                digest = _parse_btmh(value[len(_BTMH) :])
                if info_hash_v2 is not None and digest != info_hash_v2:
                    raise MagnetError("several different urn:btmh exact topics")
                info_hash_v2 = digest
        elif key == "dn":
            if display_name is None:
                display_name = value
        elif key == "tr":
            trackers[value] = None
        elif key == "x.pe":
            peers[_parse_peer(value)] = None
        elif key == "ws":
            web_seeds[value] = None
        elif key == "xs":
            exact_sources[value] = None
        elif key == "as":
            acceptable_sources[value] = None
        else:  # so
            select_only.append(value)

    if info_hash is None and info_hash_v2 is None:
        raise MagnetError("no urn:btih or urn:btmh exact topic (xt)")
    return Magnet(
        info_hash=info_hash,
        info_hash_v2=info_hash_v2,
        display_name=display_name,
        trackers=tuple(trackers),
        peers=tuple(peers),
        web_seeds=tuple(web_seeds),
        exact_sources=tuple(exact_sources),
        acceptable_sources=tuple(acceptable_sources),
        select_only=_parse_select_only(",".join(select_only)) if select_only else None,
    )


# -- helpers ------------------------------------------------------------------------------------


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _quote_url(url: str) -> str:
    # ':' and '/' stay readable; '&', '=', '+', '%', '?', '#' and the rest are escaped.
    return quote(url, safe=":/")


def _decode(text: str, what: str) -> str:
    """Form-decode a key or value: '+' is a space, %XX escapes must form UTF-8."""
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise MagnetError(f"{what} is not UTF-8 after percent-decoding: {_show(text)}")


def _parse_btih(text: str) -> bytes:
    """A v1 info-hash: 40 hex digits or 32 base32 characters (BEP 9), any case."""
    if len(text) == 40:
        if not _HEX.fullmatch(text):
            raise MagnetError(f"info-hash is not hexadecimal: {_show(text)}")
        return bytes.fromhex(text)
    if len(text) == 32:
        try:
            return base64.b32decode(text.upper())
        except (binascii.Error, ValueError):
            raise MagnetError(f"info-hash is not base32: {_show(text)}")
    raise MagnetError(f"bad info-hash length {len(text)} (want 40 hex or 32 base32 characters)")


def _parse_btmh(text: str) -> bytes:
    """A v2 info-hash: a hex multihash that must be sha2-256 (``1220`` + 64 hex digits)."""
    if len(text) % 2 or not _HEX.fullmatch(text):
        raise MagnetError(f"urn:btmh multihash is not hexadecimal: {_show(text)}")
    multihash = bytes.fromhex(text)
    if multihash[:2] != _SHA256_MULTIHASH:
        raise MagnetError(f"urn:btmh multihash is not sha2-256 (1220…): {_show(text)}")
    if len(multihash) != 34:
        raise MagnetError(f"bad v2 info-hash length {len(multihash) - 2} (want 32 bytes)")
    return multihash[2:]


def _parse_peer(text: str) -> tuple[str, int]:
    """``host:port``, ``ipv4:port`` or ``[ipv6]:port`` (BEP 9 ``x.pe``)."""
    bad = MagnetError(f"bad peer address {_show(text)}")
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise bad
        host, port_text = text[1:close], text[close + 2 :]
        if "%" in host:
            raise bad  # a zone id names one of *our* interfaces: never from a link
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise bad
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise bad
        if _IPV4ISH.fullmatch(host):
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise bad
        elif not _HOSTNAME.fullmatch(host):
            raise bad
    if not _DIGITS.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise bad
    return host, int(port_text)


def _parse_select_only(text: str) -> tuple[int, ...]:
    """BEP 53 ``so``: comma-separated indexes and inclusive ``a-b`` ranges, expanded."""
    ranges: list[tuple[int, int]] = []
    total = 0
    for item in text.split(","):
        first, dash, last = item.partition("-")
        if not _DIGITS.fullmatch(first) or (dash and not _DIGITS.fullmatch(last)):
            raise MagnetError(f"bad select-only item {_show(item)}")
        a = int(first)
        b = int(last) if dash else a
        if b < a:
            raise MagnetError(f"bad select-only range {_show(item)}")
        total += b - a + 1
        if total > MAX_SELECT_ONLY:
            raise MagnetError(f"select-only names more than {MAX_SELECT_ONLY} files")
        ranges.append((a, b))
    selected: set[int] = set()
    for a, b in ranges:
        selected.update(range(a, b + 1))
    return tuple(sorted(selected))


def _format_ranges(indexes: Iterable[int]) -> str:
    """Sorted unique indexes as ``so`` text, runs collapsed: (0, 2, 4, 5, 6) -> "0,2,4-6"."""
    out: list[str] = []
    run_start = run_end = -2
    for i in sorted(set(indexes)):
        if i == run_end + 1:
            run_end = i
            continue
        if run_start >= 0:
            out.append(str(run_start) if run_start == run_end else f"{run_start}-{run_end}")
        run_start = run_end = i
    if run_start >= 0:
        out.append(str(run_start) if run_start == run_end else f"{run_start}-{run_end}")
    return ",".join(out)
