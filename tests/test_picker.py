"""PiecePicker: states drawn as string pictures, plus a hypothesis state machine.

Pictures: one character per piece, ``1`` = has it, ``.`` (or ``0``) = lacks it. Unless said
otherwise a piece is 4 blocks of 16 KiB.
"""

from __future__ import annotations

import random
from itertools import groupby

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from torrentfs.bitfield import Bitfield
from torrentfs.geometry import Geometry
from torrentfs.picker import MAX_REQUESTS_PER_BLOCK, PiecePicker, Priority
from torrentfs.types import BLOCK_SIZE

BPP = 4  # blocks per piece in most tests
PIECE = BPP * BLOCK_SIZE


def bits(picture: str) -> Bitfield:
    bf = Bitfield(len(picture))
    for i, c in enumerate(picture):
        if c == "1":
            bf.set(i)
    return bf


def picture(bf: Bitfield) -> str:
    return "".join("1" if bf[i] else "." for i in range(len(bf)))


def make(
    have: str, *, seed: int = 0, last_piece: int | None = None, **kwargs: float
) -> PiecePicker[str]:
    n = len(have)
    total = n * PIECE if last_piece is None else (n - 1) * PIECE + last_piece
    geometry = Geometry(PIECE, total, [(0, total)])
    return PiecePicker(geometry, bits(have), rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]


def pieces(blocks: list[tuple[int, int, int]]) -> list[int]:
    """The pieces of a pick, in order, consecutive repeats folded: [2,2,2,3] -> [2, 3]."""
    return [p for p, _ in groupby(b[0] for b in blocks)]


def whole(piece: int, blocks: int = BPP) -> list[tuple[int, int, int]]:
    return [(piece, b * BLOCK_SIZE, BLOCK_SIZE) for b in range(blocks)]


def receive_all(pp: PiecePicker[str], blocks: list[tuple[int, int, int]], peer: str) -> None:
    for piece, begin, length in blocks:
        assert pp.block_received(piece, begin, peer, length).accepted


# -- wants decide what is picked ---------------------------------------------------------


def test_nothing_is_picked_without_a_want() -> None:
    pp = make("........")
    pp.peer_have_all("A")
    assert pp.pick("A", 100, 0.0) == []
    assert not pp.is_interesting("A")
    assert pp.wanted_pieces() == []


def test_streaming_want_is_picked_in_piece_order_skipping_what_we_have() -> None:
    pp = make("11.1....")
    pp.peer_bitfield("A", bits("11111111"))
    pp.add_want("read", 0, 5, Priority.NOW, deadline=10.0)
    out = pp.pick("A", 100, 0.0)
    assert pieces(out) == [2, 4, 5]
    assert out[:BPP] == whole(2)
    assert pp.pick("A", 100, 0.0) == []  # every block is requested once already


def test_only_pieces_the_peer_has() -> None:
    pp = make("........")
    pp.peer_bitfield("A", bits("1.1..1.."))
    pp.add_want("w", 0, 7, Priority.NORMAL)
    assert sorted(pieces(pp.pick("A", 100, 0.0))) == [0, 2, 5]
    assert pp.is_interesting("A")


def test_count_limits_and_next_pick_continues_where_it_stopped() -> None:
    pp = make("......")
    pp.peer_have_all("A")
    pp.add_want("w", 0, 5, Priority.HIGH, deadline=1.0)
    first = pp.pick("A", 6, 0.0)
    assert first == [*whole(0), *whole(1)[:2]]
    assert pp.pick("A", 3, 0.0) == [*whole(1)[2:], whole(2)[0]]


def test_earliest_deadline_first_then_priority() -> None:
    pp = make("..........")
    pp.peer_have_all("A")
    pp.add_want("later", 0, 1, Priority.NOW, deadline=20.0)
    pp.add_want("sooner", 6, 7, Priority.HIGH, deadline=5.0)
    pp.add_want("same-deadline-lower", 4, 4, Priority.HIGH, deadline=20.0)
    pp.add_want("no-deadline-high", 9, 9, Priority.HIGH)
    pp.add_want("normal", 8, 8, Priority.NORMAL)
    assert pieces(pp.pick("A", 100, 0.0)) == [6, 7, 0, 1, 4, 9, 8]


