"""Hostile peers against the real engine, with an honest libtorrent seeder in the same swarm.

Each test runs our `Session` in-process on its own loopback address, points it at a
`HostilePeer` (tests/hostile_peer.py) that misbehaves in one way, asserts what the engine does
about it (dropped, banned or ignored -- through `Torrent.statistics()`, the engine's state and
its log), and then shows that an honest python3-libtorrent seeder still delivers a correct file:
the download completes (a bounded wait, never a timing assertion) and every byte on disk equals
the source.

Timeouts of the engine are shortened through `TorrentConfig`/`SessionConfig` so that the cases
about timeouts (slowloris, choking forever) finish in seconds; the point is that they hold.
"""

from __future__ import annotations

import logging
import os
import random
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from hostile_peer import HostileConnection, HostilePeer, Script, idle_forever
from swarm import (
    LibtorrentPeer,
    Payload,
    TorrentFile,
    assert_same_tree,
    make_payload,
    make_torrent,
    next_loopback,
)

from torrentfs import bencode
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.session import Session, SessionConfig, open_session
from torrentfs.torrent import MAX_KNOWN_PEERS, MAX_UNREQUESTED_BLOCKS, Torrent, TorrentConfig
from torrentfs.types import BLOCK_SIZE, PeerAddress
from torrentfs.wire import messages as m

pytestmark = pytest.mark.interop

PIECE_LENGTH = 32768
PAYLOAD_SIZE = 2 * 1024 * 1024 + 12345  # 65 pieces: 7 spare bits in a bitfield, a short last one
COMPLETE_TIMEOUT = 120.0
VERDICT_TIMEOUT = 60.0


# --------------------------------------------------------------------------- fixtures


class Swarm:
    """The module's torrent, its source data and one honest libtorrent seeder."""

    def __init__(self, payload: Payload, torrent: TorrentFile, seeder: LibtorrentPeer) -> None:
        self.payload = payload
        self.torrent = torrent
        self.metainfo: Metainfo = parse_metainfo(torrent.path.read_bytes())
        self.seeder = seeder
        self.data = payload.root.read_bytes()

    def block(self, index: int, begin: int, length: int) -> bytes:
        start = index * PIECE_LENGTH + begin
        return self.data[start : start + length]

    def hostile(self, host: str | None = None) -> HostilePeer:
        return HostilePeer(
            self.torrent.info_hash, self.metainfo.num_pieces, host or next_loopback()
        )


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    base = tmp_path_factory.mktemp("hostile")
    payload = make_payload(base / "src", PAYLOAD_SIZE, seed=11)
    torrent = make_torrent(payload.root, base / "t.torrent", piece_length=PIECE_LENGTH)
    seeder = LibtorrentPeer(
        "seed", torrent.path, payload.root.parent, extra_args=["--tracker-less"], log_dir=base
    )
    seeder.start()
    try:
        yield Swarm(payload, torrent, seeder)
    finally:
        seeder.stop()


@pytest.fixture
def engine_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="torrentfs")
    return caplog


