"""KRPC, the DHT's message format (BEP 5), with strict validation of untrusted datagrams.

A message is one bencoded dict: ``t`` transaction id, ``y`` kind (``q`` query, ``r`` response,
``e`` error), optional ``v`` client version, ``ro`` read-only flag (BEP 43) and ``ip`` the
receiver's external address as seen by the sender (BEP 42).

Queries (``q`` method, ``a`` arguments, always with the sender's 20-byte ``id``): ``ping``,
``find_node`` (``target``), ``get_peers`` (``info_hash``), ``announce_peer`` (``info_hash``,
``port``, ``token``, ``implied_port``). Responses (``r``): ``id`` and, depending on the query,
``nodes`` (compact 26-byte entries), ``nodes6`` (38-byte entries, BEP 32), ``values`` (compact
peers, 6 or 18 bytes each) and ``token``. Errors (``e``): ``[code, message]`` with codes 201
generic, 202 server, 203 protocol, 204 method unknown.

Guarantees of `decode_message`:

* Only `KrpcError` (a `ProtocolError`) leaves it, for any input. Bencode is decoded with a size
  cap (one UDP datagram) and a depth cap, so rejection is linear in the input.
* Ids, targets and info-hashes are exactly 20 bytes; announce ports are 1..65535 (unless
  ``implied_port`` is set); transaction ids, tokens and versions have length bounds; ``nodes``,
  ``nodes6`` and ``values`` are bounded in count.
* A compact node or peer entry with port 0 is dropped from its list rather than failing the whole
  message: the other entries are still useful, and such entries are common in the wild.
* Unknown keys are ignored (forward compatibility, as BEP 5 asks). An unknown query method raises
  `KrpcError` with ``code=204`` and the transaction id, so a server can answer it.

`encode_message(decode_message(b))` reproduces the message's meaning; `decode_message(
encode_message(m)) == m` for every valid message `m`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar

from ..bencode import decode as bdecode
from ..bencode import encode as bencode
from ..errors import BencodeError, ProtocolError
from ..types import PeerAddress

__all__ = [
    "COMPACT_NODE6_LEN",
    "COMPACT_NODE_LEN",
    "ERROR_GENERIC",
    "ERROR_METHOD_UNKNOWN",
    "ERROR_PROTOCOL",
    "ERROR_SERVER",
    "MAX_DATAGRAM",
    "MAX_NODES",
    "MAX_TID_LEN",
    "MAX_TOKEN_LEN",
    "MAX_VALUES",
    "AnnouncePeer",
    "ErrorReply",
    "FindNode",
    "GetPeers",
    "KrpcError",
    "Message",
    "NodeInfo",
    "Ping",
    "Query",
    "QueryBody",
    "Response",
    "decode_compact_address",
    "decode_message",
    "decode_nodes",
    "decode_nodes6",
    "encode_compact_address",
    "encode_message",
    "encode_nodes",
]

MAX_DATAGRAM = 65535
"""Largest datagram we decode (the UDP payload limit); real KRPC packets are < 1500 bytes."""
_MAX_DEPTH = 4  # message dict > args dict > values list > string
_MAX_TOKENS = 1024

MAX_TID_LEN = 32
MAX_TOKEN_LEN = 64
MAX_VERSION_LEN = 32
MAX_NODES = 64
"""Most compact nodes accepted in one ``nodes``/``nodes6`` string (BEP 5 responses carry 8)."""
MAX_VALUES = 256
"""Most compact peers accepted in one ``values`` list (a full datagram holds about 100)."""

COMPACT_NODE_LEN = 26
COMPACT_NODE6_LEN = 38
ID_LEN = 20

ERROR_GENERIC = 201
ERROR_SERVER = 202
ERROR_PROTOCOL = 203
ERROR_METHOD_UNKNOWN = 204


class KrpcError(ProtocolError):
    """A malformed or unsupported KRPC message.

    `tid` is the message's transaction id when it could be read and the message was a query
    (so a server may answer with an error); `code` is the KRPC error code to answer with.
    """

    def __init__(
        self,
        message: str,
        *,
        tid: bytes | None = None,
        code: int = ERROR_PROTOCOL,
        remote: bool = True,
    ) -> None:
        super().__init__(message, remote=remote)
        self.tid = tid
        self.code = code


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node: its 20-byte id and UDP endpoint (a literal IPv4/IPv6 address)."""

    node_id: bytes
    host: str
    port: int

    @property
    def address(self) -> PeerAddress:
        return PeerAddress(self.host, self.port)