def test_overlapping_wants_take_the_earliest_deadline() -> None:
    pp = make("..........")
    pp.peer_have_all("A")
    pp.add_want("a", 0, 5, Priority.HIGH, deadline=10.0)
    pp.add_want("b", 4, 8, Priority.HIGH, deadline=3.0)
    assert pieces(pp.pick("A", 100, 0.0)) == [4, 5, 6, 7, 8, 0, 1, 2, 3]


def test_updating_a_want_moves_it() -> None:
    pp = make("..........")
    pp.peer_have_all("A")
    pp.add_want("win", 0, 1, Priority.NOW, deadline=1.0)
    assert pieces(pp.pick("A", BPP, 0.0)) == [0]
    pp.add_want("win", 7, 8, Priority.NOW, deadline=2.0)  # a seek: the old window is gone
    assert pieces(pp.pick("A", 100, 0.0)) == [7, 8]
    assert pp.wanted_pieces() == [7, 8]


def test_remove_want_and_skip_want_download_nothing() -> None:
    pp = make("....")
    pp.peer_have_all("A")
    pp.add_want("w", 0, 3, Priority.NORMAL)
    pp.remove_want("w")
    pp.remove_want("never-added")
    pp.add_want("s", 0, 3, Priority.SKIP, deadline=0.0)
    assert pp.pick("A", 100, 0.0) == []
    assert pp.missing_wanted_count() == 0


def test_bad_want_range_is_refused() -> None:
    pp = make("....")
    with pytest.raises(ValueError):
        pp.add_want("w", 2, 4, Priority.NORMAL)
    with pytest.raises(ValueError):
        pp.add_want("w", 3, 2, Priority.NORMAL)


def test_download_all_wants_everything_missing() -> None:
    pp = make("1.1.")
    pp.peer_have_all("A")
    pp.set_download_all(True)
    assert pp.missing_wanted_count() == 2
    assert pp.wanted_pieces() == [0, 1, 2, 3]
    assert sorted(pieces(pp.pick("A", 100, 0.0))) == [1, 3]
    pp.set_download_all(False)
    assert pp.missing_wanted_count() == 0


# -- NORMAL: in-flight pieces first, then rarest first ------------------------------------


def test_rarest_first() -> None:
    pp = make("......")
    pp.peer_bitfield("A", bits("111111"))
    pp.peer_bitfield("B", bits("11.111"))
    pp.peer_bitfield("C", bits("1..1.1"))
    pp.add_want("w", 0, 5, Priority.NORMAL)
    # availability: 3 2 1 3 2 3
    assert [pp.availability(i) for i in range(6)] == [3, 2, 1, 3, 2, 3]
    out = pieces(pp.pick("A", 100, 0.0))
    assert out[0] == 2
    assert sorted(out[1:3]) == [1, 4]
    assert sorted(out[3:]) == [0, 3, 5]


def test_seeds_count_once_for_every_piece() -> None:
    pp = make("....")
    pp.peer_have_all("S")
    pp.peer_bitfield("B", bits("1.11"))
    assert [pp.availability(i) for i in range(4)] == [2, 1, 2, 2]
    pp.add_want("w", 0, 3, Priority.NORMAL)
    assert pieces(pp.pick("S", BPP, 0.0)) == [1]


def test_random_tie_break_is_seeded() -> None:
    def order(seed: int) -> list[int]:
        pp = make("." * 32, seed=seed)
        pp.peer_have_all("A")
        pp.add_want("w", 0, 31, Priority.NORMAL)
        return pieces(pp.pick("A", 1000, 0.0))

    assert order(1) == order(1)
    assert sorted(order(1)) == list(range(32))
    assert len({tuple(order(s)) for s in range(5)}) > 1


def test_in_flight_pieces_are_finished_before_new_ones() -> None:
    pp = make("......")
    pp.peer_have_all("A")
    pp.peer_have_all("B")
    pp.add_want("w", 0, 5, Priority.NORMAL)
    first = pp.pick("A", 2, 0.0)
    assert len(pieces(first)) == 1
    second = pp.pick("B", 3, 0.0)
    assert second[:2] == [(first[0][0], b * BLOCK_SIZE, BLOCK_SIZE) for b in (2, 3)]
    assert second[2][0] != first[0][0]


# -- one peer per block; endgame; time-critical --------------------------------------------


def test_blocks_go_to_one_peer_at_a_time() -> None:
    pp = make("....")
    pp.peer_have_all("A")
    pp.peer_have_all("B")
    pp.add_want("w", 0, 3, Priority.NOW, deadline=5.0)
    a = pp.pick("A", 8, 0.0)
    b = pp.pick("B", 8, 0.0)
    assert pieces(a) == [0, 1] and pieces(b) == [2, 3]
    assert not pp.in_endgame() or pp.pick("A", 1, 0.0) != []


