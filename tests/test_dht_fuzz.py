"""Hypothesis fuzzing of the DHT's untrusted inputs: only `KrpcError` may leave the decoder, and
the responder never raises on any decodable query."""

from __future__ import annotations

import random

from fuzz_scale import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.bencode import encode as bencode
from torrentfs.dht.krpc import KrpcError, Query, decode_message, encode_message
from torrentfs.dht.routing import RoutingTable, SavedTableError
from torrentfs.dht.server import DhtServer
from torrentfs.dht.tokens import TokenManager
from torrentfs.types import PeerAddress

ID = b"I" * 20

leaf = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=40),
    st.sampled_from([ID, b"q", b"r", b"e", b"ping", b"find_node", b"get_peers", b"announce_peer"]),
)
keys = st.sampled_from(
    [
        b"t",
        b"y",
        b"q",
        b"a",
        b"r",
        b"e",
        b"id",
        b"target",
        b"info_hash",
        b"port",
        b"token",
        b"implied_port",
        b"nodes",
        b"nodes6",
        b"values",
        b"v",
        b"ro",
        b"ip",
    ]
)
values = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=8,
)
messages = st.dictionaries(keys, values, max_size=5)


def _server() -> DhtServer:
    rng = random.Random(0)
    return DhtServer(RoutingTable(b"\x01" * 20, 0.0), TokenManager(rng.randbytes, 0.0), rng)


SERVER = _server()
SRC = PeerAddress("10.0.0.1", 1)


def _check(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except KrpcError as e:
        if e.tid is not None:
            SERVER.error_reply(e, SRC, 0.0)
        return
    assert decode_message(encode_message(msg)) == msg
    if isinstance(msg, Query):
        SERVER.handle_query(msg, SRC, 0.0)


@settings(max_examples=examples(1500), deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@settings(max_examples=examples(400), deadline=None)
@given(messages)
def test_structured_messages(msg: dict[bytes, object]) -> None:
    _check(bencode(msg))


args = st.fixed_dictionaries(
    {b"id": st.sampled_from([ID, b"short"])},
    optional={k: values for k in (b"target", b"info_hash", b"port", b"token", b"implied_port")},
)
queries = st.fixed_dictionaries(
    {
        b"t": st.binary(min_size=1, max_size=4),
        b"y": st.just(b"q"),
        b"q": st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer", b"x"]),
        b"a": args,
    },
    optional={b"ro": st.integers(0, 2), b"v": st.binary(max_size=4)},
)


@settings(max_examples=examples(500), deadline=None)
@given(queries)
def test_query_shaped(msg: dict[bytes, object]) -> None:
    _check(bencode(msg))


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=200))
def test_saved_table_garbage(data: bytes) -> None:
    try:
        RoutingTable.load(data, 0.0)
    except SavedTableError:
        pass
