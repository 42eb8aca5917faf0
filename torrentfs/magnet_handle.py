"""A magnet in the session (L5): "fetching metadata", then an ordinary `Torrent`.

`Session.add_magnet` calls `start_magnet`, which returns a `MagnetHandle` at once. If the state
dir holds the magnet's verified info dict (`storage.metadata_cache`), the torrent is added
straight away and no peer is asked for metadata again; otherwise a `MetadataFetcher` runs in the
session's nursery under its own cancel scope (DESIGN.md §3.1), and when the info dict is verified
(BEP 9) it is saved, parsed, and added with `Session.add_torrent` -- from then on
`session.get(info_hash)` returns the torrent. The peers that served the metadata are handed to
the torrent first.

`Session.remove_torrent` cancels a fetch in progress; waiters on `wait_torrent` then get
`TorrentRemoved`. A resolved info dict that is not a usable torrent (v2-only, hostile paths...)
puts the handle in the ``error`` state with that reason; it hashed correctly, so no peer lied
and nothing is fetched again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from torrentfs.errors import MagnetError, ReadTimeout, TorrentfsError, TorrentRemoved
from torrentfs.magnet import Magnet
from torrentfs.metadata_fetch import FetchConfig, MetadataFetcher
from torrentfs.metainfo import Metainfo, parse_info
from torrentfs.storage import metadata_cache
from torrentfs.types import PeerAddress

if TYPE_CHECKING:
    from torrentfs.session import Session
    from torrentfs.torrent import Torrent

log = logging.getLogger(__name__)

FETCHING = "fetching metadata"
READY = "ready"
ERROR = "error"
REMOVED = "removed"

LEFT_UNKNOWN = 16 * 1024
"""``left`` announced while the size is unknown: non-zero, so trackers treat us as a leecher."""


class MagnetHandle:
    """What `Session.add_magnet` returns: the magnet's state and, once known, its torrent."""

    def __init__(self, magnet: Magnet) -> None:
        if magnet.info_hash is None:
            raise MagnetError("magnets without a v1 info-hash (v2-only) are not supported")
        self.magnet = magnet
        self.info_hash: bytes = magnet.info_hash
        self.name = magnet.display_name or self.info_hash.hex()
        self.state = FETCHING
        self.error: str | None = None
        self.torrent: Torrent | None = None
        self.fetcher: MetadataFetcher | None = None
        self.from_cache = False
        self.superseded = False
        self._scope = trio.CancelScope()
        self._changed = trio.Event()

    @property
    def metainfo(self) -> Metainfo | None:
        return None if self.torrent is None else self.torrent.metainfo

    def peers(self) -> list[PeerAddress]:
        return [PeerAddress(host, port) for host, port in self.magnet.peers]

    def cancel(self) -> None:
        """Stop fetching (from `Session.remove_torrent`); waiters get `TorrentRemoved`."""
        self._scope.cancel()
        if self.state == FETCHING:
            self._set(REMOVED)

    def _set(self, state: str, *, torrent: Torrent | None = None, error: str | None = None) -> None:
        self.state = state
        self.torrent = torrent or self.torrent
        self.error = error
        self._changed.set()

    async def wait_torrent(self, timeout: float | None = None) -> Torrent:
        """The torrent once the metadata is known; waits at most `timeout` seconds.

        Raises `ReadTimeout` on timeout, `TorrentRemoved` if the magnet was removed, and
        `TorrentfsError` with the reason if its metadata turned out unusable.
        """
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._changed.wait()
        if self.torrent is not None:
            return self.torrent
        if self.state == REMOVED:
            raise TorrentRemoved(f"{self.name}: magnet removed")
        if self.state == ERROR:
            raise TorrentfsError(f"{self.name}: {self.error}")
        raise ReadTimeout(f"{self.name}: metadata not known after {timeout:g} s ({self.summary()})")

    def summary(self) -> str:
        if self.fetcher is None:
            return self.state
        s = self.fetcher.swarm.statistics()
        return (
            f"{s['known']} candidate peers, {s['connected']} connected, "
            f"{s['serving']} serving metadata, {s['banned']} dropped"
        )