def test_endgame_duplicates_once_and_received_block_cancels_the_other() -> None:
    pp = make("...")
    for peer in "ABC":
        pp.peer_have_all(peer)
    pp.add_want("w", 1, 1, Priority.NORMAL)
    a = pp.pick("A", 10, 0.0)
    assert a == whole(1)
    assert pp.in_endgame()
    b = pp.pick("B", 10, 0.0)
    assert b == whole(1)
    assert pp.pick("C", 10, 0.0) == []  # MAX_REQUESTS_PER_BLOCK == 2
    assert pp.pick("A", 10, 0.0) == []  # never twice from the same peer
    res = pp.block_received(1, 0, "B", BLOCK_SIZE)
    assert res.accepted and res.cancel_peers == ("A",) and not res.piece_complete
    late = pp.block_received(1, 0, "A", BLOCK_SIZE)  # the cancel came too late
    assert not late.accepted
    assert pp.requests_of("A") == whole(1)[1:]
    for begin in (BLOCK_SIZE, 2 * BLOCK_SIZE):
        assert pp.block_received(1, begin, "A").cancel_peers == ("B",)
    last = pp.block_received(1, 3 * BLOCK_SIZE, "A")
    assert last.piece_complete and last.cancel_peers == ("B",)
    assert pp.requests_of("A") == pp.requests_of("B") == []


def test_no_endgame_while_a_wanted_piece_is_unrequested() -> None:
    pp = make("....")
    pp.peer_bitfield("A", bits("1..."))
    pp.peer_bitfield("B", bits("11.."))
    pp.add_want("w", 0, 2, Priority.NORMAL)
    assert pieces(pp.pick("A", 10, 0.0)) == [0]
    # B could duplicate piece 0, but piece 1 is still unrequested: not endgame.
    assert not pp.in_endgame()
    assert pieces(pp.pick("B", BPP, 0.0)) == [1]
    # Piece 2 is wanted but nobody has it: that does not hold the endgame back.
    assert pp.in_endgame()
    assert pieces(pp.pick("B", 10, 0.0)) == [0]


def test_endgame_duplicates_urgent_pieces_first() -> None:
    pp = make("....")
    pp.peer_have_all("A")
    pp.peer_have_all("B")
    pp.add_want("bulk", 0, 3, Priority.NORMAL)
    pp.add_want("read", 3, 3, Priority.NOW, deadline=2.0)
    assert pieces(pp.pick("A", 100, 0.0))[0] == 3
    assert pieces(pp.pick("B", BPP, 0.0)) == [3]


def test_time_critical_blocks_are_duplicated_after_a_while() -> None:
    pp = make("........", time_critical_age=1.0, time_critical_margin=0.5)
    pp.peer_have_all("slow")
    pp.peer_have_all("fast")
    pp.add_want("read", 0, 0, Priority.NOW, deadline=0.0)
    pp.add_want("bulk", 1, 7, Priority.NORMAL)
    assert pp.pick("slow", BPP, 0.0) == whole(0)
    # Fresh work exists, and the slow peer's requests are young: no duplicates yet.
    assert 0 not in pieces(pp.pick("fast", 2, 0.5))
    # A second later the read is still stuck on the slow peer: ask the fast one too.
    assert pp.pick("fast", BPP, 1.0) == whole(0)
    assert pp.block_received(0, 0, "fast").cancel_peers == ("slow",)


def test_time_critical_needs_high_priority_and_near_deadline() -> None:
    pp = make("....")
    pp.peer_have_all("slow")
    pp.peer_have_all("fast")
    pp.add_want("far", 0, 0, Priority.NOW, deadline=100.0)
    pp.add_want("bulk", 1, 3, Priority.NORMAL)
    pp.pick("slow", BPP, 0.0)
    assert sorted(pieces(pp.pick("fast", 3 * BPP, 50.0))) == [1, 2, 3]
    pp2 = make("....")
    pp2.peer_have_all("slow")
    pp2.peer_have_all("fast")
    pp2.add_want("lazy", 0, 0, Priority.NORMAL, deadline=0.0)
    pp2.add_want("bulk", 1, 3, Priority.NORMAL)
    pp2.pick("slow", BPP, 0.0)
    assert sorted(pieces(pp2.pick("fast", 3 * BPP, 50.0))) == [1, 2, 3]