# -- query bodies ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    method: ClassVar[bytes] = b"ping"


@dataclass(frozen=True, slots=True)
class FindNode:
    target: bytes
    method: ClassVar[bytes] = b"find_node"


@dataclass(frozen=True, slots=True)
class GetPeers:
    info_hash: bytes
    method: ClassVar[bytes] = b"get_peers"


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    """``implied_port``: the peer's port is the UDP source port of this query (BEP 5)."""

    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False
    method: ClassVar[bytes] = b"announce_peer"


QueryBody = Ping | FindNode | GetPeers | AnnouncePeer


# -- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    tid: bytes
    sender_id: bytes
    body: QueryBody
    version: bytes | None = None
    read_only: bool = False
    ip: PeerAddress | None = None


@dataclass(frozen=True, slots=True)
class Response:
    tid: bytes
    sender_id: bytes
    nodes: tuple[NodeInfo, ...] = ()
    nodes6: tuple[NodeInfo, ...] = ()
    values: tuple[PeerAddress, ...] = ()
    token: bytes | None = None
    version: bytes | None = None
    ip: PeerAddress | None = None


@dataclass(frozen=True, slots=True)
class ErrorReply:
    tid: bytes
    code: int
    message: str
    version: bytes | None = None
    ip: PeerAddress | None = None


Message = Query | Response | ErrorReply


# -- compact formats ------------------------------------------------------------------------


def encode_compact_address(addr: PeerAddress) -> bytes:
    """4+2 or 16+2 bytes, big-endian port. Raises `KrpcError(remote=False)` on a bad address."""
    try:
        ip = ipaddress.ip_address(addr.host)
    except ValueError:
        raise KrpcError(f"not an IP address: {addr.host!r}", remote=False) from None
    if not 0 <= addr.port <= 0xFFFF:
        raise KrpcError(f"port out of range: {addr.port}", remote=False)
    return ip.packed + struct.pack(">H", addr.port)


def decode_compact_address(data: bytes) -> PeerAddress:
    if len(data) == 6:
        return PeerAddress(str(ipaddress.IPv4Address(data[:4])), int.from_bytes(data[4:], "big"))
    if len(data) == 18:
        return PeerAddress(str(ipaddress.IPv6Address(data[:16])), int.from_bytes(data[16:], "big"))
    raise KrpcError(f"compact address of {len(data)} bytes")


def encode_nodes(nodes: tuple[NodeInfo, ...] | list[NodeInfo]) -> bytes:
    """Compact node info: id + compact address per node (26 bytes IPv4, 38 bytes IPv6)."""
    out = bytearray()
    for node in nodes:
        if len(node.node_id) != ID_LEN:
            raise KrpcError("node id must be 20 bytes", remote=False)
        out += node.node_id + encode_compact_address(node.address)
    return bytes(out)


def _decode_node_list(data: bytes, entry: int, what: str) -> tuple[NodeInfo, ...]:
    if len(data) % entry:
        raise KrpcError(f"{what} length {len(data)} is not a multiple of {entry}")
    if len(data) // entry > MAX_NODES:
        raise KrpcError(f"{what} holds more than {MAX_NODES} nodes")
    out = []
    for i in range(0, len(data), entry):
        addr = decode_compact_address(data[i + ID_LEN : i + entry])
        if addr.port:
            out.append(NodeInfo(data[i : i + ID_LEN], addr.host, addr.port))
    return tuple(out)


def decode_nodes(data: bytes) -> tuple[NodeInfo, ...]:
    """Decode a ``nodes`` string (IPv4, 26 bytes per node); port-0 entries are dropped."""
    return _decode_node_list(data, COMPACT_NODE_LEN, "nodes")


def decode_nodes6(data: bytes) -> tuple[NodeInfo, ...]:
    """Decode a ``nodes6`` string (IPv6, 38 bytes per node, BEP 32)."""
    return _decode_node_list(data, COMPACT_NODE6_LEN, "nodes6")


# -- encoding -------------------------------------------------------------------------------


