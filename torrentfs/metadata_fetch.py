"""Fetching a magnet's info dictionary from peers (L5): BEP 9 ``ut_metadata`` over BEP 10.

A magnet names a torrent by its info-hash only; the info dict (file names, sizes, piece hashes)
has to come from peers. `MetadataFetcher.run` dials candidate peers -- the magnet's ``x.pe``,
peers from its ``tr`` trackers (the ordinary `TrackerSet`), from the session's DHT when it has
one, and from peers' PEX messages (BEP 11) -- does the BEP 3 handshake and the BEP 10 extended
handshake, and asks every peer that announces ``ut_metadata`` and a ``metadata_size`` for
16 KiB pieces, from several peers at once. It returns the info dict once its SHA-1 equals the
info-hash, and not a byte earlier (DESIGN.md §3.7).

The decisions live in `MetadataSwarm`, which is pure (no I/O, time passed in) so that the
policy is unit-tested without a network:

* **Verification before trust.** Pieces are collected per announced ``metadata_size`` (a liar
  announcing another size cannot disturb the honest peers' assembly) and the whole dict is
  hashed when complete (`torrentfs.wire.ut_metadata.MetadataAssembler`).
* **Liars are dropped and never dialed again.** If the assembled dict does not hash to the
  info-hash and a single peer supplied it, that peer is banned. If several peers contributed,
  the culprit is unknown: each of them becomes a *suspect* and must then deliver the whole
  dict alone, so the next mismatch names exactly one peer. Peers that send malformed
  ``ut_metadata`` messages (wrong size, piece out of range, bad bencoding) or announce a
  ``metadata_size`` beyond the cap are banned as well.
* **Size cap:** `MAX_METADATA_SIZE` (16 MiB, `torrentfs.wire.extension`) -- room for ~800,000
  piece hashes, far above real torrents (a few MiB at most), and the bound on what a magnet
  peer can make us buffer (one buffer per distinct announced size, at most
  `MAX_ASSEMBLIES` of them).
* **Honest failures are retried later.** A peer that cannot be reached, has no metadata yet,
  rejects requests or times out is dialed again after an exponential backoff (5 s .. 2 min).
* **Every wait is bounded:** connect + handshake, the extended handshake and each request have
  their own timeouts (`FetchConfig`); the fetch as a whole runs until its owner cancels it
  (the session does on `remove_torrent`).

Peers that served pieces of the verified dict are reported in `MetadataFetcher.good_peers`, so
the torrent can connect to them first.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from torrentfs.errors import ProtocolError, TorrentfsError
from torrentfs.net.peer import PeerConnection
from torrentfs.types import PeerAddress
from torrentfs.wire import extension, ut_metadata, ut_pex
from torrentfs.wire import messages as m
from torrentfs.wire.extension import MAX_METADATA_SIZE
from torrentfs.wire.handshake import Handshake
from torrentfs.wire.ut_metadata import (
    MetadataAssembler,
    MetadataData,
    MetadataHashMismatch,
    MetadataReject,
)

log = logging.getLogger(__name__)

CLIENT_VERSION = "torrentfs 0.1"
MAX_ASSEMBLIES = 4
"""Distinct announced metadata sizes assembled at once (each may buffer up to the cap)."""
MAX_KNOWN_PEERS = 2000
"""Candidate addresses kept; more is a flood (a hostile tracker or PEX peer)."""

__all__ = [
    "MAX_METADATA_SIZE",
    "FetchConfig",
    "MetadataFetcher",
    "MetadataSwarm",
]


@dataclass
class FetchConfig:
    """Limits of one metadata fetch (seconds, counts)."""

    max_peers: int = 8
    """Connections open at once for this magnet."""
    connect_timeout: float = 10.0
    """TCP connect plus the BEP 3 handshake."""
    extended_handshake_timeout: float = 10.0
    request_timeout: float = 10.0
    """A requested metadata piece must arrive within this (else the peer is dropped)."""
    pipeline: int = 2
    """Requests outstanding per peer (libtorrent rejects a peer's deep metadata queues)."""
    retry_base: float = 5.0
    retry_max: float = 120.0
    source_interval: float = 10.0
    """How often the DHT is asked again while the metadata is missing."""


# --------------------------------------------------------------------------- the policy


class MetadataSwarm:
    """Who to dial and whom to ask for which piece, and who lied (pure; `now` passed in).

    Peers are keyed by address: one connection per address at a time.
    """

    def __init__(self, info_hash: bytes, config: FetchConfig | None = None) -> None:
        if len(info_hash) != 20:
            raise ValueError("info_hash must be 20 bytes")
        self.info_hash = info_hash
        self.config = config or FetchConfig()
        self.known: dict[PeerAddress, float] = {}
        """Candidate address -> earliest time to dial it (again)."""
        self.failures: dict[PeerAddress, int] = {}
        self.banned: set[PeerAddress] = set()
        self.connected: set[PeerAddress] = set()
        self.sizes: dict[PeerAddress, int] = {}
        """Peers that announced a usable metadata size (connected and ready to be asked)."""
        self.suspects: set[PeerAddress] = set()
        self._shared: dict[int, MetadataAssembler] = {}
        self._solo: dict[PeerAddress, MetadataAssembler] = {}
        self.result: bytes | None = None
        self.good_peers: list[PeerAddress] = []
        """The peers whose pieces made up the verified info dict."""

    # -- candidates

    def add(self, addresses: Iterable[PeerAddress], now: float) -> int:
        """New candidate peers; returns how many were new (banned ones never are)."""
        added = 0
        for addr in addresses:
            if addr in self.banned or addr in self.known or len(self.known) >= MAX_KNOWN_PEERS:
                continue
            if not 0 < addr.port < 65536:
                continue
            self.known[addr] = now
            added += 1
        return added

    def to_dial(self, now: float) -> list[PeerAddress]:
        """Candidates due now, within the connection budget; they count as connected."""
        room = self.config.max_peers - len(self.connected)
        due = [a for a, t in self.known.items() if t <= now and a not in self.connected]
        due.sort(key=lambda a: (self.failures.get(a, 0), self.known[a]))
        chosen = due[: max(0, room)]
        self.connected.update(chosen)
        return chosen

    def next_due(self) -> float | None:
        """The earliest time a not-connected candidate may be dialed, if any."""
        times = [t for a, t in self.known.items() if a not in self.connected]
        return min(times) if times else None

    def gone(self, addr: PeerAddress, now: float, *, ban: bool = False) -> None:
        """A connection ended (failed, or dropped by us); ``ban`` drops the address for good."""
        self.connected.discard(addr)
        self.sizes.pop(addr, None)
        for assembler in (*self._shared.values(), *self._solo.values()):
            assembler.peer_gone(addr)
        self._solo.pop(addr, None)
        if ban:
            self.banned.add(addr)
            self.known.pop(addr, None)
            return
        if addr not in self.known:
            return
        fails = self.failures.get(addr, 0) + 1
        self.failures[addr] = fails
        delay = min(self.config.retry_max, self.config.retry_base * 2 ** (fails - 1))
        self.known[addr] = now + delay

    # -- one connection's metadata exchange

    def ready(
        self, addr: PeerAddress, metadata_size: int | None, ut_metadata_id: int | None
    ) -> None:
        """The peer's extended handshake: may we ask it? Raises `ProtocolError` if not.

        A peer without ``ut_metadata`` or without ``metadata_size`` (it has no metadata yet)
        is an honest failure; sizes beyond the cap never get here (the extended handshake
        decoder refuses them, and the caller bans the peer).
        """
        if not ut_metadata_id:
            raise ProtocolError("peer does not support ut_metadata (BEP 9)")
        if metadata_size is None:
            raise ProtocolError("peer has no metadata (no metadata_size)")
        if not 0 < metadata_size <= MAX_METADATA_SIZE:  # decode_handshake checks it already
            raise ProtocolError(f"metadata_size {metadata_size} out of range")
        self.failures.pop(addr, None)
        self.sizes[addr] = metadata_size

    def _assembler(self, addr: PeerAddress) -> MetadataAssembler | None:
        size = self.sizes.get(addr)
        if size is None or self.result is not None:
            return None
        if addr in self.suspects:
            solo = self._solo.get(addr)
            if solo is None:
                solo = self._solo[addr] = MetadataAssembler(self.info_hash, size)
            return solo
        shared = self._shared.get(size)
        if shared is None:
            if len(self._shared) >= MAX_ASSEMBLIES:
                return None
            shared = self._shared[size] = MetadataAssembler(self.info_hash, size)
        return shared

    def pick(self, addr: PeerAddress) -> int | None:
        """The next metadata piece to request from `addr` (recorded as asked of it), or None."""
        assembler = self._assembler(addr)
        return None if assembler is None else assembler.pick(addr)

    def rejected(self, addr: PeerAddress, piece: int) -> None:
        """`addr` rejected `piece` (or did not answer in time): someone else may get it."""
        for assembler in (*self._shared.values(), *self._solo.values()):
            assembler.rejected(piece, addr)

    def received(self, addr: PeerAddress, msg: MetadataData) -> bytes | None:
        """A data message; returns the verified info dict once complete.

        Raises `ProtocolError` when `addr` must be banned (malformed data, or metadata proven
        wrong); the caller closes the connection and calls `gone(..., ban=True)`. Peers
        merely suspected of a mismatch stay connected and go on alone.
        """
        if self.result is not None:
            return self.result
        assembler = self._assembler(addr)
        if assembler is None:
            return None
        try:
            result = assembler.receive(msg, addr)
        except MetadataHashMismatch as exc:
            solo = addr in self.suspects
            if solo or len(exc.peers) == 1:
                raise MetadataHashMismatch(frozenset({addr} if solo else exc.peers)) from None
            size = assembler.metadata_size
            self._shared.pop(size, None)
            for peer in exc.peers:
                if isinstance(peer, PeerAddress):
                    self.suspects.add(peer)
            log.info(
                "metadata %s: pieces from %d peers do not hash to the info-hash; "
                "each of them must now deliver it alone",
                self.info_hash.hex(),
                len(exc.peers),
            )
            return None
        if result is not None:
            self.result = result
            self.good_peers = [p for p in assembler.contributors() if isinstance(p, PeerAddress)]
        return result

    def statistics(self) -> dict[str, int]:
        return {
            "known": len(self.known),
            "connected": len(self.connected),
            "serving": len(self.sizes),
            "banned": len(self.banned),
            "suspects": len(self.suspects),
        }


# --------------------------------------------------------------------------- the I/O


class MetadataFetcher:
    """Resolve one magnet's info dict from the swarm: `await run()` returns the verified bytes.

    ``trackers_factory(on_peers)`` returns a service with an async ``run(task_status=...)``
    (a `TrackerSet`) or None; ``dht_peers(info_hash)`` returns peer addresses (a list, or an
    awaitable of one); both are optional.
    """

    def __init__(
        self,
        info_hash: bytes,
        *,
        peer_id: bytes,
        listen_port: int,
        config: FetchConfig | None = None,
        half_open: trio.Semaphore | None = None,
        bind_host: str | None = None,
        trackers_factory: Callable[[Callable[[list[PeerAddress], str], None]], Any] | None = None,
        dht_peers: Callable[[bytes], Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.listen_port = listen_port
        self.config = config or FetchConfig()
        self.swarm = MetadataSwarm(info_hash, self.config)
        self.name = name or info_hash.hex()
        self._half_open = half_open or trio.Semaphore(self.config.max_peers)
        self._bind_host = bind_host
        self._trackers_factory = trackers_factory
        self._dht_peers = dht_peers
        self._wake = trio.Event()
        self._done = trio.Event()
        self.started_at: float | None = None
        self.resolved_at: float | None = None

    @property
    def good_peers(self) -> list[PeerAddress]:
        return list(self.swarm.good_peers)

    def add_peers(self, addresses: Iterable[PeerAddress], source: str = "magnet") -> None:
        now = trio.current_time()
        added = self.swarm.add(
            (a for a in addresses if not self._is_us(a)),
            now,
        )
        if added:
            log.debug("%s: %d metadata candidates from %s", self.name, added, source)
            self._wake.set()

    def _is_us(self, addr: PeerAddress) -> bool:
        if addr.port != self.listen_port:
            return False
        return addr.host in ("127.0.0.1", "::1", "0.0.0.0", self._bind_host)

    async def run(self) -> bytes:
        """Fetch until the verified info dict is known (cancel to give up)."""
        self.started_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            if self._trackers_factory is not None:
                trackers = self._trackers_factory(self.add_peers)
                if trackers is not None:
                    nursery.start_soon(trackers.run)
            if self._dht_peers is not None:
                nursery.start_soon(self._ask_dht)
            nursery.start_soon(self._dialer, nursery)
            await self._done.wait()
            nursery.cancel_scope.cancel()
        assert self.swarm.result is not None
        self.resolved_at = trio.current_time()
        log.info(
            "%s: metadata (%d bytes) verified after %.2f s from %s",
            self.name,
            len(self.swarm.result),
            self.resolved_at - self.started_at,
            ", ".join(str(p) for p in self.swarm.good_peers) or "?",
        )
        return self.swarm.result

    async def _ask_dht(self) -> None:
        assert self._dht_peers is not None
        while True:
            try:
                found = self._dht_peers(self.info_hash)
                if inspect.isawaitable(found):
                    with trio.move_on_after(self.config.source_interval * 3):
                        found = await found
                if found:
                    self.add_peers(list(found), "dht")
            except TorrentfsError as exc:
                log.debug("%s: DHT lookup failed: %s", self.name, exc)
            await trio.sleep(self.config.source_interval)

    async def _dialer(self, nursery: trio.Nursery) -> None:
        while True:
            now = trio.current_time()
            for addr in self.swarm.to_dial(now):
                nursery.start_soon(self._peer, addr)
            due = self.swarm.next_due()
            wait = self.config.retry_base if due is None else max(0.05, due - now)
            with trio.move_on_after(min(wait, self.config.retry_base)):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _peer(self, addr: PeerAddress) -> None:
        """One connection: handshakes, then ask for pieces until done or dropped."""
        ban = False
        conn: PeerConnection | None = None
        try:
            conn = await self._connect(addr)
            if conn is not None:
                await self._exchange(conn)
        except MetadataHashMismatch:
            ban = True
            log.warning("%s: %s sent metadata that does not match the info-hash; dropped",
                        self.name, addr)  # fmt: skip
        except BadMetadataPeer as exc:
            ban = True
            log.info("%s: metadata peer %s dropped for good: %s", self.name, addr, exc)
        except ProtocolError as exc:
            log.debug("%s: metadata peer %s dropped: %s", self.name, addr, exc)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("%s: metadata peer %s lost: %s", self.name, addr, exc)
        finally:
            if conn is not None:
                await conn.aclose()
            self.swarm.gone(addr, trio.current_time(), ban=ban)
            self._wake.set()

    async def _connect(self, addr: PeerAddress) -> PeerConnection | None:
        async with self._half_open:
            try:
                with trio.fail_after(self.config.connect_timeout):
                    stream = await trio.open_tcp_stream(
                        addr.host, addr.port, local_address=self._local_address_for(addr.host)
                    )
            except (OSError, trio.TooSlowError) as exc:
                log.debug("%s: connect to %s failed: %s", self.name, addr, exc)
                return None
        conn = PeerConnection(stream, addr, outgoing=True)
        try:
            with trio.fail_after(self.config.connect_timeout):
                await conn.send_handshake(Handshake.ours(self.info_hash, self.peer_id))
                hs = await conn.receive_handshake()
        except trio.TooSlowError:
            await conn.aclose()
            raise ProtocolError("handshake timed out") from None
        except BaseException:
            await conn.aclose()
            raise
        if hs.info_hash != self.info_hash:
            await conn.aclose()
            raise BadMetadataPeer("peer answered with another info-hash")
        if hs.peer_id == self.peer_id:
            await conn.aclose()
            raise BadMetadataPeer("connected to ourselves")
        if not hs.supports_extensions:
            await conn.aclose()
            raise BadMetadataPeer("peer does not support the extension protocol (BEP 10)")
        conn.start_protocol(None, None)
        return conn

    def _local_address_for(self, host: str) -> str | None:
        bind = self._bind_host
        if bind is None or (":" in bind) != (":" in host):
            return None
        return bind

    async def _exchange(self, conn: PeerConnection) -> None:
        addr = conn.address
        assert conn.protocol is not None
        ours = extension.ExtendedHandshake(
            m={"ut_metadata": extension.LOCAL_EXTENSIONS["ut_metadata"],
               "ut_pex": extension.LOCAL_EXTENSIONS["ut_pex"]},
            v=CLIENT_VERSION,
            p=self.listen_port if 0 < self.listen_port < 65536 else None,
        )  # fmt: skip
        greeting = m.encode(m.Extended(extension.HANDSHAKE_ID, extension.encode_handshake(ours)))
        if conn.protocol.fast:
            greeting += m.encode(m.HaveNone())
        conn.queue(greeting)
        errors: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_first_error, conn.run_writer, errors, nursery.cancel_scope)
            await _first_error(lambda: self._reader(conn, addr), errors, nursery.cancel_scope)
        if errors:  # the one that ended the connection, not an exception group
            raise errors[0]

    async def _reader(self, conn: PeerConnection, addr: PeerAddress) -> None:
        swarm = self.swarm
        timeout = self.config.request_timeout
        remote_id: int | None = None
        local_id = extension.LOCAL_EXTENSIONS["ut_metadata"]
        pex_id = extension.LOCAL_EXTENSIONS["ut_pex"]
        asked: dict[int, float] = {}  # piece -> when it was requested
        handshake_deadline = trio.current_time() + self.config.extended_handshake_timeout
        paused_until = 0.0
        while swarm.result is None:
            now = trio.current_time()
            if remote_id is not None and now >= paused_until:
                while len(asked) < self.config.pipeline:
                    piece = swarm.pick(addr)
                    if piece is None:
                        break
                    asked[piece] = now
                    payload = ut_metadata.encode(ut_metadata.MetadataRequest(piece))
                    conn.queue(m.encode(m.Extended(remote_id, payload)))
            if remote_id is None:
                wake = handshake_deadline
            elif asked:
                wake = min(asked.values()) + timeout
            else:  # paused after a reject, or every piece is asked of others: look again soon
                wake = max(paused_until, now + 1.0) if paused_until > now else now + 1.0
            with trio.move_on_at(wake) as scope:
                events = await conn.receive_events()
            if scope.cancelled_caught:
                now = trio.current_time()
                if remote_id is None:
                    raise ProtocolError("no extended handshake in time")
                if asked and min(asked.values()) + timeout <= now:
                    raise ProtocolError(f"metadata request unanswered after {timeout:g} s")
                continue
            for event in events:
                if not isinstance(event, m.Extended):
                    continue
                if event.ext_id == extension.HANDSHAKE_ID:
                    try:
                        hs = extension.decode_handshake(event.payload)
                    except ProtocolError as exc:
                        raise BadMetadataPeer(str(exc)) from None
                    remote_id = hs.m.get("ut_metadata") or None
                    swarm.ready(addr, hs.metadata_size, remote_id)
                elif event.ext_id == local_id:
                    paused = self._on_metadata(conn, addr, event.payload, asked, remote_id)
                    if paused:
                        paused_until = trio.current_time() + 1.0
                elif event.ext_id == pex_id:
                    try:
                        pex = ut_pex.decode(event.payload)
                    except ProtocolError:
                        continue  # PEX is only a hint; a bad one costs nothing
                    self.add_peers([p.address for p in pex.added], "pex")
        self._done.set()

    def _on_metadata(
        self,
        conn: PeerConnection,
        addr: PeerAddress,
        payload: bytes,
        asked: dict[int, float],
        remote_id: int | None,
    ) -> bool:
        """One ut_metadata message; returns True after a reject (pause asking this peer)."""
        try:
            msg = ut_metadata.decode(payload)
        except ProtocolError as exc:
            raise BadMetadataPeer(str(exc)) from None
        if isinstance(msg, MetadataData):
            if asked.pop(msg.piece, None) is None:
                raise BadMetadataPeer(f"unrequested metadata piece {msg.piece}")
            try:
                self.swarm.received(addr, msg)
            except MetadataHashMismatch:
                raise
            except ProtocolError as exc:
                raise BadMetadataPeer(str(exc)) from None
        elif isinstance(msg, MetadataReject):
            if asked.pop(msg.piece, None) is not None:
                self.swarm.rejected(addr, msg.piece)
                return True
        elif isinstance(msg, ut_metadata.MetadataRequest) and remote_id is not None:
            # Nothing to serve yet: BEP 9 says reject.
            conn.queue(
                m.encode(m.Extended(remote_id, ut_metadata.encode(MetadataReject(msg.piece))))
            )
        return False


async def _first_error(
    fn: Callable[[], Awaitable[None]], errors: list[BaseException], scope: trio.CancelScope
) -> None:
    """Run one side of a connection; its failure (kept in `errors`) ends the other side."""
    try:
        await fn()
    except (ProtocolError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        errors.append(exc)
    finally:
        scope.cancel()


class BadMetadataPeer(ProtocolError):
    """A peer broke BEP 9/10 in a way that proves it useless or hostile: never dialed again."""
