"""No untrusted input is slower than linear to reject (DESIGN.md §3.7, issue 7).

Work is *counted*, not timed: `work()` counts the Python line events (``sys.settrace``) a parser
executes on one input. For each hostile shape the input grows 4x; linear parsing costs at most
about 4x as much (``RATIO`` leaves room for constant overheads), quadratic parsing 16x. Shapes
that must be rejected at a fixed offset (a depth or length cap) must cost about the same at
every size. Timing never decides these tests (DESIGN.md §4).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from torrentfs import bencode
from torrentfs.dht import krpc
from torrentfs.errors import TorrentfsError
from torrentfs.magnet import parse_magnet
from torrentfs.metainfo import parse_metainfo
from torrentfs.tracker import http_codec, udp_codec
from torrentfs.wire import extension, ut_metadata, ut_pex
from torrentfs.wire.handshake import Handshake
from torrentfs.wire.protocol import PeerProtocol

RATIO = 6.0
"""Most work(4n) / work(n) accepted as linear (quadratic would be 16)."""
FLAT = 2.0
"""Most work(4n) / work(n) for inputs rejected at a fixed offset."""


def work(fn: Callable[[bytes], Any], data: bytes) -> int:
    """Python line events executed by `fn(data)`; only TorrentfsError may escape it."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn(data)
    except TorrentfsError:
        pass
    finally:
        sys.settrace(None)
    return count


def ratio(fn: Callable[[bytes], Any], make: Callable[[int], bytes], n: int) -> float:
    small, big = work(fn, make(n)), work(fn, make(4 * n))
    return big / max(small, 1)


def feed_protocol(data: bytes) -> None:
    """A peer stream after the handshake, fed to our parser one byte at a time (worst chunking)."""
    proto = PeerProtocol(
        50, 32768, remote_handshake=Handshake(bytes(20), bytes(20)), max_message_length=1 << 22
    )
    for i in range(len(data)):
        proto.receive(data[i : i + 1])
        proto.next_events()


def torrent_with_files(n: int) -> bytes:
    files = [{b"length": 1, b"path": [b"d%d" % (i % 7), b"f%d" % i]} for i in range(n)]
    info = {b"name": b"x", b"piece length": 16384, b"pieces": bytes(20), b"files": files}
    return bencode.encode({b"info": info})


def torrent_with_clashing_files(n: int) -> bytes:
    files = [{b"length": 1, b"path": [b"same"]} for _ in range(n)]
    info = {b"name": b"x", b"piece length": 16384, b"pieces": bytes(20), b"files": files}
    return bencode.encode({b"info": info})


def parse_krpc(data: bytes) -> None:
    krpc.decode_message(data)


# (name, parser, input of size n, n)
LINEAR: list[tuple[str, Callable[[bytes], Any], Callable[[int], bytes], int]] = [
    ("bencode: many small items", bencode.decode, lambda n: b"l" + b"i1e" * n + b"e", 500),
    ("bencode: truncated list", bencode.decode, lambda n: b"l" + b"1:a" * n, 500),
    ("bencode: dict with many keys", bencode.decode,
     lambda n: b"d" + b"".join(b"6:k%05di0e" % i for i in range(n)) + b"e", 300),
    ("bencode: unsorted dict", bencode.decode,
     lambda n: b"d" + b"".join(b"6:k%05di0e" % i for i in reversed(range(n))) + b"e", 300),
    ("metainfo: many files", parse_metainfo, torrent_with_files, 100),
    ("metainfo: clashing file names", parse_metainfo, torrent_with_clashing_files, 100),
    ("wire: frames byte by byte", feed_protocol,
     lambda n: struct.pack(">IBI", 5, 4, 1) * n, 200),
    ("wire: one long frame byte by byte", feed_protocol,
     lambda n: struct.pack(">IB", 1 + 4 * n, 99) + bytes(4 * n), 500),
    ("tracker: compact peers", http_codec.parse_announce_response,
     lambda n: bencode.encode({b"interval": 60, b"peers": bytes(range(1, 7)) * n}), 100),
    ("tracker: dict peers", http_codec.parse_announce_response,
     lambda n: bencode.encode({b"interval": 60, b"peers": [
         {b"ip": b"10.0.0.1", b"port": 1 + i} for i in range(n)]}), 50),
    ("udp tracker: announce peers",
     lambda d: udp_codec.decode_announce_response(d, ipv6=False),
     lambda n: struct.pack(">IIIII", 1, 7, 60, 0, 0) + bytes(range(1, 7)) * n, 100),
    ("krpc: many nodes", parse_krpc,
     lambda n: bencode.encode({b"t": b"aa", b"y": b"r", b"r": {
         b"id": bytes(20), b"nodes": (bytes(20) + bytes(range(1, 7))) * n}}), 10),
    ("ut_pex: many peers", ut_pex.decode,
     lambda n: bencode.encode({b"added": bytes(range(1, 7)) * n}), 100),
    ("magnet: many trackers", lambda d: parse_magnet(d.decode()),
     lambda n: b"magnet:?xt=urn:btih:" + b"a" * 40 + b"".join(b"&tr=t://%d" % i for i in range(n)),
     50),
]  # fmt: skip

# Rejected at a fixed point, whatever follows: cost must not grow with the input.
FLAT_CASES: list[tuple[str, Callable[[bytes], Any], Callable[[int], bytes], int]] = [
    ("bencode: deep nesting", lambda d: bencode.decode(d, max_depth=64),
     lambda n: b"l" * n + b"e" * n, 2000),
    ("bencode: huge string length", bencode.decode, lambda n: b"9" * n + b":x", 2000),
    ("extension handshake: deep nesting", extension.decode_handshake,
     lambda n: b"d1:m" + b"l" * n + b"e" * n + b"e", 2000),
    ("ut_metadata: deep header", ut_metadata.decode, lambda n: b"d" * n + b"e" * n, 2000),
    ("wire: 2 GiB length prefix, then junk", feed_protocol,
     lambda n: struct.pack(">IB", 2**31, 7) + bytes(n), 2000),
    ("magnet: overlong URI", lambda d: parse_magnet(d.decode()),
     lambda n: b"magnet:?xt=urn:btih:" + b"a" * 40 + b"&dn=" + b"x" * (n * 50), 2000),
]  # fmt: skip


@pytest.mark.parametrize(("name", "parse", "make", "n"), LINEAR, ids=[c[0] for c in LINEAR])
def test_work_grows_linearly(
    name: str, parse: Callable[[bytes], Any], make: Callable[[int], bytes], n: int
) -> None:
    r = ratio(parse, make, n)
    assert r <= RATIO, f"{name}: 4x the input cost {r:.1f}x the work"


@pytest.mark.parametrize(("name", "parse", "make", "n"), FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_rejection_at_a_cap_costs_the_same_at_any_size(
    name: str, parse: Callable[[bytes], Any], make: Callable[[int], bytes], n: int
) -> None:
    with pytest.raises(TorrentfsError):
        parse(make(4 * n))
    r = ratio(parse, make, n)
    assert r <= FLAT, f"{name}: 4x the input cost {r:.1f}x the work"


def test_work_counter_sees_quadratic_code() -> None:
    """The measure itself: a deliberately quadratic parser is caught."""

    def quadratic(data: bytes) -> None:
        for i in range(len(data)):
            for _ in range(i):
                pass

    assert ratio(quadratic, lambda n: bytes(n), 50) > RATIO