def _check_id(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != ID_LEN:
        raise KrpcError(f"{what} must be 20 bytes", remote=False)


def encode_message(msg: Message) -> bytes:
    """Bencode `msg`. Raises `KrpcError(remote=False)` when we built something invalid."""
    top: dict[bytes, object] = {b"t": msg.tid}
    if not 0 < len(msg.tid) <= MAX_TID_LEN:
        raise KrpcError("transaction id length out of range", remote=False)
    if msg.version is not None:
        top[b"v"] = msg.version
    if msg.ip is not None:
        top[b"ip"] = encode_compact_address(msg.ip)
    if isinstance(msg, Query):
        _check_id(msg.sender_id, "sender id")
        args: dict[bytes, object] = {b"id": msg.sender_id}
        body = msg.body
        if isinstance(body, FindNode):
            _check_id(body.target, "target")
            args[b"target"] = body.target
        elif isinstance(body, GetPeers):
            _check_id(body.info_hash, "info_hash")
            args[b"info_hash"] = body.info_hash
        elif isinstance(body, AnnouncePeer):
            _check_id(body.info_hash, "info_hash")
            if not (body.implied_port or 0 < body.port <= 0xFFFF):
                raise KrpcError(f"announce port out of range: {body.port}", remote=False)
            args[b"info_hash"] = body.info_hash
            args[b"port"] = body.port
            args[b"token"] = body.token
            if body.implied_port:
                args[b"implied_port"] = 1
        top[b"y"] = b"q"
        top[b"q"] = body.method
        top[b"a"] = args
        if msg.read_only:
            top[b"ro"] = 1
    elif isinstance(msg, Response):
        _check_id(msg.sender_id, "sender id")
        r: dict[bytes, object] = {b"id": msg.sender_id}
        if msg.nodes:
            r[b"nodes"] = encode_nodes(msg.nodes)
        if msg.nodes6:
            r[b"nodes6"] = encode_nodes(msg.nodes6)
        if msg.values:
            r[b"values"] = [encode_compact_address(v) for v in msg.values]
        if msg.token is not None:
            r[b"token"] = msg.token
        top[b"y"] = b"r"
        top[b"r"] = r
    else:
        top[b"y"] = b"e"
        top[b"e"] = [msg.code, msg.message.encode("utf-8")]
    try:
        return bencode(top)
    except BencodeError as e:  # pragma: no cover - all fields are checked above
        raise KrpcError(f"cannot encode KRPC message: {e}", remote=False) from None


# -- decoding -------------------------------------------------------------------------------


def _get_bytes(d: dict[bytes, object], key: bytes, what: str, tid: bytes | None) -> bytes:
    value = d.get(key)
    if not isinstance(value, bytes):
        raise KrpcError(f"{what}: missing or not a byte string", tid=tid)
    return value


def _get_id(d: dict[bytes, object], key: bytes, what: str, tid: bytes | None) -> bytes:
    value = _get_bytes(d, key, what, tid)
    if len(value) != ID_LEN:
        raise KrpcError(f"{what} must be 20 bytes, got {len(value)}", tid=tid)
    return value


def _get_int(d: dict[bytes, object], key: bytes, what: str, tid: bytes | None) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int):
        raise KrpcError(f"{what} is not an integer", tid=tid)
    return value


def decode_message(data: bytes) -> Message:
    """Decode one KRPC datagram; raise `KrpcError` (only) when it is malformed."""
    try:
        top = bdecode(data, max_depth=_MAX_DEPTH, max_size=MAX_DATAGRAM, max_tokens=_MAX_TOKENS)
    except BencodeError as e:
        raise KrpcError(f"invalid bencoding: {e}") from None
    if not isinstance(top, dict):
        raise KrpcError("KRPC message is not a dictionary")
    tid = top.get(b"t")
    if not isinstance(tid, bytes) or not 0 < len(tid) <= MAX_TID_LEN:
        raise KrpcError("missing or invalid transaction id")
    kind = top.get(b"y")
    version = top.get(b"v")
    if not isinstance(version, bytes) or len(version) > MAX_VERSION_LEN:
        version = None  # informational only; odd values are ignored, not fatal
    ip: PeerAddress | None = None
    raw_ip = top.get(b"ip")
    if isinstance(raw_ip, bytes) and len(raw_ip) in (6, 18):
        ip = decode_compact_address(raw_ip)
    if kind == b"q":
        return _decode_query(top, tid, version, ip)
    if kind == b"r":
        return _decode_response(top, tid, version, ip)
    if kind == b"e":
        return _decode_error(top, tid, version, ip)
    raise KrpcError("unknown message kind")


