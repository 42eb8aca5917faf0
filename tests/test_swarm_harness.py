"""The real-swarm harness works: opentracker and two python3-libtorrent peers move a payload.

This is the harness's own test (no torrentfs code involved): if it fails, every interop test
built on ``tests/swarm.py`` is suspect.  It proves that

* a seeder and a leecher on distinct loopback addresses find each other through opentracker,
  by HTTP announce (BEP 3) and by UDP announce (BEP 15), and the leecher's files equal the source;
* the whitelist, the ``ready``/``done`` handshakes and teardown work;
* a ``--corrupt`` seeder really sends bad data (libtorrent's leecher sees hash failures), so
  "bad peer" tests built on it test something;
* payloads are deterministic.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from swarm import (
    MULTI_LAYOUT,
    HarnessError,
    Opentracker,
    PeerFactory,
    assert_same_tree,
    make_payload,
    make_torrent,
    next_loopback,
)

pytestmark = pytest.mark.interop


def test_payload_is_deterministic_and_has_the_promised_shape(tmp_path: Path) -> None:
    a = make_payload(tmp_path / "a", "multi", seed=7)
    b = make_payload(tmp_path / "b", "multi", seed=7)
    c = make_payload(tmp_path / "c", "multi", seed=8)
    assert a.digests() == b.digests()
    assert a.digests() != c.digests()
    assert a.files == MULTI_LAYOUT
    assert (a.root / "empty.txt").stat().st_size == 0
    assert any(not rel.isascii() for rel, _ in a.files)
    single = make_payload(tmp_path / "s", 100_000, seed=1)
    assert not single.multi_file and single.root.stat().st_size == 100_000


def test_loopback_addresses_are_distinct_and_never_127_0_0_1() -> None:
    seen = [next_loopback() for _ in range(600)]
    assert len(set(seen)) == len(seen)
    assert "127.0.0.1" not in seen
    assert all(a.startswith("127.") and not a.endswith((".0", ".255")) for a in seen)


@pytest.mark.parametrize("announce", ["http", "udp"])
def test_lt_seeder_to_lt_leecher_through_opentracker(
    announce: str,
    tmp_path: Path,
    tracker: Opentracker,
    lt_seeder_factory: PeerFactory,
    lt_leecher_factory: PeerFactory,
) -> None:
    payload = make_payload(tmp_path / "src", "multi", seed=3)
    url = tracker.http_url if announce == "http" else tracker.udp_url
    torrent = make_torrent(payload.root, tmp_path / "p.torrent", trackers=[url])
    assert torrent.total_size == payload.total_size
    assert torrent.num_pieces > 5  # several pieces, files crossing their boundaries
    tracker.allow(torrent.info_hash)

    seeder = lt_seeder_factory(torrent, payload.root.parent, check=True)
    # The leecher must learn of the seeder from its first announce: wait until it counts.
    tracker.wait_seeders(torrent.info_hash)
    leecher = lt_leecher_factory(torrent, tmp_path / "out")
    assert leecher.host != seeder.host
    stats = leecher.wait_done()

    assert stats["bytes"] == payload.total_size
    assert stats["recheck"] is True
    assert stats["hash_failures"] == 0
    assert_same_tree(payload, tmp_path / "out")
    announced = [e for e in leecher.events if e.get("event") == "announced"]
    assert announced and announced[0]["url"] == url
    assert seeder.stop() == 0


def test_unwhitelisted_torrent_is_refused_by_the_tracker(
    tmp_path: Path, tracker: Opentracker
) -> None:
    payload = make_payload(tmp_path / "src", 40_000)
    torrent = make_torrent(payload.root, trackers=[tracker.http_url])
    assert not tracker._authorised(torrent.info_hash)
    tracker.allow(torrent.info_hash)
    assert tracker._authorised(torrent.info_hash)


def test_corrupt_seeder_sends_bad_pieces(
    tmp_path: Path, lt_seeder_factory: PeerFactory, lt_leecher_factory: PeerFactory
) -> None:
    payload = make_payload(tmp_path / "src", 300_000, seed=5)
    torrent = make_torrent(payload.root, tmp_path / "p.torrent")
    with payload.root.open("r+b") as f:  # flip bytes inside piece 2 only
        f.seek(2 * torrent.piece_length + 100)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    seeder = lt_seeder_factory(torrent, payload.root.parent, corrupt=True, tracker_less=True)
    leecher = lt_leecher_factory(torrent, tmp_path / "out", tracker_less=True, peers=[seeder])
    leecher.wait_stderr("hash for piece 2 failed")
    assert not any(e.get("event") == "done" for e in leecher.drain_events())


def test_check_seeder_refuses_incomplete_data(
    tmp_path: Path, lt_seeder_factory: PeerFactory
) -> None:
    payload = make_payload(tmp_path / "src", 100_000, seed=6)
    torrent = make_torrent(payload.root, tmp_path / "p.torrent")
    with payload.root.open("r+b") as f:
        f.truncate(50_000)
    with pytest.raises(HarnessError, match="data incomplete"):
        lt_seeder_factory(torrent, payload.root.parent, check=True, tracker_less=True)
