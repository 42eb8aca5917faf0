"""Network I/O on trio (L4): peer connections, the listener and dialer, tracker clients.

Everything here owns sockets or HTTP clients and runs as trio tasks started into a nursery
that its owner passes in; the protocols themselves are parsed by the sans-IO layers below
(`torrentfs.wire`, `torrentfs.tracker`, `torrentfs.dht`).
"""
