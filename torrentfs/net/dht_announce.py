"""One torrent's use of the DHT (BEP 5), and the torrent's peer sources as one service (L4).

`DhtAnnouncer` looks the torrent's info-hash up with get_peers when it starts, again every
`INTERVAL` (15 minutes, libtorrent's default too) and when the torrent runs low on peers
(`request_more_peers`, at most once per `MIN_INTERVAL`), hands what it found to the torrent
(``on_peers(peers, "dht")``), and -- when we accept incoming connections (``port`` given) --
announces us with announce_peer to the K closest nodes of that same lookup. A lookup that
reached nobody (the DHT is still bootstrapping) is retried sooner, with backoff from
`RETRY_MIN` to `INTERVAL`. BEP 27: the session never makes one for a private torrent.

`PeerSources` runs several such services (the tracker set, the DHT announcer) under the one
``trackers`` hook of `Torrent` and forwards `completed` / `request_more_peers` to each.

Duck-typed on purpose (like `make_tracker_set`): net/ (L4) does not import the engine (L5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ..types import PeerAddress
from .dht_node import DhtError, DhtNode

__all__ = ["INTERVAL", "MIN_INTERVAL", "RETRY_MIN", "DhtAnnouncer", "PeerSources"]

log = logging.getLogger(__name__)

INTERVAL = 15 * 60.0
MIN_INTERVAL = 60.0
RETRY_MIN = 5.0


class DhtAnnouncer:
    """get_peers / announce_peer for one info-hash, as a trio service (see the module doc)."""

    def __init__(
        self,
        node: DhtNode,
        info_hash: bytes,
        on_peers: Callable[[list[PeerAddress], str], None],
        *,
        port: int | None,
        interval: float = INTERVAL,
        min_interval: float = MIN_INTERVAL,
        retry_min: float = RETRY_MIN,
    ) -> None:
        self._node = node
        self._info_hash = info_hash
        self._on_peers = on_peers
        self._port = port
        self._interval = interval
        self._min_interval = min_interval
        self._retry_min = retry_min
        self._wake = trio.Event()
        self.lookups = 0
        self.announced = 0

    def request_more_peers(self) -> None:
        self._wake.set()

    def completed(self) -> None:
        """Nothing to tell the DHT: it stores no download state."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        retry = self._retry_min
        while True:
            started = trio.current_time()
            self._wake = trio.Event()
            reached = await self._once()
            if reached:
                retry = self._retry_min
                with trio.move_on_after(self._interval):
                    await self._wake.wait()
                await trio.sleep_until(started + self._min_interval)
            else:
                with trio.move_on_after(retry):
                    await self._wake.wait()
                retry = min(retry * 2, self._interval)

    async def _once(self) -> bool:
        """One lookup (and announce); whether any node answered."""
        self.lookups += 1
        try:
            found = await self._node.get_peers(self._info_hash)
        except DhtError as exc:
            log.debug("DHT lookup of %s failed: %s", self._info_hash.hex(), exc)
            return False
        if found.peers:
            self._on_peers(found.addresses, "dht")
        if self._port is not None and found.tokens:
            self.announced = await self._node.announce_peer(
                self._info_hash, self._port, found=found
            )
        log.debug(
            "DHT %s: %d peers from %d answers, announced to %d",
            self._info_hash.hex()[:12],
            len(found.peers),
            found.responses,
            self.announced if self._port is not None else 0,
        )
        return found.responses > 0


class PeerSources:
    """Several peer-source services (trackers, DHT) run and notified as one."""

    def __init__(self, sources: Sequence[Any]) -> None:
        self.sources = list(sources)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for source in self.sources:
                await nursery.start(source.run)
            task_status.started()

    def completed(self) -> None:
        for source in self.sources:
            hook = getattr(source, "completed", None)
            if hook is not None:
                hook()

    def request_more_peers(self) -> None:
        for source in self.sources:
            hook = getattr(source, "request_more_peers", None)
            if hook is not None:
                hook()
