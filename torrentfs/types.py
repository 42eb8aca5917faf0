"""Small value types shared by every layer (L0).

Plain aliases keep the hot paths cheap (no wrapper objects per block) while the names carry
the BitTorrent model (BEP 3).
"""

from __future__ import annotations

from typing import NewType

InfoHash = NewType("InfoHash", bytes)
"""The 20-byte v1 info-hash: SHA-1 of the bencoded info dictionary's original bytes (BEP 3)."""

PeerId = NewType("PeerId", bytes)
"""A 20-byte peer id (BEP 3, BEP 20 style prefix for ours)."""

PieceIndex = int
BLOCK_SIZE = 16 * 1024
"""Request size every mainstream client uses; larger requests are refused by most peers."""


class PeerAddress:
    """A TCP (or UDP for DHT) endpoint. `host` is a literal IPv4/IPv6 address or a name.

    Immutable and hashable (a value). Written by hand rather than as a dataclass: importing
    `dataclasses` pulls in `inspect` and costs every command's start-up several milliseconds.
    """

    __slots__ = ("host", "port")
    __match_args__ = ("host", "port")
    host: str
    port: int

    def __init__(self, host: str, port: int) -> None:
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"PeerAddress is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PeerAddress is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not PeerAddress:
            return NotImplemented
        assert isinstance(other, PeerAddress)
        return self.host == other.host and self.port == other.port

    def __hash__(self) -> int:
        return hash((self.host, self.port))

    def __repr__(self) -> str:
        return f"PeerAddress(host={self.host!r}, port={self.port!r})"

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __reduce__(self) -> tuple[type[PeerAddress], tuple[str, int]]:
        return (PeerAddress, (self.host, self.port))


def info_hash_hex(info_hash: bytes) -> str:
    return info_hash.hex()