def test_time_critical_is_bounded_to_the_first_pieces() -> None:
    pp = make("." * 10, time_critical_pieces=2)
    pp.peer_have_all("slow")
    pp.peer_have_all("fast")
    pp.peer_have_all("idle")
    pp.add_want("read", 0, 5, Priority.NOW, deadline=0.0)
    pp.add_want("bulk", 6, 9, Priority.NORMAL)
    assert pieces(pp.pick("slow", 6 * BPP, 0.0)) == [0, 1, 2, 3, 4, 5]
    out = pieces(pp.pick("fast", 6 * BPP, 5.0))
    assert out[:2] == [0, 1]
    assert sorted(out[2:]) == [6, 7, 8, 9]


# -- outcomes: received, failed, expired, gone, verified -----------------------------------


def test_block_received_checks() -> None:
    pp = make("1...", last_piece=BLOCK_SIZE + 100)
    pp.peer_have_all("A")
    pp.add_want("w", 1, 2, Priority.NORMAL)
    nothing = (False, ())
    # we have piece 0; piece 3 is not wanted; misaligned; out of range; past the last block
    for piece, begin in [(0, 0), (3, 0), (1, 5), (9, 0), (-1, 0), (1, BPP * BLOCK_SIZE)]:
        r = pp.block_received(piece, begin, "A")
        assert (r.accepted, r.cancel_peers) == nothing, (piece, begin)
    assert not pp.block_received(1, 0, "A", length=BLOCK_SIZE - 1).accepted
    assert not pp.block_received(1, -BLOCK_SIZE, "A").accepted
    assert not pp._blocks  # refused blocks leave no in-flight state behind
    pp._check_invariants()
    # unsolicited but useful: accepted
    assert pp.block_received(1, 0, "A", length=BLOCK_SIZE).accepted
    assert not pp.block_received(1, 0, "A").accepted  # already here
    # last piece: 2 blocks, the last one 100 bytes
    pp.add_want("w2", 3, 3, Priority.NORMAL)
    out = pp.pick("A", 100, 0.0)
    assert {(3, 0, BLOCK_SIZE), (3, BLOCK_SIZE, 100)} <= set(out)
    assert pp.block_received(3, BLOCK_SIZE, "A", length=100).accepted
    # in flight now: the same checks on the fast path
    for begin, length in [(BLOCK_SIZE, 100), (0, 100), (5, None), (2 * BLOCK_SIZE, None)]:
        assert not pp.block_received(3, begin, "A", length=length).accepted, (begin, length)
    done = pp.block_received(3, 0, "A", length=BLOCK_SIZE)
    assert (done.accepted, done.piece_complete) == (True, True)
    pp._check_invariants()


def test_request_failed_puts_the_block_back() -> None:
    pp = make("..")
    pp.peer_have_all("A")
    pp.peer_have_all("B")
    pp.add_want("w", 0, 0, Priority.HIGH, deadline=1.0)
    assert pp.pick("A", 100, 0.0) == whole(0)
    pp.request_failed(0, BLOCK_SIZE, "A")  # reject
    pp.request_failed(0, BLOCK_SIZE, "A")  # twice: ignored
    pp.request_failed(1, 0, "A")  # never requested: ignored
    assert pp.pick("B", 100, 0.0)[0] == (0, BLOCK_SIZE, BLOCK_SIZE)
    assert pp.requests_of("A") == [whole(0)[i] for i in (0, 2, 3)]


def test_release_requests_on_choke_keeps_availability() -> None:
    pp = make("..")
    pp.peer_have_all("A")
    pp.add_want("w", 0, 1, Priority.NORMAL)
    out = pp.pick("A", 3, 0.0)
    assert sorted(pp.release_requests("A")) == sorted(out)
    assert pp.requests_of("A") == []
    assert pp.is_interesting("A")
    assert sorted(pp.pick("A", 3, 1.0)) == sorted(out)


def test_peer_gone_releases_requests_and_availability() -> None:
    pp = make("...")
    pp.peer_bitfield("A", bits("11."))
    pp.peer_bitfield("B", bits(".11"))
    pp.add_want("w", 0, 2, Priority.HIGH, deadline=1.0)
    assert pieces(pp.pick("A", 100, 0.0)) == [0, 1]
    pp.peer_gone("A")
    assert [pp.availability(i) for i in range(3)] == [0, 1, 1]
    assert pp.requests_of("A") == []
    assert pieces(pp.pick("B", 100, 0.0)) == [1, 2]
    assert pp.pick("A", 100, 0.0) == []  # unknown peer


