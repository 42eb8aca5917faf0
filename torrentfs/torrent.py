"""One torrent's supervisor (L5): peers, requests, verification, storage, wants and reads.

What it guarantees:
- **Only wanted pieces are fetched** (DESIGN.md §5): the picker holds the wants (reader windows,
  `download_all`); with no want and nothing to seed, the torrent opens no connection at all.
- **Only verified data is served** (rule 6): a piece becomes readable after its SHA-1 matched
  (BEP 3), was written, and its waiters are woken; failed pieces are discarded and re-fetched,
  and peers that keep sending bad data are banned.
- **Every task has a parent** (rule 1): all tasks run in the torrent's nursery, started by
  `run()`, which the session starts in its own nursery; `close()` ends them all.
- **Every wait is bounded** (rule 4): reads take a timeout; handshakes, idle peers and requests time
  out; a peer that stalls loses only its own connection.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import itertools
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from torrentfs import pex
from torrentfs.bitfield import Bitfield
from torrentfs.choker import Choker, PeerView
from torrentfs.errors import (
    ProtocolError,
    ReadTimeout,
    StorageError,
    TorrentfsError,
    TorrentRemoved,
)
from torrentfs.metainfo import Metainfo
from torrentfs.net.peer import PeerConnection
from torrentfs.net.webseed import WebSeed, WebSeedConfig, parse_web_seed_url
from torrentfs.picker import PiecePicker, Priority
from torrentfs.piece_memory import PieceMemory
from torrentfs.rate import RateMeter
from torrentfs.types import BLOCK_SIZE, PeerAddress
from torrentfs.wire import extension, ut_metadata, ut_pex
from torrentfs.wire import messages as m
from torrentfs.wire.handshake import Handshake

if TYPE_CHECKING:
    from torrentfs.net.dht_node import DhtNode
    from torrentfs.storage.base import PieceStore

log = logging.getLogger(__name__)

CLIENT_VERSION = "torrentfs 0.1"

MAX_KNOWN_PEERS = 2000
"""Candidate addresses kept per torrent (trackers, PEX, DHT); more are ignored until some are
dropped, so a peer list of millions costs no memory (libtorrent keeps 3000)."""
MAX_UNREQUESTED_BLOCKS = 2000
"""Blocks in a row we did not ask a peer for (or asked long ago) before it is dropped: more than
any honest peer sends after our cancels (our pipeline holds at most `max_pipeline` requests)."""
RUSH_KEEP = 32
"""Requests a peer keeps ahead of a read's rushed pieces (`Torrent._rush`): the oldest, most
likely on the wire already; cancelling those would only have them sent twice."""
LATE_BLOCKS_KEPT = 4096
"""Requests per peer remembered after they timed out or a choke dropped them, so that a block
arriving late is still accepted from the peer we asked (and never from one we did not)."""


@dataclass
class TorrentConfig:
    """Per-torrent limits and switches (filled from the session's configuration)."""

    max_peers: int = 50
    upload: bool = True
    request_timeout: float = 10.0
    handshake_timeout: float = 10.0
    idle_timeout: float = 150.0
    keepalive_interval: float = 60.0
    min_pipeline: int = 32
    max_pipeline: int = 1500
    pipeline_seconds: float = 0.5
    max_peer_requests: int = 500
    hash_failures_to_ban: int = 3
    verify_workers: int = 2
    storage_retry: float = 5.0
    """After a failed write (disk full...): seconds during which reads of missing data fail at
    once with the write's errno and no new blocks are requested; then one more try."""
    pex: bool = True
    """BEP 11 peer exchange (never for private torrents)."""
    web_seeds: bool = True
    """BEP 19 web seeds (``url-list``, magnet ``ws``)."""
    web_seed: WebSeedConfig = field(default_factory=WebSeedConfig)


@dataclass
class TorrentStats:
    """A snapshot for status displays and xattrs (`statistics()`)."""

    info_hash: str
    name: str
    state: str
    peers: int
    seeds: int
    download_rate: float
    upload_rate: float
    downloaded: int
    uploaded: int
    verified_bytes: int
    total_size: int
    progress: float
    pieces_verified: int
    num_pieces: int
    hash_failures: int
    banned: int
    file_progress: list[float] = field(default_factory=list)


class DiskHooks:
    """What a torrent tells the disk budget (`torrentfs.budget.DiskCache` overrides these);
    this default, for a session without a budget, does nothing."""

    def room_for(self, torrent: Torrent, piece: int) -> AbstractAsyncContextManager[object]:
        """Held while `piece` is written: the budget makes room for it first."""
        return nullcontext()

    def pieces_read(self, torrent: Torrent, pieces: range) -> None:
        """`pieces` were just read (least-recently-read order)."""


class Peer:
    """Our view of one connected peer (BEP 3 state plus pipelining and trust)."""

    _ids = itertools.count()

    def __init__(self, conn: PeerConnection, torrent: Torrent) -> None:
        self.uid = next(Peer._ids)
        self.conn = conn
        self.address = conn.address
        self.torrent = torrent
        self.peer_id = b""
        self.fast = False
        self.extensions = False
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.is_seed = False
        self.pipeline = torrent.config.min_pipeline
        self.download = RateMeter()
        self.upload = RateMeter()
        self.last_received = 0.0
        self.last_sent = 0.0
        self.snubbed = False
        self.choked_with_requests = False
        self.allowed_fast: set[int] = set()
        self.ext_ids: dict[str, int] = {}
        self.reqq = 250
        self.client = ""
        self.pending_uploads = 0
        self.listen_port: int | None = None
        """From the BEP 10 handshake's ``p``: where an incoming peer can be dialled."""
        self.pex = pex.PexConnection()
        self.unrequested = 0
        """Blocks received in a row that we never asked this peer for (hostile-peer cap)."""
        self.late_ok: set[tuple[int, int]] = set()
        """(piece, begin) asked of this peer whose request expired or was dropped by a choke."""

    def __repr__(self) -> str:
        return f"<Peer {self.address}>"


class PieceBuffer:
    """Blocks of a piece being assembled in memory, and who sent them (for blame on hash fail)."""

    __slots__ = ("contributors", "data", "early", "hashed", "hasher", "received")

    def __init__(self, size: int, data: bytearray | None = None) -> None:
        self.data = bytearray(size) if data is None else data
        self.received = 0
        self.contributors: set[Peer | WebSeed] = set()
        self.hasher: Any = None
        """SHA-1 of ``data[:hashed]``, kept up as blocks arrive (`Torrent._store_block`)."""
        self.hashed = 0
        self.early: dict[int, int] = {}
        """Blocks stored past ``hashed`` (begin -> length): a seeder reading its disk with
        several threads sends a piece's blocks out of order."""

    def hash_arrived(self, begin: int, size: int) -> None:
        """The block ``[begin, begin+size)`` is in ``data``: extend the hash over it and over
        the blocks that came early and now follow on, or remember it for later."""
        if begin != self.hashed:
            if begin > self.hashed:
                self.early[begin] = size
            else:
                self.hasher = None  # cannot happen (a block is accepted once): hashed apart
            return
        end = begin + size
        early = self.early
        while end in early:
            end += early.pop(end)
        self.hasher.update(memoryview(self.data)[begin:end])
        self.hashed = end


SPARE_BUFFER_BYTES = 16 * 1024 * 1024
"""Piece buffers kept for reuse once their piece is hashed and written (at least two). A fresh
1 MiB ``bytearray`` per piece costs a zero-fill and page faults on memory the allocator just
gave back; a reused one is already mapped and cache-warm. Every byte of a reused buffer is
overwritten by the piece's blocks before it is hashed (a piece completes only when all its
blocks arrived), so no byte of an earlier piece can leak into a later one."""


class Want:
    """A registration "I want bytes [offset, offset+length) by `deadline`" (dropped on release)."""

    def __init__(self, torrent: Torrent, want_id: int) -> None:
        self._torrent = torrent
        self.want_id = want_id
        self.active = False

    def update(
        self, offset: int, length: int, *, priority: Priority, deadline: float | None
    ) -> None:
        self._torrent._set_want(self.want_id, offset, length, priority, deadline)
        self.active = True

    def drop(self) -> None:
        if self.active:
            self._torrent._drop_want(self.want_id)
            self.active = False


class Torrent:
    """The per-torrent supervisor. Construct, then `await nursery.start(torrent.run)`."""

    def __init__(
        self,
        metainfo: Metainfo,
        store: PieceStore,
        *,
        peer_id: bytes,
        listen_port: int,
        config: TorrentConfig,
        have: Bitfield | None = None,
        on_verified: Callable[[int], None] | None = None,
        trackers_factory: Callable[[Torrent], Any] | None = None,
        half_open: trio.Semaphore | None = None,
        global_peers: trio.Semaphore | None = None,
        bind_host: str | None = None,
        get_http_client: Callable[[], Awaitable[Any]] | None = None,
        dht: DhtNode | None = None,
    ) -> None:
        self.bind_host = bind_host
        self._get_http_client = get_http_client
        """Returns the session's httpx.AsyncClient (web seeds), built on first use; None: no
        web seeds."""
        self.dht = dht
        """Our DHT node (BEP 5): set the handshake bit, send and take ``port`` messages."""
        self.metainfo = metainfo
        self.info_hash = metainfo.info_hash
        self.geometry = metainfo.geometry
        self.store = store
        self.peer_id = peer_id
        self.listen_port = listen_port
        self.config = config
        self.have = have if have is not None else Bitfield(metainfo.num_pieces)
        self.picker: PiecePicker[Peer | WebSeed] = PiecePicker(self.geometry, self.have)
        self.peers: dict[Peer, None] = {}
        self.web_seeds: list[WebSeed] = []
        self._pex_budget = pex.PexBudget()
        self.known: dict[PeerAddress, float] = {}
        """Peers we may dial -> earliest time to try again."""
        self.failures: dict[PeerAddress, int] = {}
        self.banned: set[str] = set()
        self.buffers: dict[int, PieceBuffer] = {}
        self._piece_events: dict[int, trio.Event] = {}
        self._want_ids = itertools.count(1)
        self._want_ranges: dict[int, tuple[int, int, Priority]] = {}
        self._on_verified = on_verified
        self._trackers_factory = trackers_factory
        self._trackers: Any = None
        self._half_open = half_open or trio.Semaphore(16)
        self._global_peers = global_peers
        self._nursery: trio.Nursery | None = None
        self._active = False
        self._closed = False
        self._dial_wake = trio.Event()
        self._dialing = 0
        self._verify_send, self._verify_recv = trio.open_memory_channel[
            tuple[int, bytearray, set[Peer | WebSeed], bytes | None, bool]
        ](8)
        self._completed: list[tuple[int, bytearray, set[Peer | WebSeed], bytes | None]] = []
        """Pieces whose last block just arrived, on their way to the verifiers."""
        self._spare_buffers: list[bytearray] = []
        self._writing: set[int] = set()
        """Pieces being hashed and written: their buffers are in use (`_hold`)."""
        """Full-size piece buffers free for reuse (`SPARE_BUFFER_BYTES`)."""
        self._max_spare_buffers = max(2, SPARE_BUFFER_BYTES // metainfo.piece_length)
        self._upload_cache: OrderedDict[int, bytes] = OrderedDict()
        self._choker: Choker[Peer] = Choker(slots=4)
        self.download = RateMeter()
        self.upload = RateMeter()
        self.hash_failures = 0
        self.downloaded = 0
        self.uploaded = 0
        self.error: str | None = None
        self._storage_error: StorageError | None = None
        self._written_one = False
        """A piece was written since the start or the last failed write (`_serve_first`)."""
        self._storage_retry_at = -math.inf
        self._rng = random.Random()
        self._pieces_verified = self.have.count()
        self._complete_event = trio.Event()
        if self.have.all():
            self._complete_event.set()
        self.started_at = 0.0
        self.first_piece_at: float | None = None
        self.cache: DiskHooks = DiskHooks()
        self.memory = PieceMemory(0)
        """Verified pieces kept in memory for reads (the session's, shared by its torrents)."""
        self._in_use: dict[int, int] = {}
        self._open_handles = 0
        """Open file handles on this torrent (`open_handle`): interest is kept meanwhile."""

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (by `close()` or the session): supervisor of every task here."""
        self.started_at = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for _ in range(self.config.verify_workers):
                    nursery.start_soon(self._verifier)
                if self.config.upload and self.have.any():
                    self._activate()
                task_status.started()
        finally:
            self._closed = True
            self._wake_all_waiters()
            self.memory.drop_owner(self)

    def close(self) -> None:
        self._closed = True
        self._wake_all_waiters()
        self.memory.drop_owner(self)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    @property
    def complete(self) -> bool:
        return self.have.all()

    async def wait_complete(self) -> None:
        await self._complete_event.wait()
        if self._closed and not self.have.all():
            raise TorrentRemoved(f"{self.metainfo.name}: torrent closed")

    def add_peers(self, addresses: list[PeerAddress], source: str = "tracker") -> None:
        """New candidate peers (tracker, PEX, magnet x.pe, DHT)."""
        added = 0
        for addr in addresses:
            if addr.host in self.banned or addr in self.known:
                continue
            if addr.port == self.listen_port and addr.host in ("127.0.0.1", "::1", "0.0.0.0"):
                continue
            if len(self.known) >= MAX_KNOWN_PEERS:
                break
            self.known[addr] = 0.0
            added += 1
        if added:
            log.debug("%s: %d new peers from %s", self.metainfo.name, added, source)
            self._dial_wake.set()

    def _activate(self) -> None:
        """First want (or seeding): start announcing and dialing. Idle torrents stay silent."""
        if self._active or self._nursery is None or self._closed:
            return
        self._active = True
        if self._trackers_factory is not None:
            self._trackers = self._trackers_factory(self)
            if self._trackers is not None:
                self._nursery.start_soon(self._trackers.run)
        self._nursery.start_soon(self._dialer)
        self._nursery.start_soon(self._ticker)
        self._dial_wake.set()
        self.add_web_seeds(self.metainfo.web_seeds)

    # ------------------------------------------------------------------ wants and reads

    def new_want(self) -> Want:
        return Want(self, next(self._want_ids))

    def open_handle(self) -> None:
        """A file of this torrent was opened: until the last handle closes, stay interested in
        every peer that has pieces we lack, even between reads.

        A read that finds us not interested must first say ``interested`` and wait to be
        unchoked (a seeder such as libtorrent chokes a peer as soon as it loses interest) before
        its request can go out: a round trip and the seeder's choke logic on every random read.
        Interest asks for nothing: only wanted pieces are ever requested.
        """
        self._open_handles += 1

    def close_handle(self) -> None:
        """The matching close of `open_handle`. With the last one closed, interest follows the
        wants again: an idle torrent tells its peers it wants nothing (and is choked)."""
        self._open_handles = max(0, self._open_handles - 1)
        if not self._open_handles:
            for peer in list(self.peers):
                if peer.am_interested:
                    self._update_interest(peer)

    def want_range(
        self, offset: int, length: int, *, priority: Priority, deadline: float | None
    ) -> Want:
        want = self.new_want()
        want.update(offset, length, priority=priority, deadline=deadline)
        return want

    def _set_want(
        self, want_id: int, offset: int, length: int, priority: Priority, deadline: float | None
    ) -> None:
        if self._closed:
            return
        length = min(length, self.metainfo.total_size - offset)
        if length <= 0:
            self._drop_want(want_id)
            return
        pieces = self.geometry.pieces_for_range(offset, length)
        key = (pieces.start, pieces.stop, priority)
        old = self._want_ranges.get(want_id)
        if old == key:
            return  # the same pieces at the same priority: nothing for the picker to redo
        self._want_ranges[want_id] = key
        self.picker.add_want(want_id, pieces.start, pieces.stop - 1, priority, deadline)
        if old is not None:
            # A moved window (a seek): requests for pieces it no longer covers must not hold
            # up the bytes wanted now.
            self._cancel_unwanted(range(old[0], old[1]), keep=pieces)
        if not self._have_all(pieces):
            self._activate()
            self._on_wants_changed()

    def _drop_want(self, want_id: int) -> None:
        old = self._want_ranges.pop(want_id, None)
        self.picker.remove_want(want_id)
        if old is None:
            return
        dropped = range(old[0], old[1])
        if not self._have_all(dropped):
            # Only a range with missing pieces can leave requests nobody wants, or end the
            # interest in a peer; a read's NOW want dropped after its pieces came cannot.
            self._cancel_unwanted(dropped)
            self._on_wants_changed()

    def _have_all(self, pieces: range) -> bool:
        return self.have.all_in(pieces.start, pieces.stop)

    def _cancel_unwanted(self, pieces: range, keep: range = range(0)) -> None:
        """Withdraw requests for those of `pieces` nobody wants any more (a seek moved the
        window away, a handle was released).

        Otherwise an urgent read queues behind them at the peer: head-of-line blocking. Costs
        nothing when no piece of `pieces` lost its last want while still missing.
        """
        picker = self.picker
        have = self.have
        lost = {p for p in pieces if p not in keep and not have[p] and not picker.is_wanted(p)}
        if not lost:
            return
        for peer in list(self.peers):
            stale = [r for r in picker.requests_of(peer) if r[0] in lost]
            for piece, begin, _length in stale:
                picker.request_failed(piece, begin, peer)
            if stale:
                peer.conn.queue(b"".join(m.encode(m.Cancel(*r)) for r in stale))

    def set_download_all(self, enabled: bool = True) -> None:
        self.picker.set_download_all(enabled)
        if enabled and not self.have.all():
            self._activate()
        self._on_wants_changed()

    def _on_wants_changed(self) -> None:
        for peer in list(self.peers):
            self._update_interest(peer)
            self._fill_requests(peer)
        for seed in self.web_seeds:
            seed.wake()

    def have_range(self, offset: int, length: int) -> bool:
        if length <= 0:
            return True
        return self._have_all(self.geometry.pieces_for_range(offset, length))

    async def _wait_piece(self, piece: int, *, written: bool = False) -> None:
        """Until `piece` is verified: on disk, or (unless `written`) held in `memory` on its
        way there. Unbounded: only for callers that bound it (`read`'s timeout)."""
        while not self.have[piece] and (written or not self.memory.holds(self, piece)):
            if self._closed:
                raise TorrentRemoved(f"{self.metainfo.name}: torrent removed")
            self._raise_storage_error()
            event = self._piece_events.get(piece)
            if event is None:
                event = self._piece_events[piece] = trio.Event()
            await event.wait()

    async def read(self, offset: int, length: int, *, timeout: float) -> bytes:
        """Exactly the verified bytes of [offset, offset+length) (short only at the end).

        Registers a NOW want for what is missing, waits at most `timeout`, then raises
        `ReadTimeout` naming the piece and the swarm state.
        """
        if self._closed:
            raise TorrentRemoved(f"{self.metainfo.name}: torrent removed")
        length = max(0, min(length, self.metainfo.total_size - offset))
        if length == 0:
            return b""
        pieces = self.geometry.pieces_for_range(offset, length)
        with self._holding(pieces):  # not evicted for the disk budget while we read them
            missing = [p for p in pieces if not self.have[p]]
            if missing:
                want = self.want_range(
                    offset, length, priority=Priority.NOW, deadline=trio.current_time()
                )
                self._rush(missing)
                try:
                    with trio.move_on_after(timeout):
                        for p in missing:
                            await self._wait_piece(p)
                        missing = []
                    if missing:
                        first = next((p for p in missing if not self.have[p]), missing[0])
                        raise ReadTimeout(
                            f"{self.metainfo.name}: piece {first} not available after "
                            f"{timeout:g} s ({self.swarm_summary()})"
                        )
                finally:
                    want.drop()
            if self.memory.limit:
                data = await self._read_verified(offset, length, pieces, timeout)
            else:
                data = await self.store.read_range(offset, length)
        self.cache.pieces_read(self, pieces)
        return data

    async def _read_verified(
        self, offset: int, length: int, pieces: range, timeout: float
    ) -> bytes:
        """The bytes of verified `pieces`: parts of pieces held in `memory` from there, the
        others from the store (one read per run of them) once written. A piece verified and
        held while it was written may have been pushed out of memory by newer pieces before
        this read ran: its write is on the way, and waited for (at most `timeout`)."""
        memory = self.memory
        geometry = self.geometry
        end = offset + length
        parts: list[bytes] = []
        disk_from: int | None = None  # start of the current run of bytes to read from disk
        for p in pieces:
            start = geometry.piece_offset(p)
            begin = max(offset, start)
            stop = min(end, start + geometry.piece_size(p))
            part = memory.read(self, p, begin - start, stop - begin)
            if part is None:
                if not self.have[p]:
                    await self._wait_written(p, timeout)
                if disk_from is None:
                    disk_from = begin
                continue
            if disk_from is not None:
                parts.append(await self.store.read_range(disk_from, begin - disk_from))
                disk_from = None
            parts.append(part)
        if disk_from is not None:
            parts.append(await self.store.read_range(disk_from, end - disk_from))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _wait_written(self, piece: int, timeout: float) -> None:
        """Until verified `piece` is on disk (`have`), at most `timeout`."""
        with trio.move_on_after(timeout):
            await self._wait_piece(piece, written=True)
            return
        raise ReadTimeout(f"{self.metainfo.name}: piece {piece} not written after {timeout:g} s")

    def _rush(self, pieces: Sequence[int]) -> None:
        """A read waits on `pieces`: their unrequested blocks go out now, all of them, to the
        fastest unchoked peer that has them, ahead of its queued readahead.

        The normal path asks for them only once a peer's pipeline has room, behind up to
        `TorrentConfig.max_pipeline` readahead blocks the peer serves first (in order, BEP 3):
        a random read would then wait for the transfer of everything queued before it. So the
        requests of that peer that are queued ahead of the read's, beyond the oldest
        `RUSH_KEEP`, are cancelled and asked again behind them -- except those of pieces other
        reads wait on (a stream's concurrent kernel reads never reorder each other).
        """
        now = trio.current_time()
        if now < self._storage_retry_at:
            return
        picker = self.picker
        best: Peer | None = None
        best_rate = -1.0
        for peer in self.peers:
            if peer.peer_choking or not any(picker.peer_has(peer, p) for p in pieces):
                continue
            rate = peer.download.rate(now)
            if rate > best_rate:
                best, best_rate = peer, rate
        if best is None:
            return  # choked by all, or nobody has them: asked as soon as a peer can
        if not best.am_interested:
            self._update_interest(best)
        blocks = picker.pick_pieces(best, pieces, now)
        if not blocks and not any(
            picker.is_requested(best, p, begin)
            for p in pieces
            for begin in range(0, self.geometry.piece_size(p), BLOCK_SIZE)
        ):
            return  # nothing of this read is asked of `best` (verifying, or another peer's)
        rushed = set(pieces)
        urgent = [range(a, b) for a, b, prio in self._want_ranges.values() if prio >= Priority.NOW]
        ahead: list[tuple[int, int, int]] = []
        for request in picker.iter_requests_of(best):
            piece = request[0]
            if piece in rushed:
                break  # `blocks` were just recorded: a request of ours ends the scan
            if not any(piece in r for r in urgent):
                ahead.append(request)
        later = ahead[RUSH_KEEP:]
        if not blocks and not later:
            return
        for piece, begin, _length in later:
            picker.request_failed(piece, begin, best)
        self._remember_late(best, later)
        out = [m.encode(m.Cancel(*r)) for r in later]
        if blocks:
            out.append(m.encode_request_batch(blocks))
        best.conn.queue(b"".join(out))
        best.last_sent = now
        if later:
            self._fill_requests(best)

    # ------------------------------------------------------------------ disk budget hooks

    @contextmanager
    def _holding(self, pieces: Iterable[int]) -> Iterator[None]:
        """Pieces being read or uploaded: never evicted meanwhile (`evictable`)."""
        held = list(pieces)
        in_use = self._in_use
        for p in held:
            in_use[p] = in_use.get(p, 0) + 1
        try:
            yield
        finally:
            for p in held:
                left = in_use[p] - 1
                if left:
                    in_use[p] = left
                else:
                    del in_use[p]

    def evictable(self, piece: int) -> bool:
        """Verified, wanted by no open handle (no picker want), and not being read now."""
        return self.have[piece] and not self.picker.is_wanted(piece) and piece not in self._in_use

    def piece_evicted(self, piece: int) -> None:
        """`piece` is going off disk (disk budget): missing again, fetched again on demand."""
        if not self.have[piece]:
            return
        self.picker.piece_lost(piece)
        self._pieces_verified -= 1
        self._upload_cache.pop(piece, None)
        self.memory.discard(self, piece)
        if self._complete_event.is_set() and not self._closed:
            self._complete_event = trio.Event()

    def _raise_storage_error(self) -> None:
        """While the last write failed (and its retry is not due), missing data cannot come."""
        exc = self._storage_error
        if exc is not None and trio.current_time() < self._storage_retry_at:
            raise StorageError(f"{self.metainfo.name}: {exc}", errno=exc.errno)

    def _storage_failed(self, index: int, exc: StorageError) -> None:
        """A verified piece could not be written: one log line, its waiters fail with the
        write's errno, no new requests until `TorrentConfig.storage_retry` has passed."""
        if self._storage_error is None:
            log.error(
                "%s: cannot store piece %d: %s; reads of missing data fail with %s, "
                "retrying every %g s",
                self.metainfo.name,
                index,
                exc,
                errno.errorcode.get(exc.errno or errno.EIO, exc.errno),
                self.config.storage_retry,
            )
        else:
            log.debug("%s: still cannot store piece %d: %s", self.metainfo.name, index, exc)
        self._storage_error = exc
        self._written_one = False
        self._storage_retry_at = trio.current_time() + self.config.storage_retry
        self.error = str(exc)
        self.picker.piece_failed(index)
        event = self._piece_events.pop(index, None)
        if event is not None:
            event.set()  # its waiters see the error (`_raise_storage_error`)

    def _storage_works(self) -> None:
        self._written_one = True
        if self._storage_error is not None:
            log.info("%s: storing pieces works again", self.metainfo.name)
            self._storage_error = None
            self.error = None

    def swarm_summary(self) -> str:
        seeds = sum(1 for p in self.peers if p.is_seed)
        unchoked = sum(1 for p in self.peers if not p.peer_choking)
        web = "".join(f", web seed {w.address} {w.state()}" for w in self.web_seeds)
        return (
            f"{len(self.peers)} peers, {seeds} seeds, {unchoked} unchoking us, "
            f"{len(self.known)} known, {self.download.rate(trio.current_time()) / 1e6:.1f} MB/s"
            f"{web}"
        )

    # ------------------------------------------------------------------ dialing

    async def _dialer(self) -> None:
        while True:
            with trio.move_on_after(2.0):
                await self._dial_wake.wait()
            self._dial_wake = trio.Event()
            if not self._wants_peers():
                continue
            now = trio.current_time()
            connected = {p.address for p in self.peers}
            candidates = [a for a, t in self.known.items() if t <= now and a not in connected]
            self._rng.shuffle(candidates)
            room = self.config.max_peers - len(self.peers) - self._dialing
            for addr in candidates[: max(0, room)]:
                self.known[addr] = now + 30.0 * (1 + self.failures.get(addr, 0))
                assert self._nursery is not None
                self._nursery.start_soon(self._dial, addr)

    def _wants_peers(self) -> bool:
        return self.picker.missing_wanted_count() > 0

    async def _dial(self, addr: PeerAddress) -> None:
        self._dialing += 1
        try:
            conn_hs = await self._connect(addr)
        finally:
            self._dialing -= 1
        if conn_hs is not None:
            await self._run_peer(*conn_hs)

    async def _connect(self, addr: PeerAddress) -> tuple[PeerConnection, Handshake] | None:
        """Dial and handshake (bounded by `handshake_timeout`); None if that failed."""
        async with self._half_open:
            try:
                with trio.fail_after(self.config.handshake_timeout):
                    stream = await trio.open_tcp_stream(
                        addr.host, addr.port, local_address=self._local_address_for(addr.host)
                    )
            except (OSError, trio.TooSlowError) as exc:
                self.failures[addr] = self.failures.get(addr, 0) + 1
                log.debug("%s: connect to %s failed: %s", self.metainfo.name, addr, exc)
                return None
        conn = PeerConnection(stream, addr, outgoing=True)
        try:
            with trio.fail_after(self.config.handshake_timeout):
                await conn.send_handshake(self._our_handshake())
                hs = await conn.receive_handshake()
            if hs.info_hash != self.info_hash:
                raise ProtocolError("peer answered with another info-hash")
        except (TorrentfsError, OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            self.failures[addr] = self.failures.get(addr, 0) + 1
            log.debug("%s: handshake with %s failed: %s", self.metainfo.name, addr, exc)
            await conn.aclose()
            return None
        return conn, hs

    def _local_address_for(self, host: str) -> str | None:
        """Dial from our listen address (same family only), so peers see where we listen."""
        bind = self.bind_host
        if bind is None or (":" in bind) != (":" in host):
            return None
        return bind

    def _our_handshake(self) -> Handshake:
        return Handshake.ours(self.info_hash, self.peer_id, dht=self.dht is not None)

    def accept(self, conn: PeerConnection, hs: Handshake) -> bool:
        """An incoming connection whose handshake named this torrent (from the listener)."""
        if self._nursery is None or self._closed:
            return False
        if not self._active:
            if not (self.config.upload and self.have.any()):
                return False  # idle and nothing to seed: stay silent
            self._activate()
        if conn.address.host in self.banned or len(self.peers) >= self.config.max_peers:
            return False
        self._nursery.start_soon(self._accepted, conn, hs)
        return True

    async def _accepted(self, conn: PeerConnection, hs: Handshake) -> None:
        try:
            with trio.fail_after(self.config.handshake_timeout):
                await conn.send_handshake(self._our_handshake())
        except (OSError, trio.TooSlowError, trio.BrokenResourceError):
            await conn.aclose()
            return
        await self._run_peer(conn, hs)

    # ------------------------------------------------------------------ one peer

    async def _run_peer(self, conn: PeerConnection, hs: Handshake) -> None:
        if hs.peer_id == self.peer_id:
            self.known.pop(conn.address, None)
            await conn.aclose()
            return
        if conn.address.host in self.banned or len(self.peers) >= self.config.max_peers:
            await conn.aclose()
            return
        host = conn.address.host
        if any(p.peer_id == hs.peer_id and p.address.host == host for p in self.peers):
            # The peer dialled us while we dialled it: two pipelines to one peer only ask it
            # for blocks twice (time-critical and endgame duplicates are meant for *another*
            # peer), a third of a stream's bandwidth wasted. Keep the first connection. (The
            # same id from another address is another peer: ids are not unique in the wild.)
            await conn.aclose()
            return
        if self._global_peers is not None:
            try:
                self._global_peers.acquire_nowait()
            except trio.WouldBlock:
                await conn.aclose()
                return
        try:
            conn.start_protocol(self.metainfo.num_pieces, self.geometry.piece_size)
            conn.send_timeout = self.config.idle_timeout
        except ProtocolError as exc:
            log.debug("%s: peer %s broke the protocol: %s", self.metainfo.name, conn.address, exc)
            if self._global_peers is not None:
                self._global_peers.release()
            await conn.aclose()
            return
        peer = Peer(conn, self)
        peer.peer_id = hs.peer_id
        assert conn.protocol is not None
        peer.fast = conn.protocol.fast
        peer.extensions = conn.protocol.extensions
        now = trio.current_time()
        peer.last_received = now
        self.peers[peer] = None
        self.failures.pop(conn.address, None)
        reasons: list[str] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._peer_writer, peer, nursery.cancel_scope, reasons)
                await self._guarded(self._peer_reader, peer, reasons)
                nursery.cancel_scope.cancel()
        finally:
            self._drop_peer(peer)
            if self._global_peers is not None:
                self._global_peers.release()
            await conn.aclose()
            why = conn.failure or (reasons[0] if reasons else "closed")
            log.debug("%s: peer %s gone: %s", self.metainfo.name, conn.address, why)

    async def _guarded(self, fn: Callable[[Peer], Any], peer: Peer, reasons: list[str]) -> None:
        """Run one side of a peer connection; its failures end only that peer."""
        try:
            if fn == self._peer_reader:
                self._send_greeting(peer)
            await fn(peer)
        except ProtocolError as exc:
            reasons.append(str(exc))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reasons.append(f"connection lost: {exc or type(exc).__name__}")
        except StorageError as exc:
            reasons.append(f"storage error: {exc}")
            self.error = str(exc)

    async def _peer_writer(self, peer: Peer, scope: trio.CancelScope, reasons: list[str]) -> None:
        try:
            await self._guarded(lambda p: p.conn.run_writer(), peer, reasons)
        finally:
            scope.cancel()

    def _send_greeting(self, peer: Peer) -> None:
        conn = peer.conn
        if peer.extensions:
            conn.queue(
                m.encode(
                    m.Extended(
                        0,
                        extension.encode_handshake(
                            extension.ExtendedHandshake(
                                m={**self._metadata_m(), **self._pex_m()},
                                v=CLIENT_VERSION,
                                p=self.listen_port,
                                reqq=self.config.max_peer_requests,
                                metadata_size=self._served_metadata_size(),
                            )
                        ),
                    )
                )
            )
        if self.dht is not None and conn.protocol is not None and conn.protocol.dht:
            conn.queue(m.encode(m.Port(self.dht.address.port)))  # BEP 5
        if peer.fast and self.have.all():
            conn.queue(m.encode(m.HaveAll()))
        elif peer.fast and not self.have.any():
            conn.queue(m.encode(m.HaveNone()))
        elif self.have.any():
            conn.queue(m.encode(m.BitfieldMsg(self.have.to_bytes())))
        if self.picker.missing_wanted_count():
            # Interested at once, before the peer's bitfield: a seed then unchokes us one round
            # trip sooner. Corrected by `_update_interest` when its pieces are known.
            peer.am_interested = True
            conn.queue(m.encode(m.Interested()))
        peer.last_sent = trio.current_time()

    async def _peer_reader(self, peer: Peer) -> None:
        """Handle what the peer sends, one receive buffer at a time.

        Blocks are the hot path (64 Ki of them per GiB): each is copied once, from the receive
        buffer into its piece buffer (`_store_block`); rate meters are credited once per
        buffer, and the pipeline is topped up once per buffer.
        """
        conn = peer.conn
        piece_type = m.Piece
        store_block = self._store_block
        while True:
            # Only a complete message resets the idle timer: a peer trickling one byte at a
            # time (slowloris) is as idle as a silent one.
            with trio.move_on_at(peer.last_received + self.config.idle_timeout) as scope:
                events = await conn.receive_events()
                while not events:
                    events = await conn.receive_events()
            if scope.cancelled_caught:
                raise ProtocolError("peer idle for too long (no complete message)")
            now = trio.current_time()
            peer.last_received = now
            received = 0
            for event in events:
                if type(event) is piece_type:
                    assert isinstance(event, m.Piece)
                    received += store_block(peer, event.index, event.begin, event.block)
                    if self._completed:
                        await self._send_completed()
                else:
                    await self._handle(peer, event, now)
            if received:
                self._credit(peer, received, now)
            self._fill_requests(peer)

    async def _handle(self, peer: Peer, msg: object, now: float) -> None:
        t = type(msg)
        if t is m.Piece:
            assert isinstance(msg, m.Piece)
            await self._on_block(peer, msg.index, msg.begin, msg.block, now)
        elif t is m.Have:
            assert isinstance(msg, m.Have)
            self.picker.peer_have(peer, msg.index)
            if not peer.am_interested and not self.have[msg.index]:
                self._update_interest(peer)
        elif t is m.Unchoke:
            peer.peer_choking = False
            if peer.choked_with_requests:
                # BEP 6 says a choking peer rejects what it will not serve, but not every client
                # does: requests left from before the choke are asked again rather than waited
                # out until their timeout (a stalled read otherwise).
                peer.choked_with_requests = False
                self._release_requests(peer)
            waiting = [p for p in self._piece_events if not self.have[p]]
            if waiting:
                # Reads that came while no peer could serve them (the first read of a torrent
                # just activated): their pieces go out whole now, as `read` rushes them, not a
                # pipeline's depth at a time (a new peer's rate, so its depth, is not known).
                self._rush(sorted(waiting))
        elif t is m.Choke:
            peer.peer_choking = True
            if not peer.fast:
                self._release_requests(peer)
            else:
                peer.choked_with_requests = self.picker.outstanding_of(peer) > 0
        elif t is m.Interested:
            peer.peer_interested = True
            self._maybe_unchoke_now(peer)
        elif t is m.NotInterested:
            peer.peer_interested = False
        elif t is m.BitfieldMsg:
            assert isinstance(msg, m.BitfieldMsg)
            bf = Bitfield.from_bytes(self.metainfo.num_pieces, msg.data)
            self.picker.peer_bitfield(peer, bf)
            peer.is_seed = bf.all()
            self._update_interest(peer)
        elif t is m.HaveAll:
            self.picker.peer_have_all(peer)
            peer.is_seed = True
            self._update_interest(peer)
        elif t is m.HaveNone:
            self._update_interest(peer)
        elif t is m.Request:
            assert isinstance(msg, m.Request)
            await self._on_request(peer, msg)
        elif t is m.Cancel:
            pass  # blocks are sent immediately; nothing queued to cancel
        elif t is m.RejectRequest:
            assert isinstance(msg, m.RejectRequest)
            self.picker.request_failed(msg.index, msg.begin, peer)
        elif t is m.AllowedFast:
            assert isinstance(msg, m.AllowedFast)
            peer.allowed_fast.add(msg.index)
        elif t is m.Extended:
            assert isinstance(msg, m.Extended)
            self._on_extended(peer, msg)
        elif t is m.Port and self.dht is not None:
            assert isinstance(msg, m.Port)
            self.dht.add_node(PeerAddress(peer.address.host, msg.port))  # BEP 5
        # KeepAlive, Suggest: nothing to do.

    def _on_extended(self, peer: Peer, msg: m.Extended) -> None:
        if msg.ext_id == 0:
            hs = extension.decode_handshake(msg.payload)
            peer.ext_ids = dict(hs.m)
            if hs.reqq:
                peer.reqq = max(1, min(hs.reqq, self.config.max_pipeline))
            if hs.v:
                peer.client = hs.v
            if hs.p:
                peer.listen_port = hs.p
        elif msg.ext_id == extension.LOCAL_EXTENSIONS["ut_pex"] and self._pex_enabled():
            self._on_pex(peer, ut_pex.decode(msg.payload))
        elif msg.ext_id == extension.LOCAL_EXTENSIONS["ut_metadata"] and self._metadata_m():
            self._on_ut_metadata(peer, msg.payload)

    # ------------------------------------------------------------------ serving metadata (BEP 9)

    def _metadata_m(self) -> dict[str, int]:
        """Our ``m`` entry for ut_metadata: none for private torrents (BEP 27: no magnets)."""
        if self.metainfo.private:
            return {}
        return {"ut_metadata": extension.LOCAL_EXTENSIONS["ut_metadata"]}

    def _served_metadata_size(self) -> int | None:
        size = len(self.metainfo.info_bytes)
        if self.metainfo.private or not 0 < size <= extension.MAX_METADATA_SIZE:
            return None
        return size

    def _on_ut_metadata(self, peer: Peer, payload: bytes) -> None:
        """Answer a peer's metadata request from our info dict (reject out-of-range pieces)."""
        request = ut_metadata.decode(payload)
        remote_id = peer.ext_ids.get("ut_metadata")
        if not isinstance(request, ut_metadata.MetadataRequest) or not remote_id:
            return  # data/reject sent to us, or a peer that cannot receive the answer
        answer = ut_metadata.answer(self.metainfo.info_bytes, request)
        peer.conn.queue(m.encode(m.Extended(remote_id, ut_metadata.encode(answer))))

    # ------------------------------------------------------------------ downloading

    def _update_interest(self, peer: Peer) -> None:
        picker = self.picker
        interesting = picker.is_interesting(peer) or (
            self._open_handles > 0 and picker.has_missing(peer)
        )
        if interesting != peer.am_interested:
            peer.am_interested = interesting
            if not interesting:
                # Nothing more wanted from this peer: withdraw what is still asked of it, so
                # no request lingers if the peer then chokes us without rejecting it.
                released = self.picker.release_requests(peer)
                self._remember_late(peer, released)
                if released:
                    peer.conn.queue(b"".join(m.encode(m.Cancel(*r)) for r in released))
            peer.conn.queue(m.encode(m.Interested() if interesting else m.NotInterested()))

    def _fill_requests(self, peer: Peer) -> None:
        """Top up this peer's pipeline to its rate-sized depth."""
        if not peer.am_interested:
            return
        if peer.peer_choking and not peer.allowed_fast:
            return
        now = trio.current_time()
        if now < self._storage_retry_at:
            return  # the last write failed: fetch nothing that could not be stored
        rate = peer.download.rate(now)
        depth = int(rate * self.config.pipeline_seconds / BLOCK_SIZE)
        depth = max(self.config.min_pipeline, min(depth, self.config.max_pipeline, peer.reqq))
        if peer.snubbed:
            depth = 2
        peer.pipeline = depth
        room = depth - self.picker.outstanding_of(peer)
        if room < min(16, depth // 4 or 1):
            return
        blocks = self.picker.pick(peer, room, now)
        if peer.peer_choking:
            # Choked: only BEP 6 allowed-fast pieces may be asked for. The picker recorded every
            # block it picked as requested, so give the others back at once (else they would sit
            # "in flight", never sent, until their timeout).
            allowed = [b for b in blocks if b[0] in peer.allowed_fast]
            for piece, begin, _length in blocks:
                if piece not in peer.allowed_fast:
                    self.picker.request_failed(piece, begin, peer)
            blocks = allowed
        if not blocks:
            return
        peer.conn.queue(m.encode_request_batch(blocks))
        peer.last_sent = now

    def _release_requests(self, peer: Peer) -> None:
        self._remember_late(peer, self.picker.release_requests(peer))

    @staticmethod
    def _remember_late(peer: Peer, requests: list[tuple[int, int, int]]) -> None:
        """Requests we stopped waiting for: their blocks are still accepted from `peer`."""
        if len(peer.late_ok) + len(requests) > LATE_BLOCKS_KEPT:
            peer.late_ok.clear()
        peer.late_ok.update((piece, begin) for piece, begin, _length in requests)

    async def _on_block(
        self,
        peer: Peer | WebSeed,
        index: int,
        begin: int,
        block: bytes | memoryview,
        now: float,
    ) -> None:
        """One block from `peer`: stored, credited, and its piece verified once complete."""
        size = self._store_block(peer, index, begin, block)
        if size:
            self._credit(peer, size, now)
        if self._completed:
            await self._send_completed()

    def _store_block(
        self, peer: Peer | WebSeed, index: int, begin: int, block: bytes | memoryview
    ) -> int:
        """Account one block and copy it into its piece buffer; returns the bytes accepted.

        Unrequested, duplicate (endgame) or wrongly sized blocks are dropped (0: no credit). A
        block completing its piece moves the buffer itself (no copy) to `_completed`; the
        caller must then `await self._send_completed()` before anything else can run.
        """
        size = len(block)
        # Web seeds only ever deliver what we picked for them (we make the HTTP request).
        if isinstance(peer, Peer) and not self.picker.is_requested(peer, index, begin):
            if (index, begin) in peer.late_ok:
                peer.late_ok.discard((index, begin))
            else:
                # Never asked of this peer: ignored. Accepting it could mix a stranger's
                # bytes into a piece an honest peer is sending, and a failed hash would
                # then be blamed on both (an honest seeder banned by someone else's lie).
                peer.unrequested += 1
                if peer.unrequested > MAX_UNREQUESTED_BLOCKS:
                    raise ProtocolError(f"{peer.unrequested} unrequested blocks in a row")
                return 0
        result = self.picker.block_received(index, begin, peer, size)
        if not result.accepted:
            return 0  # duplicate (endgame), no longer wanted or wrongly sized: no credit
        if isinstance(peer, Peer):
            peer.unrequested = 0
        for other in result.cancel_peers:
            if other in self.peers and other is not peer:
                other.conn.queue(m.encode(m.Cancel(index, begin, size)))
        buf = self.buffers.get(index)
        if buf is None:
            piece_size = self.geometry.piece_size(index)
            spare = self._spare_buffers
            reuse = spare.pop() if spare and piece_size == self.metainfo.piece_length else None
            buf = self.buffers[index] = PieceBuffer(piece_size, reuse)
            if self.memory.limit and self._read_alone(index):
                # A read waits for this piece and for no other piece on its way (a random
                # read, not a stream): its blocks are hashed as they come, so it is served
                # without a hashing hop.
                buf.hasher = hashlib.sha1()
        buf.data[begin : begin + size] = block
        buf.received += size
        buf.contributors.add(peer)
        if buf.hasher is not None:
            buf.hash_arrived(begin, size)
        if result.piece_complete:
            # The buffer leaves `buffers`: no later block can reach it (the picker refuses
            # blocks of a complete piece), so the verifier may hash and write it as it is.
            del self.buffers[index]
            done = buf.hasher is not None and buf.hashed == len(buf.data)
            digest = buf.hasher.digest() if done else None
            self._completed.append((index, buf.data, buf.contributors, digest))
        return size

    def _read_alone(self, index: int) -> bool:
        """Whether a read waits for `index` (a random read's piece, not a stream's): wanted by
        reads alone (no handle's window covers it), and no other piece a read waits for is on
        its way. Readahead nobody waits on yet (the head and tail wanted at open) may be."""
        events = self._piece_events
        if index not in events:
            return False
        for first, end, priority in self._want_ranges.values():
            if priority < Priority.NOW and first <= index < end:
                return False
        return not any(other in events for other in self.buffers if other != index)

    def _credit(self, peer: Peer | WebSeed, size: int, now: float) -> None:
        peer.download.add(size, now)
        self.download.add(size, now)
        self.downloaded += size
        peer.snubbed = False

    async def _send_completed(self) -> None:
        """Hand completed pieces to the verifiers (waiting if hashing is behind: back-pressure
        on this peer). If the task is cancelled meanwhile, no piece may be lost half-way: the
        pieces not handed over are re-opened.

        A piece hashed as it arrived (`_store_block`) that a read waits for is served here, at
        once, before the hand-over: held in `memory` and its readers woken, so the read is not
        queued behind other pieces' hashing and writing in the verifiers (a random read right
        after a stream's pieces, or the head and tail wanted at open)."""
        while self._completed:
            index, data, contributors, digest = self._completed.pop(0)
            served = (
                digest is not None
                and self._serve_first(index)
                and digest == self.metainfo.piece_hash(index)
            )
            if served:
                self._writing.add(index)  # the buffer is written from once handed over
                self._hold(index, data)
                self._wake(index)
            item = (index, data, contributors, digest, served)
            try:
                self._verify_send.send_nowait(item)
            except trio.WouldBlock:
                try:
                    await self._verify_send.send(item)
                except BaseException:
                    if served:  # neither written nor `have`: not held either
                        self._writing.discard(index)
                        self.memory.discard(self, index)
                    self.picker.piece_failed(index)
                    for rest in self._completed:
                        self.picker.piece_failed(rest[0])
                    self._completed.clear()
                    raise

    async def _verifier(self) -> None:
        """Hash each completed piece and store it if it matches, in one worker-thread hop
        (`PieceStore.write_verified`); its buffer is then held in `memory` for reads, or free
        for another piece. A piece some read waits for is hashed first, held and served, then
        written (`_serve_first`); one hashed on arrival may have been served already
        (`served`, `_send_completed`)."""
        async for index, data, contributors, digest, served in self._verify_recv:
            expected = self.metainfo.piece_hash(index)
            early = served or self._serve_first(index)
            self._writing.add(index)
            try:
                # Room is made before the hash is known: a piece failing its hash (rare) only
                # leaves the budget's estimate high until its next measurement.
                async with self.cache.room_for(self, index):
                    if early and digest is None:
                        # Hashed and written in one worker-thread hop; the readers are served
                        # from memory as soon as the digest matched, while it is written.
                        serve = functools.partial(self._serve, index, data)
                        ok = await self.store.write_verified(index, data, expected, on_match=serve)
                    elif early:
                        ok = digest == expected
                        if ok:
                            if not served:
                                self._serve(index, data)
                            await self.store.write_piece(index, data)
                    else:
                        ok = await self.store.write_verified(index, data, expected)
            except StorageError as exc:
                self.memory.discard(self, index)
                self._storage_failed(index, exc)
                continue
            finally:
                self._writing.discard(index)
            if not ok:
                self._recycle(data)  # the store is done with the bytes (the hop returned)
                self._piece_failed(index, contributors)
                continue
            self._storage_works()
            self._piece_verified(index)
            if not early:
                if self.have[index] and not self._closed:
                    self._hold(index, data)
                else:
                    self._recycle(data)

    def _serve_first(self, index: int) -> bool:
        """Whether verified `index` goes to the reads waiting for it before it is written:
        held in `memory`, they need not wait for the write nor read it back. Not without
        waiting reads or `memory`, nor before a write worked since the start or the last
        failure: with the disk full, reads of missing data fail with the write's errno (not
        served once, then failing)."""
        return (
            bool(self.memory.limit)
            and self._written_one
            and not self._closed
            and index in self._piece_events
        )

    def _serve(self, index: int, data: bytearray) -> None:
        """Verified `index` goes to the reads waiting for it: held in `memory`, readers woken
        (not once the torrent closed: nobody reads it any more)."""
        if not self._closed:
            self._hold(index, data)
            self._wake(index)

    def _hold(self, index: int, data: bytearray) -> None:
        """Keep verified `data` in `memory`; buffers it pushed out are reused where they can
        be (`_recycle`) -- never one whose piece is being written from it."""
        for owner, piece, buffer in self.memory.put(self, index, data):
            if isinstance(owner, Torrent) and piece not in owner._writing:
                owner._recycle(buffer)

    def _recycle(self, data: bytearray) -> None:
        """A piece buffer nothing refers to any more: kept for the next piece (at most
        `SPARE_BUFFER_BYTES`), else left to the garbage collector."""
        if len(data) == self.metainfo.piece_length and (
            len(self._spare_buffers) < self._max_spare_buffers
        ):
            self._spare_buffers.append(data)

    def _wake(self, index: int) -> None:
        event = self._piece_events.pop(index, None)
        if event is not None:
            event.set()

    def _piece_failed(self, index: int, contributors: set[Peer | WebSeed]) -> None:
        self.hash_failures += 1
        self.picker.piece_failed(index)
        log.warning(
            "%s: piece %d failed its hash check (from %s); re-fetching",
            self.metainfo.name,
            index,
            ", ".join(str(p.address) for p in contributors),
        )
        seeds = [p for p in contributors if isinstance(p, WebSeed)]
        for seed in seeds:
            seed.hash_failed(index, self)
        for peer in contributors:
            if isinstance(peer, WebSeed) or seeds:
                # With a web seed among the senders, the web seed takes the blame: a file changed
                # on its server is the usual cause, and peers must not be banned for it.
                continue
            peer_fails = self.failures.get(peer.address, 0) + 1
            self.failures[peer.address] = peer_fails
            if len(contributors) == 1 or peer_fails >= self.config.hash_failures_to_ban:
                self._ban(peer, f"sent data for piece {index} that failed its hash check")
        self._fill_all()

    def _ban(self, peer: Peer, why: str) -> None:
        if peer.address.host in self.banned:
            return
        log.warning("%s: banning %s: %s", self.metainfo.name, peer.address.host, why)
        self.banned.add(peer.address.host)
        for addr in [a for a in self.known if a.host == peer.address.host]:
            del self.known[addr]
        for p in [p for p in self.peers if p.address.host == peer.address.host]:
            p.conn.abort(f"banned: {why}")

    def _piece_verified(self, index: int) -> None:
        if self.have[index]:
            return
        leftovers = self.picker.piece_verified(index)
        self.have.set(index)
        for other, begin, length in leftovers:
            if other in self.peers:
                other.conn.queue(m.encode(m.Cancel(index, begin, length)))
        self._pieces_verified += 1
        if self.first_piece_at is None:
            self.first_piece_at = trio.current_time()
        event = self._piece_events.pop(index, None)
        if event is not None:
            event.set()
        if self._on_verified is not None:
            self._on_verified(index)
        encoded = m.encode(m.Have(index))
        for peer in list(self.peers):
            peer.conn.queue(encoded)
            if peer.am_interested:
                self._update_interest(peer)
        if self.have.all():
            self._complete_event.set()
            log.info("%s: download complete", self.metainfo.name)
            if self._trackers is not None and hasattr(self._trackers, "completed"):
                self._trackers.completed()
        self._fill_all()

    def hold_for_check(self, pieces: Iterable[int]) -> None:
        """Request none of `pieces` until `stored_pieces_checked` (`stored_check` hashes them)."""
        self.picker.hold(pieces)

    def stored_pieces_checked(self, pieces: Iterable[int], ok: bool) -> None:
        """Held pieces' data on disk matched their hashes (verified: served, announced, saved
        by resume) or not (missing like any other: they may be requested now)."""
        pieces = list(pieces)
        self.picker.unhold(pieces)
        if ok:
            for index in pieces:
                self._piece_verified(index)
        elif any(self.picker.is_wanted(index) for index in pieces):
            self._on_wants_changed()

    def stored_check_done(self) -> None:
        """The check of stored data ended: seed what it found (as `run` does for resume)."""
        if self.config.upload and self.have.any():
            self._activate()

    def waited_pieces(self) -> Iterable[int]:
        """Pieces some reader is waiting for (`_wait_piece`)."""
        return list(self._piece_events)

    def _fill_all(self) -> None:
        for peer in list(self.peers):
            self._fill_requests(peer)
        for seed in self.web_seeds:
            seed.wake()

    def _drop_peer(self, peer: Peer) -> None:
        self.peers.pop(peer, None)
        self.picker.peer_gone(peer)
        self._dial_wake.set()
        if len(self.peers) < 5 and self._trackers is not None:
            request = getattr(self._trackers, "request_more_peers", None)
            if request is not None:
                request()

    # ------------------------------------------------------------------ uploading

    def _maybe_unchoke_now(self, peer: Peer) -> None:
        if not self.config.upload or not self.have.any():
            return
        unchoked = sum(1 for p in self.peers if not p.am_choking)
        if peer.am_choking and unchoked < self._choker.slots:
            peer.am_choking = False
            peer.conn.queue(m.encode(m.Unchoke()))

    async def _on_request(self, peer: Peer, req: m.Request) -> None:
        allowed = not peer.am_choking
        if not allowed or not self.have[req.index] or not self.config.upload:
            if peer.fast:
                peer.conn.queue(m.encode(m.RejectRequest(req.index, req.begin, req.length)))
            return
        if peer.conn.outbox_bytes > 8 * 1024 * 1024:
            if peer.fast:
                peer.conn.queue(m.encode(m.RejectRequest(req.index, req.begin, req.length)))
            return
        data = self._upload_cache.get(req.index)
        if data is None:
            with self._holding((req.index,)):
                data = await self.store.read_piece(req.index)
            self._upload_cache[req.index] = data
            if len(self._upload_cache) > 8:
                self._upload_cache.popitem(last=False)
        else:
            self._upload_cache.move_to_end(req.index)
        block = data[req.begin : req.begin + req.length]
        peer.conn.queue(m.encode_piece_header(req.index, req.begin, len(block)))
        peer.conn.queue(block)
        now = trio.current_time()
        peer.upload.add(len(block), now)
        self.upload.add(len(block), now)
        self.uploaded += len(block)

    # ------------------------------------------------------------------ periodic work

    async def _ticker(self) -> None:
        last_choke = -math.inf
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            expired = self.picker.expired_requests(now, self.config.request_timeout)
            for peer, piece, begin, length in expired:
                peer.snubbed = True
                if isinstance(peer, Peer):
                    self._remember_late(peer, [(piece, begin, length)])
                if isinstance(peer, Peer) and peer in self.peers:
                    peer.conn.queue(m.encode(m.Cancel(piece, begin, length)))
            for peer in list(self.peers):
                if now - peer.last_sent > self.config.keepalive_interval:
                    peer.conn.queue(m.encode(m.KeepAlive()))
                    peer.last_sent = now
            if now - last_choke >= 10.0:
                last_choke = now
                self._run_choker(now)
            self._pex_tick(now)
            self._fill_all()

    def _run_choker(self, now: float) -> None:
        if not self.config.upload:
            return
        views = [
            PeerView(
                peer=p,
                interested=p.peer_interested,
                download_rate=p.download.rate(now),
                upload_rate=p.upload.rate(now),
                is_seed_mode=self.have.all(),
            )
            for p in self.peers
        ]
        unchoke = self._choker.decide(views, now)
        for p in self.peers:
            should_choke = p not in unchoke
            if should_choke != p.am_choking:
                p.am_choking = should_choke
                p.conn.queue(m.encode(m.Choke() if should_choke else m.Unchoke()))

    # ------------------------------------------------------------------ web seeds (BEP 19)

    def add_web_seeds(self, urls: Iterable[str]) -> None:
        """HTTP(S) web seeds (``url-list``, magnet ``ws``): used once the torrent is active."""
        if not self.config.web_seeds or self._get_http_client is None:
            return
        known = {seed.url for seed in self.web_seeds}
        for raw in urls:
            url = parse_web_seed_url(raw)
            if url is None:
                log.debug("%s: web seed %r not usable (http/https only)", self.metainfo.name, raw)
                continue
            if url in known or len(self.web_seeds) >= 16:
                continue
            known.add(url)
            seed = WebSeed(url, self.metainfo, self.config.web_seed)
            self.web_seeds.append(seed)
            if self._active and self._nursery is not None:
                self._nursery.start_soon(self._run_web_seed, seed)

    async def _run_web_seed(self, seed: WebSeed) -> None:
        assert self._get_http_client is not None
        await seed.run(await self._get_http_client(), self)

    def web_seed_available(self, seed: WebSeed, available: bool) -> None:
        if available:
            self.picker.peer_have_all(seed)
        else:
            self.picker.peer_gone(seed)
            self._fill_all()

    def web_seed_pick(self, seed: WebSeed, count: int) -> list[tuple[int, int, int]]:
        now = trio.current_time()
        if now < self._storage_retry_at:
            return []  # the last write failed: fetch nothing that could not be stored
        return self.picker.pick(seed, count, now)

    def web_seed_release(self, seed: WebSeed, blocks: Sequence[tuple[int, int, int]]) -> None:
        for piece, begin, _length in blocks:
            self.picker.request_failed(piece, begin, seed)
        if blocks:
            self._fill_all()

    async def web_seed_block(self, seed: WebSeed, piece: int, begin: int, block: bytes) -> None:
        await self._on_block(seed, piece, begin, block, trio.current_time())

    # ------------------------------------------------------------------ peer exchange (BEP 11)

    def _pex_enabled(self) -> bool:
        return self.config.pex and not self.metainfo.private

    def _pex_m(self) -> dict[str, int]:
        """Our ``m`` entry for ut_pex: none for private torrents (BEP 27)."""
        if not self._pex_enabled():
            return {}
        return {"ut_pex": extension.LOCAL_EXTENSIONS["ut_pex"]}

    def _on_pex(self, peer: Peer, msg: ut_pex.PexMessage) -> None:
        fresh = self._pex_budget.admit(peer.pex.accept(msg, trio.current_time()))
        if fresh:
            self.add_peers(fresh, source="pex")

    def _pex_tick(self, now: float) -> None:
        """Send due ut_pex messages (each peer at most once a minute, see `pex`)."""
        if not self._pex_enabled():
            return
        dialable: dict[PeerAddress, int] = {}
        for p in self.peers:
            flags = ut_pex.FLAG_SEED if p.is_seed else 0
            if p.conn.outgoing:
                dialable[p.address] = flags | ut_pex.FLAG_REACHABLE
            elif p.listen_port:
                dialable[PeerAddress(p.address.host, p.listen_port)] = flags
        for peer in self.peers:
            ext_id = peer.ext_ids.get("ut_pex")
            if not ext_id:
                continue
            itself = (peer.address, PeerAddress(peer.address.host, peer.listen_port or 0))
            msg = peer.pex.outgoing({a: f for a, f in dialable.items() if a not in itself}, now)
            if msg is None:
                continue
            try:
                payload = ut_pex.encode(msg)
            except ProtocolError as exc:  # an address PEX cannot carry: our bug, not the peer's
                log.debug("%s: no PEX to %s: %s", self.metainfo.name, peer.address, exc)
                continue
            peer.conn.queue(m.encode(m.Extended(ext_id, payload)))

    # ------------------------------------------------------------------ status

    def _wake_all_waiters(self) -> None:
        for event in self._piece_events.values():
            event.set()
        self._piece_events.clear()
        self._complete_event.set()

    def state(self) -> str:
        if self.error:
            return "error"
        if self.have.all():
            return "seeding" if self.config.upload else "complete"
        if self.picker.missing_wanted_count() > 0:
            return "downloading"
        return "idle"

    def statistics(self) -> TorrentStats:
        now = trio.current_time()
        geo = self.geometry
        verified_bytes = sum(geo.piece_size(i) for i in self.have.iter_set())
        total = self.metainfo.total_size
        file_progress = []
        for f in self.metainfo.files:
            if f.pad:
                continue
            if f.length == 0:
                file_progress.append(1.0)
                continue
            r = geo.file_pieces(f.index)
            got = sum(1 for p in r if self.have[p])
            file_progress.append(got / len(r) if len(r) else 1.0)
        return TorrentStats(
            info_hash=self.info_hash.hex(),
            name=self.metainfo.name,
            state=self.state(),
            peers=len(self.peers),
            seeds=sum(1 for p in self.peers if p.is_seed),
            download_rate=self.download.rate(now),
            upload_rate=self.upload.rate(now),
            downloaded=self.downloaded,
            uploaded=self.uploaded,
            verified_bytes=verified_bytes,
            total_size=total,
            progress=verified_bytes / total if total else 1.0,
            pieces_verified=self._pieces_verified,
            num_pieces=self.metainfo.num_pieces,
            hash_failures=self.hash_failures,
            banned=len(self.banned),
            file_progress=file_progress,
        )
