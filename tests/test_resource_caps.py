"""The session's connection caps against hostile peers: half-open dials and connections per
process hold, counted from outside the engine, while an honest libtorrent seeder still delivers.

* **Half-open dials** (`SessionConfig.max_half_open`, 16): the torrent is handed a hundred
  "tarpit" peers -- listeners whose accept queue is full, so the kernel drops our SYNs and every
  dial hangs in ``SYN_SENT`` until the handshake timeout. The sockets in ``SYN_SENT`` in the
  test's network namespace (``/proc/net/tcp``) are counted all along: never more than the cap.
* **Connections per process** (`SessionConfig.max_connections`): a crowd of hostile peers dials
  in and stays; beyond the cap each one is closed at once, even though the torrent's own cap
  (``max_peers``) would still have room.

Uses the hostile-peer harness of `test_hostile_peers` (its module-scoped seeder fixture).
"""

from __future__ import annotations

import socket
from pathlib import Path

import figures
import pytest
import trio
from hostile_peer import HostileConnection, idle_forever
from test_hostile_peers import (
    VERDICT_TIMEOUT,
    Swarm,
    against,
    complete_from_seeder,
    engine_log,
    fast_config,
    swarm,
)

from torrentfs.session import SessionConfig
from torrentfs.types import PeerAddress
from torrentfs.wire import messages as m

pytestmark = pytest.mark.interop
__all__ = ["engine_log", "swarm"]  # fixtures, shared

SYN_SENT = "02"


def syn_sent() -> int:
    """TCP sockets in SYN_SENT in this network namespace (the test's own: only loopback)."""
    with open("/proc/net/tcp") as f:
        next(f)
        return sum(1 for line in f if line.split()[3] == SYN_SENT)


class Tarpit:
    """`count` listeners on one loopback address whose accept queues are full: a SYN to them
    is dropped by the kernel, so a dial hangs (retransmitting) until the dialer gives up."""

    def __init__(self, host: str, count: int) -> None:
        self.listeners: list[socket.socket] = []
        self.fillers: list[socket.socket] = []
        for _ in range(count):
            listener = socket.socket()
            listener.bind((host, 0))
            listener.listen(0)  # accept queue of one
            filler = socket.create_connection(listener.getsockname()[:2], timeout=5)
            self.listeners.append(listener)
            self.fillers.append(filler)
        self.addresses = [PeerAddress(*s.getsockname()[:2]) for s in self.listeners]

    def close(self) -> None:
        for s in self.fillers + self.listeners:
            s.close()


async def test_half_open_dials_stay_capped_against_a_tarpit(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    cap = SessionConfig(download_dir=tmp_path, state_dir=tmp_path).max_half_open
    assert cap == 16  # the default documented in the README
    tarpit = Tarpit("127.0.9.1", 100)
    before = syn_sent()
    most = 0
    try:
        async with against(tmp_path, swarm, None, fast_config(handshake_timeout=3.0)) as case:
            torrent = case.torrent
            torrent.add_peers(tarpit.addresses, "test")

            async def sample() -> None:
                nonlocal most
                while True:
                    most = max(most, syn_sent() - before)
                    await trio.sleep(0.005)

            case.nursery.start_soon(sample)
            # Two rounds of dials timed out: the tarpit has had every chance to pile them up.
            with trio.fail_after(VERDICT_TIMEOUT):
                while sum(torrent.failures.get(a, 0) for a in tarpit.addresses) < 2 * cap:
                    await trio.sleep(0.05)
            assert most >= cap // 2, most  # the tarpit really held dials half-open ...
            assert most <= cap, most  # ... and never more than the cap
            await complete_from_seeder(torrent, swarm)  # the seeder waits its turn, no longer
            assert most <= cap, most
    finally:
        tarpit.close()
    figures.record("hostile connections", len(tarpit.addresses))
    print(f"100 tarpit peers: at most {most} dials half-open at once (cap {cap})")


async def test_connections_per_process_cap_holds_against_a_crowd(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    crowd = [swarm.hostile() for _ in range(12)]
    most = 0

    async def stay(conn: HostileConnection) -> None:
        await conn.open_as_dialer()
        await conn.send(m.HaveNone())
        await idle_forever(conn)

    async with against(tmp_path, swarm, None, fast_config(max_peers=50), max_connections=5) as case:
        async with trio.open_nursery() as crowd_nursery:
            for peer in crowd:
                crowd_nursery.start_soon(case.dial_in, stay, peer)
            with trio.fail_after(VERDICT_TIMEOUT):
                while sum(p.closed_by_remote for p in crowd) < len(crowd) - 5:
                    most = max(most, len(case.torrent.peers))
                    await trio.sleep(0.01)
            most = max(most, len(case.torrent.peers))
            assert most <= 5 and len(case.torrent.peers) == 5, most
            assert sum(p.connections for p in crowd) == len(crowd)
            crowd_nursery.cancel_scope.cancel()  # the crowd leaves: room for the seeder
        with trio.fail_after(VERDICT_TIMEOUT):
            while case.torrent.peers:
                await trio.sleep(0.01)
        await complete_from_seeder(case.torrent, swarm)
    figures.record("hostile connections", len(crowd))