def _decode_query(
    top: dict[bytes, object], tid: bytes, version: bytes | None, ip: PeerAddress | None
) -> Query:
    method = top.get(b"q")
    if not isinstance(method, bytes):
        raise KrpcError("query without a method", tid=tid)
    args = top.get(b"a")
    if not isinstance(args, dict):
        raise KrpcError("query without arguments", tid=tid)
    ro = _get_int(top, b"ro", "ro", tid)
    sender = _get_id(args, b"id", "id", tid)
    body: QueryBody
    if method == b"ping":
        body = Ping()
    elif method == b"find_node":
        body = FindNode(_get_id(args, b"target", "target", tid))
    elif method == b"get_peers":
        body = GetPeers(_get_id(args, b"info_hash", "info_hash", tid))
    elif method == b"announce_peer":
        info_hash = _get_id(args, b"info_hash", "info_hash", tid)
        implied = _get_int(args, b"implied_port", "implied_port", tid)
        port = _get_int(args, b"port", "port", tid)
        token = _get_bytes(args, b"token", "token", tid)
        if not 0 < len(token) <= MAX_TOKEN_LEN:
            raise KrpcError("token length out of range", tid=tid)
        if implied:
            # The port argument is ignored; keep it only if it is meaningful.
            port = port if port is not None and 0 < port <= 0xFFFF else 0
        elif port is None or not 0 < port <= 0xFFFF:
            raise KrpcError(f"announce port out of range: {port}", tid=tid)
        body = AnnouncePeer(info_hash, port, token, implied_port=bool(implied))
    else:
        raise KrpcError(f"unknown method {method[:32]!r}", tid=tid, code=ERROR_METHOD_UNKNOWN)
    return Query(tid, sender, body, version=version, read_only=ro == 1, ip=ip)


def _decode_response(
    top: dict[bytes, object], tid: bytes, version: bytes | None, ip: PeerAddress | None
) -> Response:
    r = top.get(b"r")
    if not isinstance(r, dict):
        raise KrpcError("response without a body")
    sender = _get_id(r, b"id", "id", None)
    nodes: tuple[NodeInfo, ...] = ()
    nodes6: tuple[NodeInfo, ...] = ()
    if b"nodes" in r:
        nodes = decode_nodes(_get_bytes(r, b"nodes", "nodes", None))
    if b"nodes6" in r:
        nodes6 = decode_nodes6(_get_bytes(r, b"nodes6", "nodes6", None))
    values: list[PeerAddress] = []
    if b"values" in r:
        raw = r[b"values"]
        if not isinstance(raw, list):
            raise KrpcError("values is not a list")
        if len(raw) > MAX_VALUES:
            raise KrpcError(f"more than {MAX_VALUES} values")
        for item in raw:
            if not isinstance(item, bytes) or len(item) not in (6, 18):
                raise KrpcError("values entry is not a compact peer")
            addr = decode_compact_address(item)
            if addr.port:
                values.append(addr)
    token: bytes | None = None
    if b"token" in r:
        token = _get_bytes(r, b"token", "token", None)
        if not 0 < len(token) <= MAX_TOKEN_LEN:
            raise KrpcError("token length out of range")
    return Response(
        tid,
        sender,
        nodes=nodes,
        nodes6=nodes6,
        values=tuple(values),
        token=token,
        version=version,
        ip=ip,
    )


def _decode_error(
    top: dict[bytes, object], tid: bytes, version: bytes | None, ip: PeerAddress | None
) -> ErrorReply:
    e = top.get(b"e")
    if not isinstance(e, list) or not e or not isinstance(e[0], int):
        raise KrpcError("error message without [code, message]")
    text = e[1] if len(e) > 1 and isinstance(e[1], bytes) else b""
    return ErrorReply(tid, e[0], text[:256].decode("utf-8", "replace"), version=version, ip=ip)
