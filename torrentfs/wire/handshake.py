"""The BitTorrent handshake (BEP 3) and its reserved-bit flags (BEP 5, BEP 6, BEP 10).

A handshake is exactly `HANDSHAKE_LEN` (68) bytes::

    <19><"BitTorrent protocol"><8 reserved bytes><20-byte info_hash><20-byte peer_id>

The reserved bytes advertise optional features; a feature is *negotiated* only when both sides
set its bit:

- BEP 10 extension protocol: ``reserved[5] & 0x10``
- BEP 6 fast extension: ``reserved[7] & 0x04``
- BEP 5 DHT (the peer accepts a ``port`` message): ``reserved[7] & 0x01``

Guarantees: `decode` accepts only the exact protocol string and returns fields of the right
lengths; `check_prefix` rejects a wrong protocol string as soon as its first bytes arrive, so a
non-BitTorrent peer is dropped without waiting for 68 bytes. Every failure is a `ProtocolError`
(``remote=True`` for bytes from the peer, ``remote=False`` for our own bad arguments).
"""

from __future__ import annotations

from dataclasses import dataclass

from torrentfs.errors import ProtocolError

PROTOCOL_STRING = b"BitTorrent protocol"
PREFIX = bytes([len(PROTOCOL_STRING)]) + PROTOCOL_STRING
"""The first 20 bytes of every handshake: the length byte 19 and the protocol string."""
HANDSHAKE_LEN = len(PREFIX) + 8 + 20 + 20
"""68: prefix (20) + reserved (8) + info_hash (20) + peer_id (20)."""

_EXTENSION_BYTE, _EXTENSION_BIT = 5, 0x10
_FAST_BYTE, _FAST_BIT = 7, 0x04
_DHT_BYTE, _DHT_BIT = 7, 0x01


def make_reserved(*, extensions: bool = False, fast: bool = False, dht: bool = False) -> bytes:
    """The 8 reserved bytes advertising the given features."""
    reserved = bytearray(8)
    if extensions:
        reserved[_EXTENSION_BYTE] |= _EXTENSION_BIT
    if fast:
        reserved[_FAST_BYTE] |= _FAST_BIT
    if dht:
        reserved[_DHT_BYTE] |= _DHT_BIT
    return bytes(reserved)


DEFAULT_RESERVED = make_reserved(extensions=True, fast=True)
"""What torrentfs advertises by default: BEP 10 and BEP 6 (DHT is added by the session)."""


def supports_extensions(reserved: bytes) -> bool:
    """BEP 10: the extension protocol bit."""
    return bool(reserved[_EXTENSION_BYTE] & _EXTENSION_BIT)


def supports_fast(reserved: bytes) -> bool:
    """BEP 6: the fast extension bit."""
    return bool(reserved[_FAST_BYTE] & _FAST_BIT)


def supports_dht(reserved: bytes) -> bool:
    """BEP 5: the DHT bit (the peer runs a DHT node and may send ``port``)."""
    return bool(reserved[_DHT_BYTE] & _DHT_BIT)


@dataclass(frozen=True, slots=True)
class Handshake:
    """One side's handshake (BEP 3). Field lengths are checked on construction."""

    info_hash: bytes
    peer_id: bytes
    reserved: bytes = DEFAULT_RESERVED

    def __post_init__(self) -> None:
        if len(self.info_hash) != 20 or len(self.peer_id) != 20 or len(self.reserved) != 8:
            raise ProtocolError(
                "handshake needs a 20-byte info_hash, a 20-byte peer_id and 8 reserved bytes",
                remote=False,
            )

    @classmethod
    def ours(cls, info_hash: bytes, peer_id: bytes, *, dht: bool = False) -> Handshake:
        """Our handshake: BEP 10 and BEP 6 always, BEP 5 when our DHT node runs."""
        return cls(info_hash, peer_id, make_reserved(extensions=True, fast=True, dht=dht))

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Handshake:
        """Same as the module's `decode`."""
        return decode(data)

    def encode(self) -> bytes:
        """Same as the module's `encode`."""
        return encode(self)

    @property
    def supports_extensions(self) -> bool:
        return supports_extensions(self.reserved)

    @property
    def supports_fast(self) -> bool:
        return supports_fast(self.reserved)

    @property
    def supports_dht(self) -> bool:
        return supports_dht(self.reserved)


def encode(handshake: Handshake) -> bytes:
    """The 68 bytes of `handshake`."""
    return b"".join((PREFIX, handshake.reserved, handshake.info_hash, handshake.peer_id))


def check_prefix(data: bytes | bytearray | memoryview) -> None:
    """Raise `ProtocolError` unless `data` could be the start of a handshake.

    Works on any number of bytes (0 to 68+), so a wrong protocol string is rejected as soon as
    the first differing byte arrives.
    """
    n = min(len(data), len(PREFIX))
    if bytes(data[:n]) != PREFIX[:n]:
        raise ProtocolError("not a BitTorrent handshake (wrong protocol string)")


def decode(data: bytes | bytearray | memoryview) -> Handshake:
    """Parse the first `HANDSHAKE_LEN` bytes of `data` (extra bytes are not looked at)."""
    if len(data) < HANDSHAKE_LEN:
        raise ProtocolError(f"handshake needs {HANDSHAKE_LEN} bytes, got {len(data)}")
    check_prefix(data)
    raw = bytes(data[:HANDSHAKE_LEN])
    return Handshake(info_hash=raw[28:48], peer_id=raw[48:68], reserved=raw[20:28])
