"""Small value types shared by every layer (L0).

Plain aliases keep the hot paths cheap (no wrapper objects per block) while the names carry
the BitTorrent model (BEP 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

InfoHash = NewType("InfoHash", bytes)
"""The 20-byte v1 info-hash: SHA-1 of the bencoded info dictionary's original bytes (BEP 3)."""

PeerId = NewType("PeerId", bytes)
"""A 20-byte peer id (BEP 3, BEP 20 style prefix for ours)."""

PieceIndex = int
BLOCK_SIZE = 16 * 1024
"""Request size every mainstream client uses; larger requests are refused by most peers."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A TCP (or UDP for DHT) endpoint. `host` is a literal IPv4/IPv6 address or a name."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def info_hash_hex(info_hash: bytes) -> str:
    return info_hash.hex()