def test_expired_requests_are_reissued_elsewhere() -> None:
    pp = make("..")
    pp.peer_have_all("A")
    pp.peer_have_all("B")
    pp.add_want("w", 0, 0, Priority.NORMAL)
    pp.pick("A", 2, 0.0)
    pp.pick("A", 2, 5.0)
    assert pp.expired_requests(9.0, 10.0) == []
    assert pp.expired_requests(10.0, 10.0) == [
        ("A", 0, 0, BLOCK_SIZE),
        ("A", 0, BLOCK_SIZE, BLOCK_SIZE),
    ]
    assert pp.requests_of("A") == whole(0)[2:]
    assert pp.pick("B", 2, 10.0) == whole(0)[:2]
    # the slow peer delivers after all: still useful, and B is told to cancel
    assert pp.block_received(0, 0, "A").cancel_peers == ("B",)


def test_piece_verified_and_failed() -> None:
    pp = make("...")
    pp.peer_have_all("A")
    pp.peer_have_all("B")
    pp.add_want("w", 0, 2, Priority.HIGH, deadline=0.0)
    out = pp.pick("A", BPP, 0.0)
    receive_all(pp, out[:2], "A")
    receive_all(pp, out[2:], "B")
    assert pp.piece_failed(0) == frozenset({"A", "B"})
    assert pp.pick("B", 100, 1.0)[:BPP] == whole(0)  # everything pending again
    # verifying a piece with requests outstanding (e.g. found on disk) returns them to cancel
    leftovers = pp.piece_verified(1)
    assert sorted(leftovers) == [("B", b * BLOCK_SIZE, BLOCK_SIZE) for b in range(BPP)]
    assert picture(pp.have) == ".1."
    assert pp.piece_verified(1) == []
    assert pp.missing_wanted_count() == 2
    assert not pp.block_received(1, 0, "B").accepted
    assert all(p != 1 for p, _, _ in pp.requests_of("B"))
    pp.request_failed(1, 0, "B")  # a reject for a cancelled request: harmless
    pp._check_invariants()


def test_have_and_interest_follow_announcements() -> None:
    pp = make("1...")
    pp.peer_have_none("A")
    pp.add_want("w", 0, 1, Priority.NORMAL)
    assert not pp.is_interesting("A")
    pp.peer_have("A", 0)  # we have it already
    assert not pp.is_interesting("A")
    pp.peer_have("A", 1)
    pp.peer_have("A", 1)  # repeated have is counted once
    assert pp.availability(1) == 1
    assert pp.is_interesting("A")
    assert pieces(pp.pick("A", 100, 0.0)) == [1]
    receive_all(pp, whole(1), "A")
    pp.piece_verified(1)
    assert not pp.is_interesting("A")
    with pytest.raises(IndexError):
        pp.peer_have("A", 4)


def test_bitfield_replaces_earlier_announcements() -> None:
    pp = make("....")
    pp.peer_have_all("A")
    pp.peer_bitfield("A", bits("1..."))
    assert [pp.availability(i) for i in range(4)] == [1, 0, 0, 0]
    pp.peer_bitfield("A", bits(".1.."))
    assert [pp.availability(i) for i in range(4)] == [0, 1, 0, 0]
    pp._check_invariants()


def test_zero_piece_torrent() -> None:
    pp: PiecePicker[str] = PiecePicker(Geometry(PIECE, 0, [(0, 0)]), Bitfield(0))
    pp.peer_have_all("A")
    pp.set_download_all(True)
    assert pp.pick("A", 10, 0.0) == []
    assert pp.missing_wanted_count() == 0


