"""BEP 42 secure node ids: derive ours from our external address, check other nodes' ids.

A node id's first 21 bits are bound to the node's IP address: ``crc32c((ip & mask) | r << 29)``
(IPv4; the mask keeps 2+4+6+8 bits of the four octets and ``r`` -- 3 random bits -- goes to the top
of the first octet) or its IPv6 analogue over the first 8 octets. ``r`` is stored in the id's last
byte so anyone can recompute the prefix. This makes it expensive to place many nodes next to a
chosen info-hash (the Sybil attack BEP 42 targets).

Addresses on local networks are exempt (BEP 42): 10/8, 172.16/12, 192.168/16, 169.254/16, 127/8;
for IPv6 we likewise exempt loopback, link-local (fe80::/10) and unique-local (fc00::/7).

Pure: randomness comes from the caller's `random.Random`; CRC-32C (Castagnoli) is computed with
a 256-entry table, which is plenty for 4-8 bytes.
"""

from __future__ import annotations

import ipaddress
import random

__all__ = [
    "NODE_ID_LEN",
    "crc32c",
    "generate_node_id",
    "is_exempt",
    "random_node_id",
    "verify_node_id",
]

NODE_ID_LEN = 20

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()

_V4_MASK = (0x03, 0x0F, 0x3F, 0xFF)
_V6_MASK = (0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF)

_EXEMPT_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
)
_EXEMPT_V6 = tuple(ipaddress.IPv6Network(n) for n in ("::1/128", "fe80::/10", "fc00::/7"))


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as used by BEP 42; ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_exempt(ip: str) -> bool:
    """True for addresses BEP 42 does not bind ids to (local networks), and for non-addresses."""
    addr = _parse(ip)
    if addr is None:
        return True
    if isinstance(addr, ipaddress.IPv4Address):
        return any(addr in net for net in _EXEMPT_V4)
    return any(addr in net for net in _EXEMPT_V6)


def _prefix_crc(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, r: int) -> int:
    packed = addr.packed
    mask = _V4_MASK if len(packed) == 4 else _V6_MASK
    masked = bytearray(b & m for b, m in zip(packed, mask, strict=False))
    masked[0] |= (r & 0x07) << 5
    return crc32c(bytes(masked))


def random_node_id(rng: random.Random) -> bytes:
    """A uniformly random 20-byte id (for exempt addresses, lookup targets, tests)."""
    return rng.getrandbits(160).to_bytes(NODE_ID_LEN, "big")


def generate_node_id(ip: str, rng: random.Random) -> bytes:
    """A BEP 42 id for a node whose external address is `ip`.

    For an unparsable address a plain random id is returned (the address is not known yet).
    """
    addr = _parse(ip)
    if addr is None:
        return random_node_id(rng)
    rand = rng.getrandbits(8)
    crc = _prefix_crc(addr, rand & 0x07)
    node_id = bytearray(random_node_id(rng))
    node_id[0] = (crc >> 24) & 0xFF
    node_id[1] = (crc >> 16) & 0xFF
    node_id[2] = ((crc >> 8) & 0xF8) | (node_id[2] & 0x07)
    node_id[19] = rand
    return bytes(node_id)


def verify_node_id(node_id: bytes, ip: str) -> bool:
    """Whether `node_id` is a valid BEP 42 id for `ip` (always True for exempt addresses)."""
    if len(node_id) != NODE_ID_LEN:
        return False
    if is_exempt(ip):
        return True
    addr = _parse(ip)
    assert addr is not None  # unparsable addresses are exempt
    crc = _prefix_crc(addr, node_id[19] & 0x07)
    return (
        node_id[0] == (crc >> 24) & 0xFF
        and node_id[1] == (crc >> 16) & 0xFF
        and (node_id[2] & 0xF8) == ((crc >> 8) & 0xF8)
    )