def fast_config(**overrides: float | int) -> TorrentConfig:
    """Engine limits shortened so that timeouts fire within seconds."""
    values: dict[str, float | int] = {
        "idle_timeout": 5.0,
        "request_timeout": 3.0,
        "handshake_timeout": 5.0,
        "keepalive_interval": 2.0,
    }
    values.update(overrides)
    return TorrentConfig(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def engine(
    tmp_path: Path,
    swarm: Swarm,
    config: TorrentConfig | None = None,
    **session: float | int,
) -> AsyncIterator[tuple[Session, Torrent]]:
    """Our session on a fresh loopback address, downloading the module's torrent."""
    cfg = SessionConfig(
        download_dir=tmp_path / "dl",
        state_dir=tmp_path / "state",
        listen_host=next_loopback(),
        listen_port=0,
        dht=False,
        trackers=False,
        handshake_timeout=5.0,
        torrent=config or fast_config(),
    )
    for key, value in session.items():
        setattr(cfg, key, value)
    async with open_session(cfg) as s:
        torrent = await s.add_torrent(swarm.metainfo, download_all=True)
        yield s, torrent


async def complete_from_seeder(torrent: Torrent, swarm: Swarm) -> None:
    """Add the honest seeder and wait (bounded) until every piece is verified."""
    torrent.add_peers([PeerAddress(*swarm.seeder.address)], "test")
    with trio.fail_after(COMPLETE_TIMEOUT):
        await torrent.wait_complete()


def check_download(tmp_path: Path, swarm: Swarm) -> None:
    assert_same_tree(swarm.payload, tmp_path / "dl")


def drop_reasons(caplog: pytest.LogCaptureFixture, host: str) -> list[str]:
    """Why the engine ended its connections to `host` (from its per-peer debug log lines:
    'gone: WHY', or 'broke the protocol: WHY' for bytes that came with the handshake)."""
    found = []
    for rec in caplog.records:
        text = rec.getMessage()
        if f"peer {host}:" not in text:
            continue
        for marker in (" gone: ", " broke the protocol: "):
            if marker in text:
                found.append(text.split(marker, 1)[1])
    return found


def hostile_peers(torrent: Torrent, host: str) -> int:
    return sum(1 for p in torrent.peers if p.address.host == host)


@dataclass
class Case:
    """One hostile-peer case: the hostile peer, our session and torrent, a nursery for extras."""

    peer: HostilePeer
    session: Session
    torrent: Torrent
    nursery: trio.Nursery

    @property
    def engine_host(self) -> str:
        return self.session.config.listen_host or ""

    async def dial_in(self, script: Script, peer: HostilePeer | None = None) -> None:
        """Have `peer` (default: the case's) connect to the engine and run `script`."""
        await (peer or self.peer).dial(self.engine_host, self.session.listen_port, script)

    def reasons(self, caplog: pytest.LogCaptureFixture) -> list[str]:
        return drop_reasons(caplog, self.peer.host)

    async def expect_reason(self, caplog: pytest.LogCaptureFixture, text: str) -> None:
        """Wait (bounded) for the engine to log that it dropped our peer for `text`: the peer
        may see its socket closed a moment before the engine's task logs why."""
        with trio.move_on_after(VERDICT_TIMEOUT):
            while not any(text in r for r in self.reasons(caplog)):
                await trio.sleep(0.02)
        assert any(text in r for r in self.reasons(caplog)), self.reasons(caplog)


@asynccontextmanager
async def against(
    tmp_path: Path,
    swarm: Swarm,
    script: Script | None,
    config: TorrentConfig | None = None,
    **session: float | int,
) -> AsyncIterator[Case]:
    """Our engine with a hostile peer that serves `script` (None: the test dials in itself)."""
    peer = swarm.hostile()
    async with (
        trio.open_nursery() as nursery,
        engine(tmp_path, swarm, config, **session) as (s, torrent),
    ):
        if script is not None:
            await nursery.start(peer.serve, script, s.config.listen_host)
            torrent.add_peers([PeerAddress(*peer.address)], "test")
        yield Case(peer, s, torrent, nursery)
        nursery.cancel_scope.cancel()
    check_download(tmp_path, swarm)


async def answer_requests(
    conn: HostileConnection, block: Callable[[int, int, int], bytes], copies: int = 1
) -> None:
    """Answer every request with `block(index, begin, length)`, `copies` times."""
    while True:
        frame = await conn.receive_frame(timeout=60)
        if frame.msg_id == m.REQUEST:
            index, begin, length = struct.unpack(">III", frame.payload)
            piece = m.Piece(index, begin, block(index, begin, length))
            await conn.send(*[piece] * copies)


async def offer_full_bitfield(conn: HostileConnection, *, unchoke: bool = True) -> None:
    await conn.open_as_listener()
    await conn.send(m.BitfieldMsg(conn.peer.full_bitfield()))
    if unchoke:
        await conn.send(m.Unchoke())


# --------------------------------------------------------------------------- the cases


async def test_wrong_piece_data_gets_the_peer_banned(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    async def liar(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn)
        await answer_requests(conn, lambda _i, _b, length: os.urandom(length))

    async def redial(conn: HostileConnection) -> None:
        await conn.open_as_dialer()
        await conn.wait_closed()

    async with against(tmp_path, swarm, liar) as case:
        await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
        stats = case.torrent.statistics()
        assert case.peer.host in case.torrent.banned
        assert stats.banned == 1 and stats.hash_failures >= 1
        assert stats.pieces_verified == 0
        await case.expect_reason(engine_log, "banned:")
        # A banned address is refused before the engine answers its handshake.
        refused = case.peer.refused
        await case.dial_in(redial)
        assert case.peer.refused == refused + 1
        await complete_from_seeder(case.torrent, swarm)


async def test_pieces_never_asked_for_are_ignored_then_the_peer_is_dropped(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    """Unrequested blocks are never buffered (a stranger's bytes mixed into an honest peer's
    piece would get the honest peer blamed for the hash failure); too many drop the peer."""
    rng = random.Random(5)

    async def push(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn, unchoke=False)  # choking: nothing is ever requested
        for _ in range(MAX_UNREQUESTED_BLOCKS + 100):
            index = rng.randrange(swarm.metainfo.num_pieces - 1)
            await conn.send(m.Piece(index, BLOCK_SIZE * rng.randrange(2), os.urandom(BLOCK_SIZE)))
        await idle_forever(conn)

    async with against(tmp_path, swarm, push) as case:
        await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
        stats = case.torrent.statistics()
        assert stats.downloaded == 0 and stats.hash_failures == 0 and stats.pieces_verified == 0
        assert case.peer.requests == []
        await case.expect_reason(engine_log, "unrequested")
        await complete_from_seeder(case.torrent, swarm)


async def test_duplicate_blocks_are_ignored_and_credited_once(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    async def twice(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn)
        await answer_requests(conn, swarm.block, copies=2)

    async with against(tmp_path, swarm, twice) as case:
        with trio.fail_after(VERDICT_TIMEOUT):
            while case.torrent.statistics().pieces_verified < 4:
                await trio.sleep(0.05)
        await complete_from_seeder(case.torrent, swarm)
        stats = case.torrent.statistics()
        assert stats.hash_failures == 0 and stats.banned == 0
        assert stats.downloaded == swarm.metainfo.total_size  # every block credited once
        assert case.peer.closed_by_remote == 0


@pytest.mark.parametrize(
    ("where", "reason"),
    [("index", "out of range"), ("begin", "beyond the end"), ("length", "piece message with")],
)
async def test_out_of_range_blocks_drop_the_peer(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture, where: str, reason: str
) -> None:
    last = swarm.metainfo.num_pieces - 1
    wild = {  # a block past the last piece, past a piece's end, longer than any accepted
        "index": m.encode(m.Piece(last + 7, 0, b"x" * BLOCK_SIZE)),
        "begin": m.encode(m.Piece(last, swarm.metainfo.piece_size(last) - 10, b"x" * BLOCK_SIZE)),
        "length": struct.pack(">IBII", 9 + 200_000, m.PIECE, 0, 0) + bytes(1000),
    }[where]

    async def send_wild(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn)
        await conn.receive_until(m.REQUEST)
        await conn.send_raw(wild)
        await conn.wait_closed()

    async with against(tmp_path, swarm, send_wild) as case:
        await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
        await case.expect_reason(engine_log, reason)
        assert case.torrent.statistics().banned == 0  # a protocol violation drops, not bans
        await complete_from_seeder(case.torrent, swarm)


async def test_have_for_missing_pieces_then_choking_forever_is_outlived(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    choked = trio.Event()
    requests_before_choke = 0

    async def tease(conn: HostileConnection) -> None:
        nonlocal requests_before_choke
        await conn.open_as_listener()
        for i in range(swarm.metainfo.num_pieces):  # claims every piece, has none
            await conn.send(m.Have(i))
        await conn.send(m.Unchoke())
        await conn.receive_until(m.REQUEST)
        await conn.send(m.Choke())  # ... and never answers, never unchokes again
        requests_before_choke = len(conn.peer.requests)
        choked.set()
        await idle_forever(conn)

    async with against(tmp_path, swarm, tease) as case:
        with trio.fail_after(VERDICT_TIMEOUT):
            await choked.wait()
        await complete_from_seeder(case.torrent, swarm)
        stats = case.torrent.statistics()
        assert stats.hash_failures == 0 and stats.banned == 0
        # Ignored: still connected, but nothing more is asked of it once it choked (its
        # unanswered requests timed out and went to the seeder). Requests already in the
        # socket when it choked may still arrive: allow one pipeline's worth.
        assert hostile_peers(case.torrent, case.peer.host) == 1
        late = case.peer.requests[requests_before_choke + case.torrent.config.max_pipeline :]
        assert late == [], "the engine kept asking a peer that chokes it"


async def test_bitfield_with_spare_bits_set_drops_the_peer(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    assert swarm.metainfo.num_pieces % 8  # the last bitfield byte has spare bits

    async def spare_bits(conn: HostileConnection) -> None:
        await conn.open_as_listener()
        await conn.send(m.BitfieldMsg(b"\xff" * ((swarm.metainfo.num_pieces + 7) // 8)))
        await conn.wait_closed()

    async with against(tmp_path, swarm, spare_bits) as case:
        await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
        await case.expect_reason(engine_log, "spare")
        await complete_from_seeder(case.torrent, swarm)


async def test_message_flood_costs_only_that_peer(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(9)
    n = swarm.metainfo.num_pieces
    flooded = trio.Event()
    sent = 0

    async def flood(conn: HostileConnection) -> None:
        nonlocal sent
        await conn.open_as_listener()
        await conn.send(m.HaveNone())
        for _ in range(40):
            batch = [
                m.Have(rng.randrange(n)),
                m.KeepAlive(),
                m.Interested(),
                m.NotInterested(),
                m.Suggest(rng.randrange(n)),
                m.AllowedFast(rng.randrange(n)),
                m.Cancel(rng.randrange(n - 1), 0, BLOCK_SIZE),
                m.RejectRequest(rng.randrange(n - 1), 0, BLOCK_SIZE),
                m.Port(6881),
            ] * 500
            unknown = struct.pack(">IB", 101, 99) + bytes(100)  # unknown id: ignored (BEP 3)
            await conn.send_raw(b"".join(m.encode(x) for x in batch) + unknown * 200)
            sent += len(batch) + 200
        flooded.set()
        await idle_forever(conn)

    async with against(tmp_path, swarm, flood) as case:
        await complete_from_seeder(case.torrent, swarm)
        with trio.fail_after(VERDICT_TIMEOUT):
            await flooded.wait()
        assert sent == 40 * (9 * 500 + 200)
        # Legal if useless messages are ignored: the flooder stays, costing only its own CPU.
        assert case.peer.closed_by_remote == 0
        assert hostile_peers(case.torrent, case.peer.host) == 1
        stats = case.torrent.statistics()
        assert stats.hash_failures == 0 and stats.banned == 0


async def test_request_flood_from_a_peer_that_never_reads_is_cut_off(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    """Memory per peer: what we owe a peer is bounded by the outbox cap, and a peer that stops
    reading (but keeps sending keep-alives) is dropped once a write makes no progress."""

    async def never_read(conn: HostileConnection) -> None:
        await conn.open_as_dialer()
        await conn.send(m.Interested())
        last = swarm.metainfo.num_pieces - 1
        for _ in range(2000):
            batch = [m.Request(i, 0, 2 * BLOCK_SIZE) for i in range(last)]  # 32 KiB each
            await conn.send_raw(b"".join(m.encode(r) for r in batch))
        while True:
            await trio.sleep(1.0)
            await conn.send(m.KeepAlive())

    async with against(tmp_path, swarm, None) as case:
        await complete_from_seeder(case.torrent, swarm)
        case.nursery.start_soon(case.dial_in, never_read)
        await case.expect_reason(engine_log, "does not read")
        assert hostile_peers(case.torrent, case.peer.host) == 0


async def test_2gib_length_prefix_drops_the_peer_at_once(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    async def huge(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn)
        await conn.send_raw(struct.pack(">IB", 2**31, m.PIECE) + bytes(8))
        await conn.wait_closed()

    async with against(tmp_path, swarm, huge) as case:
        await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
        await case.expect_reason(engine_log, "2147483648")
        await complete_from_seeder(case.torrent, swarm)


async def dribble(conn: HostileConnection, data: bytes) -> None:
    """Slowloris: one byte a second (the issue says a minute; the engine's timeouts are
    shortened to 5 s here, the point being that they hold)."""
    for byte in data:
        await conn.send_raw(bytes([byte]))
        await trio.sleep(1.0)


@pytest.mark.parametrize("stage", ["messages", "handshake"])
async def test_slowloris_is_timed_out(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture, stage: str
) -> None:
    """Every byte is new data but no message ever ends: the idle timeout counts complete
    messages, the handshake timeout the whole handshake."""

    async def in_messages(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn)
        await dribble(conn, m.encode(m.Piece(0, 0, bytes(BLOCK_SIZE))))

    async def in_handshake(conn: HostileConnection) -> None:
        await dribble(conn, conn.handshake_bytes())
        await conn.wait_closed()

    async with against(tmp_path, swarm, in_messages if stage == "messages" else None) as case:
        if stage == "handshake":
            case.nursery.start_soon(case.dial_in, in_handshake)
        case.nursery.start_soon(complete_from_seeder, case.torrent, swarm)
        await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
        if stage == "messages":
            await case.expect_reason(engine_log, "idle")
        else:
            assert case.peer.refused == 1  # never got past the handshake
        with trio.fail_after(COMPLETE_TIMEOUT):
            await case.torrent.wait_complete()


def extended_handshake(fields: dict[bytes, object]) -> m.Extended:
    return m.Extended(0, bencode.encode(fields))


async def test_metadata_size_of_1gb_is_refused(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    """BEP 9: a peer announcing a 1 GB info dict is dropped before anything is sized from it."""

    async def big_metadata(conn: HostileConnection) -> None:
        await conn.open_as_listener()
        await conn.send(
            extended_handshake({b"m": {b"ut_metadata": 3}, b"metadata_size": 1 << 30}),
            m.HaveAll(),
            m.Unchoke(),
        )
        await conn.wait_closed()

    async with against(tmp_path, swarm, big_metadata) as case:
        await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
        await case.expect_reason(engine_log, "metadata_size")
        await complete_from_seeder(case.torrent, swarm)


DEEP = b"d1:m" + b"l" * 30_000 + b"e" * 30_000 + b"e"  # under the 64 KiB handshake cap


@pytest.mark.parametrize("ext_id", [0, 1, 2, 77])
async def test_deeply_nested_bencode_in_extension_messages(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture, ext_id: int
) -> None:
    """Depth is capped before anything is built. The extended handshake (id 0) and every id
    the engine announced in its own handshake's ``m`` are decoded: the peer is dropped. Ids it
    did not announce are never decoded: ignored."""
    decoded = trio.Event()

    async def deep(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn)
        await conn.receive_until(m.EXTENDED)  # the engine's extended handshake comes first
        decoded.set()
        await conn.send(m.Extended(ext_id, DEEP))
        await idle_forever(conn)

    async with against(tmp_path, swarm, deep) as case:
        with trio.fail_after(VERDICT_TIMEOUT):
            await decoded.wait()
        if ext_id == 0 or ext_id in case.peer.engine_extensions.values():
            await case.peer.wait_closed_by_remote(timeout=VERDICT_TIMEOUT)
            await case.expect_reason(engine_log, "nest")
            await complete_from_seeder(case.torrent, swarm)
        else:
            await complete_from_seeder(case.torrent, swarm)
            assert case.peer.closed_by_remote == 0


async def test_pex_with_thousands_of_addresses_stays_bounded(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    sent = trio.Event()
    added = b"".join(struct.pack(">BBBBH", 10, i >> 8, i & 0xFF, 1, 6881) for i in range(5000))

    async def pex(conn: HostileConnection) -> None:
        await offer_full_bitfield(conn, unchoke=False)
        await conn.send(extended_handshake({b"m": {b"ut_pex": 1}, b"v": b"hostile"}))
        for _ in range(5):
            await conn.send(m.Extended(2, bencode.encode({b"added": added, b"added.f": b""})))
        sent.set()
        await idle_forever(conn)

    async with against(tmp_path, swarm, pex) as case:
        with trio.fail_after(VERDICT_TIMEOUT):
            await sent.wait()
        await complete_from_seeder(case.torrent, swarm)
        assert len(case.torrent.known) <= MAX_KNOWN_PEERS


def test_candidate_peers_are_capped() -> None:
    """However many addresses trackers, PEX or the DHT hand over, at most MAX_KNOWN_PEERS."""
    meta = parse_metainfo(
        bencode.encode(
            {b"info": {b"name": b"x", b"length": 1, b"piece length": 16384, b"pieces": bytes(20)}}
        )
    )
    torrent = Torrent(meta, None, peer_id=bytes(20), listen_port=1, config=TorrentConfig())  # type: ignore[arg-type]
    addrs = [PeerAddress(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1) for i in range(50_000)]
    torrent.add_peers(addrs, "test")
    assert len(torrent.known) == MAX_KNOWN_PEERS


async def test_connection_churn_leaks_nothing(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    rounds = 150

    async def hello_goodbye(conn: HostileConnection) -> None:
        await conn.open_as_dialer()
        await conn.send(m.HaveNone(), m.Interested())

    async def silent(conn: HostileConnection) -> None:
        pass  # connect, say nothing, hang up

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with against(tmp_path, swarm, None) as case:
        await trio.sleep(0.1)
        before = open_fds()
        async with trio.open_nursery() as nursery:
            for i in range(rounds):
                nursery.start_soon(case.dial_in, hello_goodbye)
                nursery.start_soon(case.dial_in, silent)
                if i % 10 == 9:
                    await trio.sleep(0.05)
        assert case.peer.connections == 2 * rounds
        with trio.fail_after(VERDICT_TIMEOUT):
            while hostile_peers(case.torrent, case.peer.host) or open_fds() > before:
                await trio.sleep(0.05)
        await complete_from_seeder(case.torrent, swarm)


async def test_connection_caps_hold(
    tmp_path: Path, swarm: Swarm, engine_log: pytest.LogCaptureFixture
) -> None:
    """Per-torrent peers and pending incoming handshakes are capped; extra connections are
    closed at once."""
    crowd = [swarm.hostile() for _ in range(12)]
    mutes = swarm.hostile()
    most = 0

    async def stay(conn: HostileConnection) -> None:
        await conn.open_as_dialer()
        await conn.send(m.HaveNone())
        await idle_forever(conn)

    async def mute(conn: HostileConnection) -> None:
        await conn.wait_closed()  # never sends a handshake

    config = fast_config(max_peers=5)
    async with against(
        tmp_path, swarm, None, config, max_pending_handshakes=8, handshake_timeout=3600.0
    ) as case:
        for peer in crowd:
            case.nursery.start_soon(case.dial_in, stay, peer)
        with trio.fail_after(VERDICT_TIMEOUT):
            while sum(p.closed_by_remote for p in crowd) < len(crowd) - 5:
                most = max(most, len(case.torrent.peers))
                await trio.sleep(0.01)
        most = max(most, len(case.torrent.peers))
        assert most <= 5 and len(case.torrent.peers) == 5
        assert case.session.statistics()[0].peers == 5
        # Connections that never handshake hold at most 8 slots; the rest are closed at once
        # (the handshake timeout is an hour here, so only the cap can close them).
        for _ in range(40):
            case.nursery.start_soon(case.dial_in, mute, mutes)
        with trio.fail_after(VERDICT_TIMEOUT):
            while mutes.closed_by_remote < 40 - 8:
                await trio.sleep(0.01)
        assert mutes.connections == 40
        case.torrent.config.max_peers = 6  # room for the seeder
        await complete_from_seeder(case.torrent, swarm)
