"""The BitTorrent session (L5): one listener, global limits, and every torrent by info-hash.

`open_session(config)` is an async context manager: it binds the listening sockets (IPv4 and
IPv6), owns the shared HTTP client for trackers, and runs every torrent's supervisor in its own
nursery (DESIGN.md §3 rule 1). Leaving the context stops every torrent (announcing `stopped`
within a bounded time) and closes the listener.

Start-up is on the path to the first piece (a download given its peers starts fetching at
once): the HTTP client (importing httpx, loading the CA bundle: ~0.1 s of CPU) is built on first
use, in a worker thread, while the peers are dialed; and a torrent none of whose files exists
yet is not rechecked piece by piece.

Limits enforced here: total peer connections, half-open (connecting) dials, incoming connections
still handshaking (`max_pending_handshakes`), and a handshake deadline for incoming connections,
so strangers cannot exhaust us.

With ``config.dht`` the session runs one DHT node (BEP 5, `net.dht_node`) on the listen host
(UDP port ``dht_port``, default the listen port): `dht` is that node (None without it), every
non-private torrent that wants peers looks itself up and announces itself there
(`net.dht_announce`), and `dht_peers` serves anyone else who needs peers for an info-hash.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from torrentfs.bitfield import Bitfield
from torrentfs.budget import DiskCache
from torrentfs.errors import ProtocolError, TorrentfsError
from torrentfs.eviction import PinRules
from torrentfs.magnet import Magnet
from torrentfs.magnet_handle import MagnetHandle
from torrentfs.metainfo import Metainfo
from torrentfs.net.dht_node import DhtConfig, DhtError, DhtNode
from torrentfs.net.peer import PeerConnection
from torrentfs.piece_memory import PieceMemory
from torrentfs.stored_check import StoredCheck
from torrentfs.torrent import Torrent, TorrentConfig, TorrentStats
from torrentfs.types import PeerAddress

log = logging.getLogger(__name__)

PEER_ID_PREFIX = b"-TF0100-"
"""Azureus-style client id (BEP 20): TF = torrentfs, version 0.1.0.0."""


def make_peer_id() -> bytes:
    alphabet = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    tail = bytes(alphabet[b % len(alphabet)] for b in secrets.token_bytes(12))
    return PEER_ID_PREFIX + tail


@dataclass
class SessionConfig:
    """Everything a session needs; the CLI and the mount fill it from options."""

    download_dir: Path
    state_dir: Path
    listen_host: str | None = None
    """None: every interface, IPv4 and IPv6. Tests pass 127.0.0.x."""
    listen_port: int = 6881
    upload: bool = True
    dht: bool = False
    trackers: bool = True
    max_connections: int = 200
    max_half_open: int = 16
    max_pending_handshakes: int = 64
    """Incoming connections still handshaking; more are closed at once (connection floods)."""
    handshake_timeout: float = 10.0
    torrent: TorrentConfig = field(default_factory=TorrentConfig)
    recheck: bool = False
    udp_tracker_base_timeout: float = 15.0
    piece_memory: int = 0
    """Bytes of verified pieces kept in memory for reads, over all torrents (`PieceMemory`;
    the mount: a stream's next pieces are served without reading them back from disk)."""
    disk_cache: bool = False
    """Account the download dir's disk use and honour pins (`torrentfs.budget`; the mount)."""
    cache_size: int | None = None
    """With `disk_cache`: keep the download dir within this many bytes (evicting)."""
    pins: tuple[str, ...] = ()
    """With `disk_cache`: pin patterns (`torrentfs.eviction.PinRules`)."""
    dht_port: int | None = None
    """UDP port of the DHT node; None: the same number as the listen port (0: any)."""
    dht_bootstrap: tuple[PeerAddress, ...] = ()
    """Nodes to bootstrap from. Empty here; the command line's default is the public routers."""
    dht_read_only: bool = False
    """BEP 43: answer no DHT query (and tell others so), still look up and announce."""
    drop_written: bool = False
    drop_lag: int | None = None
    """With `drop_written`: bytes written before a range's pages are dropped (None: the
    store's default). The mount sets it past its readahead, so readers find pieces cached."""
    """Write-behind: written data goes to disk at once and leaves the page cache (`FileStore`;
    ``torrentfs download``, not the mount, whose readers want it cached)."""


class Session:
    """All torrents of one process. Create with `open_session`."""

    def __init__(self, config: SessionConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.peer_id = make_peer_id()
        self.torrents: dict[bytes, Torrent] = {}
        self.magnets: dict[bytes, MagnetHandle] = {}
        """Magnets by info-hash, from `add_magnet` until `remove_torrent`."""
        self._scopes: dict[bytes, trio.CancelScope] = {}
        self.checks: dict[bytes, StoredCheck] = {}
        """The check of data found on disk, per torrent (`torrentfs.stored_check`)."""
        self._nursery = nursery
        self._half_open = trio.Semaphore(config.max_half_open)
        self._connections = trio.Semaphore(config.max_connections)
        self._handshaking = 0
        self.listen_port = config.listen_port
        self._http_client: Any = None
        self._http_lock = threading.Lock()
        self._listeners: list[trio.SocketListener] = []
        self.cache: DiskCache | None = None
        self.memory = PieceMemory(config.piece_memory)
        self.dht: DhtNode | None = None

    # ------------------------------------------------------------------ HTTP client

    @property
    def http_client(self) -> Any:
        """The session's one `httpx.AsyncClient` (trackers, web seeds), built on first use.

        Prefer ``await get_http_client()`` from async code: it builds the client off the event
        loop.
        """
        return self._build_http_client()

    async def get_http_client(self) -> Any:
        """The session's `httpx.AsyncClient`; the first call builds it in a worker thread."""
        client = self._http_client
        if client is None:
            client = await trio.to_thread.run_sync(self._build_http_client)
        return client

    def prepare_http(self) -> None:
        """Import the tracker code and build the HTTP client now, in the background, so the
        first announce of the first torrent read goes out at once (the mount calls this at
        start; otherwise both wait for their first use).

        Done on first use, importing httpx and making its TLS context took 0.2-0.3 s of the
        time to a freshly mounted file's first bytes: the announce waited for it. Nothing is
        sent here (idle torrents stay silent); the cost is the import, once per process.
        """
        if not (self.config.trackers or self.config.torrent.web_seeds):
            return

        def prepare() -> None:
            # imported by the first announce otherwise
            import torrentfs.net.dht_announce
            import torrentfs.net.tracker_client  # noqa: F401

            self._build_http_client()

        async def run() -> None:
            try:
                await trio.to_thread.run_sync(prepare)
            except Exception as exc:  # built again, and reported, on first use
                log.debug("preparing the HTTP client failed: %s", exc)

        self._nursery.start_soon(run)

    def _build_http_client(self) -> Any:
        with self._http_lock:
            if self._http_client is None:
                import httpx

                # Announce from the listen address when one is given, so trackers record where
                # peers can reach us (several clients on one machine each have their own
                # 127.0.0.x in tests).
                host = self.config.listen_host
                self._http_client = httpx.AsyncClient(
                    follow_redirects=True,
                    timeout=httpx.Timeout(15.0),
                    trust_env=False,
                    transport=httpx.AsyncHTTPTransport(local_address=host) if host else None,
                )
            return self._http_client

    # ------------------------------------------------------------------ listening

    async def _open_listeners(self) -> None:
        host = self.config.listen_host
        port = self.config.listen_port
        try:
            listeners = await trio.open_tcp_listeners(port, host=host, backlog=128)
        except OSError as exc:
            if port == 0:
                raise
            log.warning("cannot listen on port %d (%s); using a random port", port, exc)
            listeners = await trio.open_tcp_listeners(0, host=host, backlog=128)
        self._listeners = listeners
        self.listen_port = listeners[0].socket.getsockname()[1]
        for listener in listeners:
            self._nursery.start_soon(self._accept_loop, listener)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    log.warning("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                if self._handshaking >= self.config.max_pending_handshakes:
                    log.debug("too many incoming handshakes pending; closing a new connection")
                    await stream.aclose()
                    continue
                self._handshaking += 1
                self._nursery.start_soon(self._incoming, stream)

    async def _incoming(self, stream: trio.SocketStream) -> None:
        try:
            try:
                sockname = stream.socket.getpeername()
            except OSError as exc:  # already gone (connection churn): nothing to answer
                log.debug("incoming connection closed before its handshake: %s", exc)
                await stream.aclose()
                return
            addr = PeerAddress(str(sockname[0]), int(sockname[1]))
            conn = PeerConnection(stream, addr, outgoing=False)
            try:
                with trio.fail_after(self.config.handshake_timeout):
                    hs = await conn.receive_handshake()
            except (TorrentfsError, OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                log.debug("incoming %s: handshake failed: %s", addr, exc or type(exc).__name__)
                await conn.aclose()
                return
        finally:
            self._handshaking -= 1
        torrent = self.torrents.get(hs.info_hash)
        if torrent is None or not torrent.accept(conn, hs):
            await conn.aclose()

    # ------------------------------------------------------------------ torrents

    def _resume_path(self, info_hash: bytes) -> Path:
        return self.config.state_dir / "resume" / f"{info_hash.hex()}.resume"

    async def add_torrent(
        self,
        metainfo: Metainfo,
        *,
        data_dir: Path | None = None,
        download_all: bool = False,
        recheck: bool | None = None,
        wait_checked: bool = True,
    ) -> Torrent:
        """Register a torrent (idempotent by info-hash) and start its supervisor.

        Data lives under `data_dir` (default: the session's download dir) as `<name>/...`.
        Verified pieces are found again from the resume state (read in a worker thread) and,
        for pieces it does not cover, by hashing whatever data is already on disk in the
        torrent's own task (`StoredCheck`), so a crash never loses verified work. With
        ``wait_checked=False`` it returns before that hashing ends (the mount: a torrent shows
        at once, serving what resume state vouched for; `wait_checked` waits later).
        """
        existing = self.torrents.get(metainfo.info_hash)
        if existing is not None:
            return existing
        from torrentfs.storage.files import FileStore
        from torrentfs.storage.resume import ResumeState, ResumeWriter, load_resume_state

        root = data_dir if data_dir is not None else self.config.download_dir
        store = FileStore(
            root, metainfo, drop_written=self.config.drop_written, drop_lag=self.config.drop_lag
        )
        resume_path = self._resume_path(metainfo.info_hash)
        do_recheck = self.config.recheck if recheck is None else recheck
        if do_recheck:
            resume = ResumeState(Bitfield(metainfo.num_pieces), clean=False)
        else:
            resume = await trio.to_thread.run_sync(load_resume_state, resume_path, metainfo, root)
        have = resume.verified
        # What else may be on disk is hashed by the torrent's own task; a torrent none of whose
        # files exists yet has nothing (and holds nothing back from its first dial).
        unknown = []
        if not have.all() and await store.has_data_files():
            unknown = [i for i in range(metainfo.num_pieces) if not have[i]]
        existing = self.torrents.get(metainfo.info_hash)  # added while we looked
        if existing is not None:
            return existing
        writer = ResumeWriter(resume_path, metainfo, root, have, saved=resume.saved_stats())
        torrent = Torrent(
            metainfo,
            store,
            peer_id=self.peer_id,
            listen_port=self.listen_port,
            config=self.config.torrent,
            have=have,
            on_verified=writer.mark_verified,
            trackers_factory=self._make_peer_sources,
            half_open=self._half_open,
            global_peers=self._connections,
            bind_host=self.config.listen_host,
            get_http_client=self.get_http_client,
            dht=None if metainfo.private else self.dht,  # BEP 27: private means no DHT
        )
        torrent.memory = self.memory
        if download_all:
            torrent.picker.set_download_all(True)
        self.torrents[metainfo.info_hash] = torrent
        # Whatever else is on disk (verified after the last save, a changed file, --recheck)
        # is hashed in the torrent's own task; the torrent is usable meanwhile.
        check = StoredCheck(torrent, store, unknown, trusted=have.count())
        self.checks[metainfo.info_hash] = check
        scope = trio.CancelScope()
        self._scopes[metainfo.info_hash] = scope
        await self._nursery.start(self._run_torrent, torrent, store, writer, scope)
        if self.cache is not None:
            self.cache.register(torrent, store, writer)
        if download_all:
            torrent.set_download_all(True)
        if wait_checked:
            await check.done.wait()
        if check.trusted:
            log.info(
                "%s: %d of %d pieces verified by resume state",
                metainfo.name,
                check.trusted,
                metainfo.num_pieces,
            )
        return torrent

    async def _run_torrent(
        self,
        torrent: Torrent,
        store: Any,
        writer: Any,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(torrent.run)
                    nursery.start_soon(writer.run, store)
                    nursery.start_soon(self._check_stored, torrent)
                    task_status.started()
        except Exception as exc:  # a bug in one torrent must not take the session down
            torrent.error = f"internal error: {exc!r}"
            torrent.close()
            log.exception("%s: torrent stopped by an internal error", torrent.metainfo.name)
        finally:
            if self.cache is not None:
                self.cache.unregister(torrent)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await writer.flush(store)
                except TorrentfsError as exc:
                    log.error("%s: cannot save resume state: %s", torrent.metainfo.name, exc)
                await store.aclose()
            self.torrents.pop(torrent.info_hash, None)
            self._scopes.pop(torrent.info_hash, None)
            self.checks.pop(torrent.info_hash, None)

    async def _check_stored(self, torrent: Torrent) -> None:
        check = self.checks[torrent.info_hash]
        await check.run()
        torrent.stored_check_done()

    async def wait_checked(self, info_hash: bytes) -> StoredCheck | None:
        """Until the data found on disk at `add_torrent` is verified (None: no such torrent)."""
        check = self.checks.get(info_hash)
        if check is not None:
            await check.done.wait()
        return check

    def _make_peer_sources(self, torrent: Torrent) -> Any:
        from torrentfs.net.dht_announce import DhtAnnouncer, PeerSources
        from torrentfs.net.tracker_client import make_tracker_set

        sources: list[Any] = []
        if self.config.trackers and torrent.metainfo.trackers:
            sources.append(make_tracker_set(self, torrent))
        if torrent.dht is not None:
            port = self.listen_port if self.config.upload else None
            sources.append(
                DhtAnnouncer(torrent.dht, torrent.info_hash, torrent.add_peers, port=port)
            )
        return PeerSources(sources) if sources else None

    async def _start_dht(self) -> None:
        config = self.config
        host = config.listen_host or "0.0.0.0"
        port = self.listen_port if config.dht_port is None else config.dht_port
        node = DhtNode(
            DhtConfig(
                host=host,
                port=port,
                bootstrap=config.dht_bootstrap,
                state_dir=config.state_dir,
                read_only=config.dht_read_only,
            )
        )
        try:
            await self._nursery.start(node.run)
        except (DhtError, OSError) as exc:
            log.warning("DHT disabled: %s", exc)
            return
        self.dht = node

    async def dht_peers(self, info_hash: bytes) -> list[PeerAddress]:
        """Peers for `info_hash` from one DHT lookup (bounded); [] without a DHT."""
        if self.dht is None:
            return []
        try:
            found = await self.dht.get_peers(info_hash)
        except DhtError as exc:
            log.debug("DHT lookup of %s failed: %s", info_hash.hex(), exc)
            return []
        return found.addresses

    async def add_magnet(
        self, magnet: Magnet, *, data_dir: Path | None = None, download_all: bool = False
    ) -> MagnetHandle:
        """Register a magnet (idempotent by info-hash): its metadata is fetched from peers
        (BEP 9) unless the state dir has it, then it becomes an ordinary `Torrent` (`get`).

        Returns at once; `MagnetHandle.wait_torrent` waits (bounded) for the torrent.
        """
        from torrentfs.magnet_handle import start_magnet

        return await start_magnet(self, magnet, data_dir=data_dir, download_all=download_all)

    async def remove_torrent(self, info_hash: bytes) -> None:
        handle = self.magnets.pop(info_hash, None)
        if handle is not None:
            handle.cancel()  # a metadata fetch in progress ends; waiters get TorrentRemoved
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return
        torrent.close()
        scope = self._scopes.get(info_hash)
        if scope is not None:
            scope.cancel()

    def get(self, info_hash: bytes) -> Torrent | None:
        return self.torrents.get(info_hash)

    def statistics(self) -> list[TorrentStats]:
        return [t.statistics() for t in self.torrents.values()]


@asynccontextmanager
async def open_session(config: SessionConfig) -> AsyncIterator[Session]:
    """Start a session; leaving the block stops every torrent and the listener."""
    config.download_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "resume").mkdir(parents=True, exist_ok=True)
    session: Session | None = None
    try:
        async with trio.open_nursery() as nursery:
            session = Session(config, nursery)
            await session._open_listeners()
            if config.disk_cache:
                session.cache = DiskCache(
                    config.download_dir,
                    config.cache_size,
                    rules=PinRules(config.pins),
                )
                await nursery.start(session.cache.run)
            if config.dht:
                await session._start_dht()
            try:
                yield session
            finally:
                if session.memory.limit:
                    st = session.memory.statistics()
                    log.info("piece memory: %d reads from memory, %d from disk", st.hits, st.misses)
                for info_hash in [*session.magnets, *session.torrents]:
                    await session.remove_torrent(info_hash)
                with trio.move_on_after(5) as scope:
                    scope.shield = True
                    while session.torrents:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    finally:
        client = session._http_client if session is not None else None
        if client is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await client.aclose()


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return Path(base) / "torrentfs"


def default_download_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torrentfs"


__all__ = ["ProtocolError", "Session", "SessionConfig", "open_session"]
