"""Bencoding with limits, and the exact byte span of a torrent's ``info`` dictionary (BEP 3).

Guarantees:

* Only `BencodeError` leaves this module, whatever the input.
* Input is checked by a linear, iterative, pure-Python scanner *before* anything is built: nesting
  depth, total size and token count are capped, string payloads are skipped by their length
  prefix (a huge prefix is rejected at once, never allocated), and the grammar is strict --
  integers without leading zeros, no ``-0``, within signed 64 bits (as libtorrent); byte-string
  dict keys only; no duplicate keys; nothing after the top-level value; no truncation.
* Dictionaries whose keys are not sorted are *accepted* (real torrents contain them, and
  libtorrent accepts them); the v1 info-hash is defined over the original bytes, which is why
  `decode_torrent` reports the byte span of ``info`` rather than letting anyone re-encode it.
* Canonical input (the common case) is then decoded by ``fastbencode``'s compiled decoder. It is
  never handed data that failed the scan, so its own recursion and error behaviour do not matter;
  non-canonical input (unsorted keys, which ``fastbencode`` refuses) is built by the same scanner.

Decoded values: byte strings are `bytes`, integers `int`, lists `list`, dicts `dict[bytes, ...]`.
"""

from __future__ import annotations

import fastbencode

from .errors import BencodeError

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: `torrentfs make` should not import typing
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_TOKENS",
    "decode",
    "decode_torrent",
    "encode",
]

DEFAULT_MAX_DEPTH = 64
"""Nested lists/dicts allowed. A v1 torrent needs 4; deep v2 file trees stay far below this."""

DEFAULT_MAX_SIZE = 64 * 1024 * 1024
"""Largest input accepted (bytes). libtorrent's default is 10 MB; 64 MiB fits the piece hashes
of a 1 TiB torrent with 512 KiB pieces (40 MiB) with room to spare."""

