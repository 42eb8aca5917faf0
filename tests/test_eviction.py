"""The disk budget's pure policy (`torrentfs.eviction`): LRU order, protection, sizes, pins."""

from __future__ import annotations

import hashlib

import fastbencode
from hypothesis import given
from hypothesis import strategies as st

from torrentfs.eviction import (
    FS_BLOCK,
    LruLedger,
    PinRules,
    SourcePin,
    bytes_to_free,
    edge_pieces,
    footprint,
    footprints,
    is_media,
    low_water,
    parse_pin_value,
    readahead_cap,
)
from torrentfs.metainfo import Metainfo, parse_metainfo

MiB = 1 << 20


def torrent(files: list[tuple[str, int]], piece_length: int, name: str = "Show") -> Metainfo:
    total = sum(n for _, n in files)
    count = -(-total // piece_length)
    info: dict[bytes, object] = {
        b"name": name.encode(),
        b"piece length": piece_length,
        b"pieces": hashlib.sha1(b"x").digest() * count,
    }
    if len(files) == 1 and "/" not in files[0][0] and files[0][0] == name:
        info[b"length"] = files[0][1]
    else:
        info[b"files"] = [
            {b"length": n, b"path": [p.encode() for p in path.split("/")]} for path, n in files
        ]
    return parse_metainfo(fastbencode.bencode({b"info": info}))


# ------------------------------------------------------------------------------ the ledger


def test_plan_takes_least_recently_read_first_and_skips_protected() -> None:
    ledger: LruLedger[str] = LruLedger()
    for piece in range(6):
        ledger.add("a", piece, 100)
    ledger.touch("a", [0, 1])  # read again: now the newest
    protected = {2}
    plan = ledger.plan(250, lambda key, piece: piece not in protected)
    assert plan == [("a", 3), ("a", 4), ("a", 5)]
    assert ledger.plan(0, lambda k, p: True) == []
    assert ledger.plan(10_000, lambda k, p: p != 1) == [("a", p) for p in (2, 3, 4, 5, 0)]


def test_pieces_found_at_start_are_oldest_and_drop_forgets_a_torrent() -> None:
    ledger: LruLedger[str] = LruLedger()
    ledger.add("a", 7, 10)
    ledger.add("b", 1, 10, recent=False)
    assert ledger.oldest() == [("b", 1), ("a", 7)]
    ledger.touch("b", [99])  # unknown piece: ignored
    ledger.drop("b")
    assert ledger.oldest() == [("a", 7)] and len(ledger) == 1
    ledger.discard("a", 7)
    assert ("a", 7) not in ledger


@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), max_size=60), st.integers(0, 3000))
def test_plan_frees_enough_or_everything_evictable(ops: list[tuple[int, bool]], need: int) -> None:
    ledger: LruLedger[int] = LruLedger()
    for piece, touch in ops:
        if touch:
            ledger.touch(0, [piece])
        else:
            ledger.add(0, piece, 100 + piece)
    plan = ledger.plan(need, lambda k, p: p % 3 != 0)
    freed = sum(ledger.size_of(*item) for item in plan)
    evictable = [item for item in ledger.oldest() if item[1] % 3 != 0]
    assert all(p % 3 != 0 for _, p in plan)
    assert plan == evictable[: len(plan)]  # in LRU order
    if need > 0:
        assert freed >= need or plan == evictable
        if plan:  # minimal: without the last one it would not be enough
            assert freed - ledger.size_of(*plan[-1]) < need


# ------------------------------------------------------------------------------ sizes


def test_budget_arithmetic() -> None:
    limit = 128 * MiB
    assert bytes_to_free(10, 20, limit) == 0
    assert bytes_to_free(limit - 5, 5, limit) == 0
    assert bytes_to_free(limit, 1 * MiB, limit) == limit + MiB - low_water(limit)
    assert low_water(limit) == 120 * MiB
    assert readahead_cap(limit) == 32 * MiB
    assert readahead_cap(4 * MiB, piece_length=4 * MiB) == 8 * MiB


def test_footprint_rounds_each_file_slice_out_to_blocks() -> None:
    m = torrent([("a.bin", 5000), ("b.bin", 60_000)], 32768)
    # piece 0 = a.bin[0:5000] (2 blocks) + b.bin[0:27768] (7 blocks)
    assert footprints(m, 0) == [(0, 2 * FS_BLOCK), (1, 7 * FS_BLOCK)]
    # piece 1 = b.bin[27768:60000]: blocks 6..14 inclusive
    assert footprint(m, 1) == 9 * FS_BLOCK
    assert footprint(m, 0) >= m.piece_size(0)


# ------------------------------------------------------------------------------ media edges


def test_head_and_tail_of_media_files_only() -> None:
    m = torrent([("film.MKV", 64 * MiB), ("notes.txt", 8 * MiB)], MiB)
    edges = edge_pieces(m)
    assert {0, 1, 62, 63} <= edges  # 2 MiB head and tail of the film
    assert all(p < 64 for p in edges) and len(edges) == 4
    assert is_media(("a", "b.mp4")) and not is_media(("mp4",)) and not is_media(())


# ------------------------------------------------------------------------------ pins


def test_pin_rules_match_names_hashes_and_file_paths() -> None:
    m = torrent([("S01/e1.mkv", 100), ("S01/e2.mkv", 100), ("extra.txt", 10)], 32768)
    rules = PinRules(("Show/S01/e2.*", "other*"))
    assert not rules.torrent_pinned("Show", m.info_hash.hex())
    assert rules.pinned_files(m) == [1]
    assert PinRules((m.info_hash.hex().upper(),)).torrent_pinned("Show", m.info_hash.hex())
    assert PinRules(("Sh*",)).torrent_pinned("Show", "00" * 20)
    assert PinRules(("S01/*",)).pinned_files(m, relative=True) == [0, 1]
    assert not PinRules() and PinRules(("x",))
    single = torrent([("Film.mkv", 100)], 32768, name="Film.mkv")
    assert PinRules(("Film.mkv",)).pinned_files(single) == []  # the torrent itself is pinned


def test_pin_values() -> None:
    assert parse_pin_value(b"") == SourcePin(whole=True)
    assert parse_pin_value(b"1\n") == SourcePin(whole=True)
    assert parse_pin_value(b"0") == SourcePin() and not parse_pin_value(b"no")
    assert parse_pin_value(b"S01/e1.mkv, /extra.txt\nS02/*") == SourcePin(
        files=("S01/e1.mkv", "extra.txt", "S02/*")
    )
    assert not parse_pin_value(b"\xff\xfe") and not parse_pin_value(b"a" * 5000)
