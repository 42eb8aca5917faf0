"""The BitTorrent peer wire protocol, sans-IO (L2): bytes in, messages out, ``encode() -> bytes``.

- `handshake` (BEP 3 handshake; reserved bits of BEP 5, 6, 10),
- `messages` (one dataclass per BEP 3 / BEP 6 / BEP 10 message, and their encoding),
- `protocol` (`PeerProtocol`: incremental framing and validation of everything a peer sends),
- `extension` (BEP 10 extended handshake), `ut_metadata` (BEP 9), `ut_pex` (BEP 11).

No trio, no sockets, no clock: the connection task in ``net/`` owns I/O and time. Everything a
peer can send is bounded and validated here, and only `ProtocolError` leaves these parsers.
"""
