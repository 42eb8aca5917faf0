"""BEP 11 (ut_pex): peer exchange messages.

A PEX payload is a bencoded dict of compact peer lists: ``added`` / ``dropped`` (IPv4, 6 bytes
each: address + big-endian port), ``added6`` / ``dropped6`` (IPv6, 18 bytes each) and one flag
byte per added peer in ``added.f`` / ``added6.f`` (`FLAG_*`).

Limits: BEP 11 asks senders for at most 50 added and 50 dropped peers per message, so `encode`
refuses more (`ProtocolError(remote=False)`: chunk before sending). Receivers see messages
from many clients, so `decode` is tolerant but bounded: it keeps at most `MAX_RECEIVE` added and
`MAX_RECEIVE` dropped peers and ignores the rest, skips entries with port 0 or an unspecified
address, ignores a trailing partial entry, a flags string of the wrong length (missing flags are
0) and keys of the wrong type. Only malformed bencoding or a non-dict raise `ProtocolError`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from torrentfs.errors import ProtocolError
from torrentfs.types import PeerAddress
from torrentfs.wire.extension import decode_dict, encode_dict

FLAG_ENCRYPTION = 0x01
"""The peer prefers encrypted connections (BEP 11)."""
FLAG_SEED = 0x02
"""The peer is a seed / upload only."""
FLAG_UTP = 0x04
"""The peer supports uTP (BEP 29)."""
FLAG_HOLEPUNCH = 0x08
"""The peer supports ut_holepunch (BEP 55)."""
FLAG_REACHABLE = 0x10
"""The sender connected *to* this peer (so it accepts incoming connections)."""

MAX_SEND = 50
"""Most added and most dropped peers per message we send (BEP 11)."""
MAX_RECEIVE = 200
"""Most added and most dropped peers we take from one message; the rest is ignored."""
MAX_PAYLOAD = 64 * 1024
"""Largest PEX payload we decode (200 IPv6 entries per list need under 16 KiB)."""


@dataclass(frozen=True, slots=True)
class PexPeer:
    """An added peer and its `FLAG_*` bits."""

    address: PeerAddress
    flags: int = 0


@dataclass(frozen=True, slots=True)
class PexMessage:
    """One PEX message; IPv4 and IPv6 peers together (split by family on the wire)."""

    added: tuple[PexPeer, ...] = ()
    dropped: tuple[PeerAddress, ...] = ()


def _compact(address: PeerAddress) -> tuple[int, bytes]:
    """(4 or 6, compact bytes) of `address`, which must be a literal IP and a real port."""
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        raise ProtocolError(f"PEX needs a literal IP address, not {address.host!r}", remote=False)
    if not 0 < address.port < 65536:
        raise ProtocolError(f"PEX port {address.port} out of range", remote=False)
    return ip.version, ip.packed + address.port.to_bytes(2, "big")


def encode(msg: PexMessage) -> bytes:
    """The ut_pex payload of `msg` (send under the peer's ``ut_pex`` id)."""
    if len(msg.added) > MAX_SEND or len(msg.dropped) > MAX_SEND:
        raise ProtocolError(f"PEX message with more than {MAX_SEND} peers in a list", remote=False)
    lists: dict[bytes, bytearray] = {
        key: bytearray() for key in (b"added", b"added.f", b"added6", b"added6.f")
    }
    for peer in msg.added:
        if not 0 <= peer.flags <= 255:
            raise ProtocolError(f"PEX flags {peer.flags} out of range", remote=False)
        version, packed = _compact(peer.address)
        suffix = b"" if version == 4 else b"6"
        lists[b"added" + suffix] += packed
        lists[b"added" + suffix + b".f"].append(peer.flags)
    dropped = {4: bytearray(), 6: bytearray()}
    for address in msg.dropped:
        version, packed = _compact(address)
        dropped[version] += packed
    out: dict[bytes, object] = {key: bytes(value) for key, value in lists.items()}
    out[b"dropped"] = bytes(dropped[4])
    out[b"dropped6"] = bytes(dropped[6])
    return encode_dict(out)


def _ipv4(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def _ipv6(raw: bytes) -> str:
    address = ipaddress.IPv6Address(raw)
    # An IPv4-mapped entry is an IPv4 peer; dial it as one.
    return str(address.ipv4_mapped or address)


def _peers(value: object, size: int, limit: int) -> list[tuple[int, PeerAddress]]:
    """(position, address) of the valid entries of a compact list, at most `limit`."""
    if not isinstance(value, bytes) or limit <= 0:
        return []
    host_of = _ipv4 if size == 6 else _ipv6
    found: list[tuple[int, PeerAddress]] = []
    for n, start in enumerate(range(0, len(value) - size + 1, size)):
        raw = value[start : start + size]
        port = int.from_bytes(raw[-2:], "big")
        if port == 0 or not any(raw[:-2]):
            continue
        found.append((n, PeerAddress(host_of(raw[:-2]), port)))
        if len(found) >= limit:
            break
    return found


def _flags(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


def decode(payload: bytes) -> PexMessage:
    """Parse a peer's ut_pex payload (tolerant and bounded, see the module doc)."""
    d = decode_dict(payload, max_size=MAX_PAYLOAD)
    added: list[PexPeer] = []
    for key, size in ((b"added", 6), (b"added6", 18)):
        flags = _flags(d.get(key + b".f"))
        for n, address in _peers(d.get(key), size, MAX_RECEIVE - len(added)):
            added.append(PexPeer(address, flags[n] if n < len(flags) else 0))
    dropped: list[PeerAddress] = []
    for key, size in ((b"dropped", 6), (b"dropped6", 18)):
        dropped.extend(
            address for _, address in _peers(d.get(key), size, MAX_RECEIVE - len(dropped))
        )
    return PexMessage(tuple(added), tuple(dropped))