async def start_magnet(
    session: Session, magnet: Magnet, *, data_dir: Path | None, download_all: bool
) -> MagnetHandle:
    existing = session.magnets.get(magnet.info_hash) if magnet.info_hash else None
    if existing is not None:
        return existing
    handle = MagnetHandle(magnet)
    session.magnets[handle.info_hash] = handle
    torrent = session.get(handle.info_hash)
    if torrent is not None:  # already known from a .torrent
        handle._set(READY, torrent=torrent)
        return handle
    cached = metadata_cache.load(session.config.state_dir, handle.info_hash)
    if cached is not None:
        handle.from_cache = True
        await _resolved(session, handle, cached, [], data_dir, download_all)
        return handle
    await session._nursery.start(_fetch, session, handle, data_dir, download_all)
    return handle


async def _fetch(
    session: Session,
    handle: MagnetHandle,
    data_dir: Path | None,
    download_all: bool,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    magnet = handle.magnet
    fetcher = MetadataFetcher(
        handle.info_hash,
        peer_id=session.peer_id,
        listen_port=session.listen_port,
        config=FetchConfig(),
        half_open=session._half_open,
        bind_host=session.config.listen_host,
        trackers_factory=_trackers_factory(session, handle) if session.config.trackers else None,
        dht_peers=getattr(session, "dht_peers", None) if session.config.dht else None,
        name=handle.name,
    )
    handle.fetcher = fetcher
    fetcher.add_peers(handle.peers(), "magnet x.pe")
    task_status.started()
    with handle._scope:
        log.info("%s: fetching metadata (%d trackers, %d peers given)",
                 handle.name, len(magnet.trackers), len(magnet.peers))  # fmt: skip
        try:
            info = await fetcher.run()
        except Exception as exc:  # a bug in one fetch must not take the session down
            log.exception("%s: metadata fetch stopped by an internal error", handle.name)
            handle._set(ERROR, error=f"internal error: {exc!r}")
            return
        try:
            await trio.to_thread.run_sync(
                metadata_cache.save, session.config.state_dir, handle.info_hash, info
            )
        except TorrentfsError as exc:
            log.error("%s: %s", handle.name, exc)  # it works now; it is fetched again next time
        with trio.CancelScope(shield=True):  # removal from here on ends the torrent instead
            await _resolved(session, handle, info, fetcher.good_peers, data_dir, download_all)


async def _resolved(
    session: Session,
    handle: MagnetHandle,
    info: bytes,
    good_peers: list[PeerAddress],
    data_dir: Path | None,
    download_all: bool,
) -> None:
    magnet = handle.magnet
    try:
        metainfo = parse_info(
            info,
            expected_info_hash=handle.info_hash,
            trackers=[[t] for t in magnet.trackers],
            web_seeds=magnet.web_seeds,
        )
        torrent = await session.add_torrent(metainfo, data_dir=data_dir, download_all=download_all)
    except TorrentfsError as exc:
        log.error("%s: the magnet's metadata cannot be used: %s", handle.name, exc)
        handle._set(ERROR, error=str(exc))
        return
    if session.magnets.get(handle.info_hash) is not handle and not handle.superseded:
        await session.remove_torrent(handle.info_hash)  # removed while it was being added
        handle._set(REMOVED)
        return
    torrent.add_peers([*good_peers, *handle.peers()], "magnet")
    handle._set(READY, torrent=torrent)


def supersede_magnet(session: Session, info_hash: bytes) -> None:
    """A ``.torrent`` for the same info-hash replaces the magnet: stop fetching its metadata;
    a torrent already made from the magnet stays (it is the same torrent)."""
    handle = session.magnets.pop(info_hash, None)
    if handle is not None:
        handle.superseded = True
        handle.cancel()


def _trackers_factory(session: Session, handle: MagnetHandle) -> Any:
    if not handle.magnet.trackers:
        return None
    from torrentfs.net.tracker_client import TrackerSet, TransferStats

    def make(on_peers: Any) -> TrackerSet:
        return TrackerSet(
            [[url] for url in handle.magnet.trackers],
            info_hash=handle.info_hash,
            peer_id=session.peer_id,
            port=session.listen_port,
            get_stats=lambda: TransferStats(uploaded=0, downloaded=0, left=LEFT_UNKNOWN),
            on_peers=on_peers,
            http_client=session.http_client,
            udp_retransmit_base=session.config.udp_tracker_base_timeout,
            local_host=session.config.listen_host,
        )

    return make
