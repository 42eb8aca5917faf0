"""The BitTorrent DHT (BEP 5), sans-IO core.

* `krpc` -- KRPC messages over bencode: codec with strict validation (BEP 5, 32, 42, 43).
* `node_id` -- BEP 42 secure node ids.
* `routing` -- the k-bucket routing table, node states, replacement cache, refresh, save/load.
* `tokens` -- get_peers/announce_peer write tokens with rotating secrets.
* `lookup` -- the iterative find_node/get_peers lookup state machine.
* `server` -- answering queries: peer store, tokens, per-IP rate limits, read-only mode.

Nothing here reads a clock, owns a socket or draws its own randomness: time is passed in as
``now`` (seconds) and randomness as a `random.Random`, so the trio UDP node (L4) drives it and
tests can simulate whole networks in-process.
"""