def test_many_pieces_large_counts() -> None:
    """4096 pieces of 64 blocks: a streaming window and a bulk want, every block once."""
    n, bpp = 4096, 64
    geometry = Geometry(bpp * BLOCK_SIZE, n * bpp * BLOCK_SIZE, [(0, n * bpp * BLOCK_SIZE)])
    pp: PiecePicker[int] = PiecePicker(geometry, Bitfield(n), rng=random.Random(3))
    for peer in range(20):
        bf = Bitfield(n)
        for i in range(peer % 3, n, 3):
            bf.set(i)
        pp.peer_bitfield(peer, bf)
    pp.add_want("read", 100, 163, Priority.NOW, deadline=1.0)
    pp.add_want("file", 0, 2047, Priority.NORMAL)
    seen: set[tuple[int, int]] = set()
    rounds = 0
    while True:
        got = [b for peer in range(20) for b in pp.pick(peer, 250, 0.0)]
        if not got:
            break
        rounds += 1
        for piece, begin, _ in got:
            assert (piece, begin) not in seen or pp.in_endgame()
            seen.add((piece, begin))
    assert {p for p, _ in seen} == set(range(2048))
    assert len(seen) == 2048 * bpp
    pp._check_invariants()


# -- the state machine -----------------------------------------------------------------------

PEERS = ("A", "B", "C")