DEFAULT_MAX_TOKENS = 3_000_000
"""Largest number of values (strings, integers, lists, dicts), as libtorrent's
``max_decode_tokens``: bounds the work of the pure-Python scan."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

if TYPE_CHECKING:
    from collections.abc import Callable
    from re import Match

    _Matcher = Callable[[bytes, int], Match[bytes] | None]

_token_matchers: tuple[_Matcher, _Matcher] | None = None


def _matchers() -> tuple[_Matcher, _Matcher]:
    """The integer and string-length token matchers, anchored with ``.match(data, pos)``;
    bounded digit counts keep int() cheap. Compiled on first use, not at import: `re` costs
    `torrentfs make`, which only encodes, about 10 ms of start-up."""
    global _token_matchers
    if _token_matchers is None:
        import re

        _token_matchers = (
            re.compile(rb"i(0|-?[1-9][0-9]{0,18})e").match,
            re.compile(rb"(0|[1-9][0-9]{0,18}):").match,
        )
    return _token_matchers


_I, _L, _D, _E = ord("i"), ord("l"), ord("d"), ord("e")
_DIGITS = frozenset(b"0123456789")

# Container states on the scanner's stack.
_LIST = 0
_DICT_KEY = 1  # inside a dict, expecting a key or 'e'
_DICT_VALUE = 2  # inside a dict, expecting the value of the last key


def encode(obj: object) -> bytes:
    """Bencode `obj` (bytes, int, list/tuple, dict with bytes keys) canonically, keys sorted."""
    try:
        result = fastbencode.bencode(obj)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise BencodeError(f"cannot bencode {type(obj).__name__}: {e}") from None
    if not isinstance(result, bytes):  # pragma: no cover - fastbencode contract
        raise BencodeError("bencoder returned a non-bytes result")
    return result


def decode(
    data: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_size: int = DEFAULT_MAX_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> object:
    """Decode one complete bencoded value; raise `BencodeError` on anything malformed."""
    buf = _as_bytes(data, max_size)
    canonical, _span = _scan(buf, max_depth, max_tokens, None)
    return _materialise(buf, canonical, max_depth)


def decode_torrent(
    data: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_size: int = DEFAULT_MAX_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> tuple[dict[bytes, object], tuple[int, int] | None]:
    """Decode a .torrent file: its top-level dict and the ``(start, end)`` span of ``info``.

    ``sha1(data[start:end])`` is the v1 info-hash (BEP 3) even when the file is not canonically
    encoded. The span is None when the top-level dict has no ``info`` key. Unlike `decode`,
    trailing ASCII whitespace after the dict is ignored (any other trailing byte is an error).
    """
    buf = _as_bytes(data, max_size)
    # Text editors and HTTP servers append newlines; a dict always ends in 'e', so trailing
    # whitespace can be dropped without touching the value (libtorrent ignores any trailer).
    buf = buf.rstrip(b" \t\r\n")
    if not buf.startswith(b"d"):
        # Scan first anyway so garbage is reported as garbage, not as "not a dictionary".
        _scan(buf, max_depth, max_tokens, None)
        raise BencodeError("torrent file is not a dictionary")
    canonical, span = _scan(buf, max_depth, max_tokens, b"info")
    top = _materialise(buf, canonical, max_depth)
    if not isinstance(top, dict):  # pragma: no cover - guaranteed by the leading 'd'
        raise BencodeError("torrent file is not a dictionary")
    return top, span


def _as_bytes(data: bytes, max_size: int) -> bytes:
    if isinstance(data, bytes):
        buf = data
    elif isinstance(data, bytearray | memoryview):
        buf = bytes(data)
    else:
        raise BencodeError(f"expected bytes, got {type(data).__name__}")
    if len(buf) > max_size:
        raise BencodeError(f"bencoded data too large: {len(buf)} bytes (limit {max_size})")
    if not buf:
        raise BencodeError("empty input")
    return buf


def _materialise(buf: bytes, canonical: bool, max_depth: int) -> object:
    if not canonical:
        return _build(buf, max_depth)
    try:
        return fastbencode.bdecode(buf)
    except Exception as e:  # the scan passed, so this would be a disagreement: report, not crash
        raise BencodeError(f"invalid bencoding: {e}") from None


def _int_error(data: bytes, pos: int) -> BencodeError:
    """Explain why the integer starting at `pos` did not match `_INT_RE` (slow path only)."""
    import re

    end = data.find(b"e", pos + 1, pos + 64)
    body = data[pos + 1 : end] if end >= 0 else data[pos + 1 : pos + 22]
    if end < 0:
        if len(data) - pos < 64 and re.fullmatch(rb"-?[0-9]*", data[pos + 1 :]):
            return BencodeError(f"truncated integer at offset {pos}")
        return BencodeError(f"invalid or overlong integer at offset {pos}")
    if body in (b"-0", b"-"):
        return BencodeError(f"invalid integer {body!r} at offset {pos}")
    if re.fullmatch(rb"-?0[0-9]+", body):
        return BencodeError(f"integer with leading zero at offset {pos}")
    if re.fullmatch(rb"-?[0-9]+", body):
        return BencodeError(f"integer out of 64-bit range at offset {pos}")
    return BencodeError(f"invalid integer at offset {pos}")


def _str_error(data: bytes, pos: int) -> BencodeError:
    import re

    m = re.compile(rb"[0-9]*").match(data, pos)
    digits = m.group() if m else b""
    after = pos + len(digits)
    if after >= len(data):
        return BencodeError(f"truncated string length at offset {pos}")
    if data[after] != ord(":"):
        return BencodeError(f"invalid byte {data[after : after + 1]!r} at offset {after}")
    if len(digits) > 1 and digits.startswith(b"0"):
        return BencodeError(f"string length with leading zero at offset {pos}")
    return BencodeError(f"string length too large at offset {pos}")


def _scan(
    data: bytes, max_depth: int, max_tokens: int, span_key: bytes | None
) -> tuple[bool, tuple[int, int] | None]:
    """Validate `data` as exactly one bencoded value, without building anything.

    Returns whether every dict had strictly sorted keys (then ``fastbencode`` can decode it) and,
    if `span_key` is given, the byte span of that key's value in the top-level dict.
    """
    n = len(data)
    pos = 0
    tokens = 0
    stack: list[int] = []
    last_keys: list[bytes | None] = []
    canonical = True
    span_start = -1
    span: tuple[int, int] | None = None
    int_match, str_match = _matchers()

    while True:
        if pos >= n:
            raise BencodeError("truncated input")
        c = data[pos]
        state = stack[-1] if stack else -1
        if state == _DICT_KEY:
            if c == _E:
                pos += 1
                stack.pop()
                last_keys.pop()
            else:
                if c not in _DIGITS:
                    raise BencodeError(f"dict key is not a byte string at offset {pos}")
                m = str_match(data, pos)
                if m is None:
                    raise _str_error(data, pos)
                start = m.end()
                end = start + int(m.group(1))
                if end > n:
                    raise BencodeError(f"truncated string at offset {pos}")
                key = data[start:end]
                last = last_keys[-1]
                if last is not None and key <= last:
                    if key == last:
                        raise BencodeError(f"duplicate dict key {key[:64]!r} at offset {pos}")
                    canonical = False
                last_keys[-1] = key
                stack[-1] = _DICT_VALUE
                pos = end
                tokens += 1
                if span_key is not None and len(stack) == 1 and key == span_key:
                    span_start = pos
                continue  # a key never completes a value
        else:
            if c != _E:
                tokens += 1  # dict keys count too, as in libtorrent's token limit
                if tokens > max_tokens:
                    raise BencodeError(f"too many bencoded values (limit {max_tokens})")
            if c == _I:
                m = int_match(data, pos)
                if m is None:
                    raise _int_error(data, pos)
                v = int(m.group(1))
                if not _INT64_MIN <= v <= _INT64_MAX:
                    raise BencodeError(f"integer out of 64-bit range at offset {pos}")
                pos = m.end()
            elif c in _DIGITS:
                m = str_match(data, pos)
                if m is None:
                    raise _str_error(data, pos)
                end = m.end() + int(m.group(1))
                if end > n:
                    raise BencodeError(f"truncated string at offset {pos}")
                pos = end
            elif c in (_L, _D):
                if len(stack) >= max_depth:
                    raise BencodeError(f"bencoded nesting deeper than {max_depth} at offset {pos}")
                if state == _DICT_VALUE:
                    stack[-1] = _DICT_KEY
                if c == _L:
                    stack.append(_LIST)
                else:
                    stack.append(_DICT_KEY)
                    last_keys.append(None)
                pos += 1
                continue  # the container's value completes at its 'e'
            elif c == _E and state == _LIST:
                stack.pop()
                pos += 1
            elif c == _E and state == _DICT_VALUE:
                raise BencodeError(f"dict key without a value at offset {pos}")
            else:
                raise BencodeError(f"invalid byte {data[pos : pos + 1]!r} at offset {pos}")
            if state == _DICT_VALUE:
                stack[-1] = _DICT_KEY
        # A value just completed (scalar, or a container closed).
        if not stack:
            if pos != n:
                raise BencodeError(f"trailing data after the bencoded value at offset {pos}")
            return canonical, span
        if span_start >= 0 and span is None and len(stack) == 1:
            span = (span_start, pos)


def _build(data: bytes, max_depth: int) -> object:
    """Build the value of already-scanned, non-canonical `data` (iteratively, no recursion)."""
    n = len(data)
    pos = 0
    # Each frame: (container, pending key or None). Lists have key None.
    frames: list[tuple[Any, list[bytes | None]]] = []
    result: object = None
    int_match, str_match = _matchers()

    while True:
        if pos >= n:  # pragma: no cover - the scan proved the input complete
            raise BencodeError("truncated input")
        c = data[pos]
        value: object
        if c == _E:
            container, _ = frames.pop()
            pos += 1
            value = container
        elif c == _I:
            m = int_match(data, pos)
            if m is None:  # pragma: no cover - scanned
                raise _int_error(data, pos)
            value = int(m.group(1))
            pos = m.end()
        elif c in (_L, _D):
            if len(frames) >= max_depth:  # pragma: no cover - scanned
                raise BencodeError(f"bencoded nesting deeper than {max_depth}")
            frames.append(([] if c == _L else {}, [None]))
            pos += 1
            continue
        else:
            m = str_match(data, pos)
            if m is None:  # pragma: no cover - scanned
                raise _str_error(data, pos)
            start = m.end()
            pos = start + int(m.group(1))
            value = data[start:pos]
            if frames:
                container, pending = frames[-1]
                if isinstance(container, dict) and pending[0] is None:
                    if value in container:  # the scan only sees adjacent duplicates
                        raise BencodeError(f"duplicate dict key {value[:64]!r}")
                    pending[0] = value
                    continue
        if not frames:
            result = value
            return result
        container, pending = frames[-1]
        if isinstance(container, dict):
            key = pending[0]
            assert key is not None
            container[key] = value
            pending[0] = None
        else:
            container.append(value)
