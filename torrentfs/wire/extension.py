"""The BEP 10 extension protocol: the extended handshake and extension-id bookkeeping.

An ``extended`` message (id 20) carries an extended id byte then a payload. Id 0 is the extended
handshake, a bencoded dict:

- ``m``: extension name -> the id *the sender* wants to receive it under (0 = disabled);
- ``v``: client name and version; ``p``: the sender's TCP listen port; ``reqq``: how many
  outstanding requests the sender queues; ``yourip``: our address as the sender sees it
  (4 or 16 bytes); ``metadata_size``: size of the info dict (BEP 9).

Guarantees: `decode_handshake` reads untrusted bytes with bounded bencode depth and size and
raises only `ProtocolError`; it ignores unknown keys and optional fields of the wrong type or
value (clients disagree on details and a bad ``v`` is no reason to drop a peer), except
``metadata_size``, which must be within ``1..MAX_METADATA_SIZE`` when it is an integer, since the
whole magnet download is sized from it. `encode_handshake` refuses invalid fields of our own with
``ProtocolError(remote=False)``.

`decode_dict` is the bounded bencode entry point shared by the other extension codecs
(``ut_metadata``, ``ut_pex``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torrentfs import bencode
from torrentfs.errors import BencodeError, ProtocolError

HANDSHAKE_ID = 0
"""The extended id of the extended handshake (BEP 10)."""
MAX_METADATA_SIZE = 16 * 1024 * 1024
"""Largest info dict we accept over ut_metadata (BEP 9): room for ~800k piece hashes, far beyond
real torrents (a few MiB at most), and a bound on what a magnet peer can make us buffer."""
MAX_HANDSHAKE_SIZE = 64 * 1024
"""Largest extended handshake payload we decode; real ones are a few hundred bytes."""
MAX_DEPTH = 8
"""Bencode nesting allowed in extension payloads (handshakes need 2)."""
MAX_REQQ = 65536
"""A larger ``reqq`` is clamped: we never need to know more."""
MAX_CLIENT_NAME = 256

LOCAL_EXTENSIONS: Mapping[str, int] = {"ut_metadata": 1, "ut_pex": 2}
"""The extended ids under which torrentfs receives each extension (our ``m`` dict)."""


def decode_dict(
    payload: bytes, *, max_size: int, max_depth: int = MAX_DEPTH
) -> dict[bytes, object]:
    """Decode a bencoded dict from a peer, or raise `ProtocolError(remote=True)`."""
    if len(payload) > max_size:
        raise ProtocolError(f"extension payload of {len(payload)} bytes exceeds {max_size}")
    try:
        value = bencode.decode(bytes(payload), max_depth=max_depth, max_size=max_size)
    except BencodeError as exc:
        raise ProtocolError(f"bad bencoding in extension message: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("extension message is not a bencoded dictionary")
    return value


def encode_dict(value: dict[bytes, object]) -> bytes:
    """Bencode our own payload; a failure is our bug (`ProtocolError(remote=False)`)."""
    try:
        return bencode.encode(value)
    except BencodeError as exc:
        raise ProtocolError(f"cannot bencode extension payload: {exc}", remote=False) from None


@dataclass(frozen=True, slots=True)
class ExtendedHandshake:
    """The fields of a BEP 10 handshake torrentfs uses; None means absent (or ignored)."""

    m: dict[str, int] = field(default_factory=dict)
    v: str | None = None
    p: int | None = None
    reqq: int | None = None
    yourip: bytes | None = None
    metadata_size: int | None = None


def encode_handshake(handshake: ExtendedHandshake) -> bytes:
    """The bencoded payload (to send as ``Extended(HANDSHAKE_ID, payload)``)."""
    m: dict[bytes, object] = {}
    for name, ext_id in handshake.m.items():
        if type(ext_id) is not int or not 0 <= ext_id <= 255:
            raise ProtocolError(f"extended id {ext_id!r} for {name!r} not in 0..255", remote=False)
        m[name.encode()] = ext_id
    out: dict[bytes, object] = {b"m": m}
    if handshake.v is not None:
        out[b"v"] = handshake.v.encode()
    if handshake.p is not None:
        if not 0 < handshake.p < 65536:
            raise ProtocolError(f"listen port {handshake.p} out of range", remote=False)
        out[b"p"] = handshake.p
    if handshake.reqq is not None:
        if handshake.reqq <= 0:
            raise ProtocolError(f"reqq {handshake.reqq} must be positive", remote=False)
        out[b"reqq"] = handshake.reqq
    if handshake.yourip is not None:
        if len(handshake.yourip) not in (4, 16):
            raise ProtocolError("yourip must be 4 or 16 bytes", remote=False)
        out[b"yourip"] = bytes(handshake.yourip)
    if handshake.metadata_size is not None:
        if not 0 < handshake.metadata_size <= MAX_METADATA_SIZE:
            raise ProtocolError(f"metadata_size {handshake.metadata_size}", remote=False)
        out[b"metadata_size"] = handshake.metadata_size
    return encode_dict(out)


def decode_handshake(payload: bytes) -> ExtendedHandshake:
    """Parse a peer's extended handshake payload (tolerant, bounded; see the module doc)."""
    d = decode_dict(payload, max_size=MAX_HANDSHAKE_SIZE)
    m: dict[str, int] = {}
    raw_m = d.get(b"m")
    if isinstance(raw_m, dict):
        for key, value in raw_m.items():
            if type(value) is not int or not 0 <= value <= 255:
                continue
            try:
                m[key.decode("utf-8")] = value
            except UnicodeDecodeError:
                continue
    v = d.get(b"v")
    client = v[:MAX_CLIENT_NAME].decode("utf-8", "replace") if isinstance(v, bytes) else None
    p = d.get(b"p")
    port = p if type(p) is int and 0 < p < 65536 else None
    reqq = d.get(b"reqq")
    queue = min(reqq, MAX_REQQ) if type(reqq) is int and reqq > 0 else None
    yourip = d.get(b"yourip")
    address = yourip if isinstance(yourip, bytes) and len(yourip) in (4, 16) else None
    size = d.get(b"metadata_size")
    metadata_size = None
    if type(size) is int:
        if not 0 < size <= MAX_METADATA_SIZE:
            raise ProtocolError(f"metadata_size {size} out of range (1..{MAX_METADATA_SIZE})")
        metadata_size = size
    return ExtendedHandshake(
        m=m, v=client, p=port, reqq=queue, yourip=address, metadata_size=metadata_size
    )


class ExtensionIds:
    """Extended ids in both directions for one connection (BEP 10).

    We receive an extension under *our* id (`local`, sent in our ``m``) and send it under the
    *peer's* id (`remote`, from its ``m``). Later handshakes update `remote` incrementally; an id
    of 0 disables that extension.
    """

    def __init__(self, local: Mapping[str, int] = LOCAL_EXTENSIONS) -> None:
        self.local: dict[str, int] = dict(local)
        self._local_names = {ext_id: name for name, ext_id in self.local.items() if ext_id}
        self.remote: dict[str, int] = {}

    def update_remote(self, m: Mapping[str, int]) -> None:
        for name, ext_id in m.items():
            if ext_id:
                self.remote[name] = ext_id
            else:
                self.remote.pop(name, None)

    def remote_id(self, name: str) -> int | None:
        """The id to send `name` messages under, or None if the peer does not support it."""
        return self.remote.get(name)

    def local_name(self, ext_id: int) -> str | None:
        """Which of our extensions an incoming ``Extended(ext_id, ...)`` is, if any."""
        return self._local_names.get(ext_id)