class PickerMachine(RuleBasedStateMachine):
    """Random sequences of announcements, wants, picks and outcomes on a small torrent."""

    @initialize(
        n=st.integers(1, 10),
        bpp=st.integers(1, 4),
        tail=st.integers(1, BLOCK_SIZE),
        have=st.integers(0, 2**10 - 1),
        seed=st.integers(0, 100),
    )
    def setup(self, n: int, bpp: int, tail: int, have: int, seed: int) -> None:
        piece_length = bpp * BLOCK_SIZE
        total = (n - 1) * piece_length + (bpp - 1) * BLOCK_SIZE + tail
        self.geometry = Geometry(piece_length, total, [(0, total)])
        self.n = n
        bf = Bitfield(n)
        for i in range(n):
            if have >> i & 1:
                bf.set(i)
        self.pp: PiecePicker[str] = PiecePicker(
            self.geometry, bf, rng=random.Random(seed), time_critical_pieces=2
        )
        self.have = {i for i in range(n) if have >> i & 1}
        self.peer_pieces: dict[str, set[int]] = {}
        self.wants: dict[int, tuple[int, int, Priority]] = {}
        self.download_all = False
        self.received: set[tuple[int, int]] = set()
        self.held: set[int] = set()
        self.now = 0.0

    def wanted(self) -> set[int]:
        if self.download_all:
            return set(range(self.n))
        return {
            i
            for first, last, prio in self.wants.values()
            if prio > Priority.SKIP
            for i in range(first, last + 1)
        }

    def block_count(self, piece: int) -> int:
        return self.geometry.num_blocks(piece)

    @rule(data=st.data(), peer=st.sampled_from(PEERS))
    def announce(self, data: st.DataObject, peer: str) -> None:
        kind = data.draw(st.sampled_from(["bitfield", "have", "all", "none"]))
        if kind == "bitfield":
            pieces_ = data.draw(st.sets(st.integers(0, self.n - 1)))
            bf = Bitfield(self.n)
            for i in pieces_:
                bf.set(i)
            self.pp.peer_bitfield(peer, bf)
            self.peer_pieces[peer] = set(pieces_)
        elif kind == "have":
            i = data.draw(st.integers(0, self.n - 1))
            self.pp.peer_have(peer, i)
            self.peer_pieces.setdefault(peer, set()).add(i)
        elif kind == "all":
            self.pp.peer_have_all(peer)
            self.peer_pieces[peer] = set(range(self.n))
        else:
            self.pp.peer_have_none(peer)
            self.peer_pieces[peer] = set()

    @rule(peer=st.sampled_from(PEERS))
    def gone(self, peer: str) -> None:
        self.pp.peer_gone(peer)
        self.peer_pieces.pop(peer, None)
        assert self.pp.requests_of(peer) == []

    @rule(
        data=st.data(),
        want_id=st.integers(0, 3),
        prio=st.sampled_from(list(Priority)),
        deadline=st.none() | st.floats(0, 20),
    )
    def want(
        self, data: st.DataObject, want_id: int, prio: Priority, deadline: float | None
    ) -> None:
        first = data.draw(st.integers(0, self.n - 1))
        last = data.draw(st.integers(first, self.n - 1))
        self.pp.add_want(want_id, first, last, prio, deadline)
        self.wants[want_id] = (first, last, prio)

    @rule(want_id=st.integers(0, 3))
    def unwant(self, want_id: int) -> None:
        self.pp.remove_want(want_id)
        self.wants.pop(want_id, None)

    @rule(enabled=st.booleans())
    def download_all_(self, enabled: bool) -> None:
        self.pp.set_download_all(enabled)
        self.download_all = enabled

    @rule(pieces=st.sets(st.integers(0, 9)))
    def hold(self, pieces: set[int]) -> None:
        pieces = {p for p in pieces if p < self.n}
        self.pp.hold(pieces)
        self.held |= {p for p in pieces if p not in self.have and p not in self.pp._blocks}

    @rule(pieces=st.sets(st.integers(0, 9)))
    def unhold(self, pieces: set[int]) -> None:
        self.pp.unhold(p for p in pieces if p < self.n)
        self.held -= pieces

    @rule(dt=st.floats(0, 3))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(peer=st.sampled_from(PEERS), count=st.integers(0, 12))
    def pick(self, peer: str, count: int) -> None:
        before = set(self.pp.requests_of(peer))
        out = self.pp.pick(peer, count, self.now)
        assert len(out) <= count
        assert len(set(out)) == len(out)
        wanted = self.wanted()
        for piece, begin, length in out:
            assert piece not in self.have
            assert piece not in self.held
            assert piece in wanted
            assert piece in self.peer_pieces.get(peer, set())
            assert (piece, begin) not in self.received
            assert (piece, begin, length) not in before
            b = begin // BLOCK_SIZE
            assert begin == b * BLOCK_SIZE
            assert length == self.geometry.block_size(piece, b)

    def outstanding(self) -> list[tuple[str, int, int]]:
        return [(q, p, b) for q in PEERS for p, b, _ in self.pp.requests_of(q)]

    @precondition(lambda self: bool(self.outstanding()))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        peer, piece, begin = data.draw(st.sampled_from(self.outstanding()))
        others = {q for q, p, b in self.outstanding() if (p, b) == (piece, begin) and q != peer}
        res = self.pp.block_received(piece, begin, peer)
        assert res.accepted
        assert set(res.cancel_peers) == others
        self.received.add((piece, begin))
        complete = all(
            (piece, b * BLOCK_SIZE) in self.received for b in range(self.block_count(piece))
        )
        assert res.piece_complete == complete
        if complete:
            if data.draw(st.booleans()):
                self.pp.piece_verified(piece)
                self.have.add(piece)
            else:
                self.pp.piece_failed(piece)
            self.received = {(p, b) for p, b in self.received if p != piece}

    @precondition(lambda self: bool(self.outstanding()))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        peer, piece, begin = data.draw(st.sampled_from(self.outstanding()))
        self.pp.request_failed(piece, begin, peer)
        assert (piece, begin, self.geometry.block_size(piece, begin // BLOCK_SIZE)) not in (
            self.pp.requests_of(peer)
        )

    @rule(peer=st.sampled_from(PEERS))
    def choke(self, peer: str) -> None:
        self.pp.release_requests(peer)
        assert self.pp.requests_of(peer) == []

    @rule(timeout=st.floats(0, 5))
    def expire(self, timeout: float) -> None:
        for peer, piece, begin, _ in self.pp.expired_requests(self.now, timeout):
            assert (piece, begin) not in {(p, b) for p, b, _ in self.pp.requests_of(peer)}

    @rule()
    def drain(self) -> None:
        """Every peer asks for all it can get: every wanted block somebody has is requested."""
        for peer in PEERS:
            self.pick(peer, 10**6)
        requested = {(p, b) for _, p, b in self.outstanding()}
        for piece in self.wanted() - self.have - self.held:
            if any(piece in s for s in self.peer_pieces.values()):
                for b in range(self.block_count(piece)):
                    key = (piece, b * BLOCK_SIZE)
                    assert key in requested or key in self.received, key

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "pp"):
            return
        self.pp._check_invariants()
        per_block: dict[tuple[int, int], int] = {}
        for peer, piece, begin in self.outstanding():
            assert piece not in self.have
            assert (piece, begin) not in self.received
            assert piece in self.peer_pieces.get(peer, set())
            per_block[(piece, begin)] = per_block.get((piece, begin), 0) + 1
        assert all(c <= MAX_REQUESTS_PER_BLOCK for c in per_block.values())
        assert {i for i in range(self.n) if self.pp.have[i]} == self.have
        assert self.pp.missing_wanted_count() == len(self.wanted() - self.have)
        for peer, pieces_ in self.peer_pieces.items():
            assert self.pp.is_interesting(peer) == bool(pieces_ & (self.wanted() - self.have))


TestPickerMachine = PickerMachine.TestCase
TestPickerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
