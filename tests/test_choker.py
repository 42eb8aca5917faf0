"""Choker: tit-for-tat regular slots, the rotating optimistic unchoke, upload off (BEP 3)."""

from __future__ import annotations

import random
from collections import Counter
from itertools import pairwise

from torrentfs.choker import Choker, PeerView


def view(
    peer: str, down: float = 0.0, up: float = 0.0, *, interested: bool = True, seed: bool = False
) -> PeerView[str]:
    return PeerView(peer, interested, down, up, seed)


def swarm(rates: dict[str, float], *, seed: bool = False) -> list[PeerView[str]]:
    """Interested peers; the rate is what they give us (leech) or we give them (seed)."""
    return [view(p, 0.0 if seed else r, r if seed else 0.0, seed=seed) for p, r in rates.items()]


RATES = {"a": 50.0, "b": 40.0, "c": 30.0, "d": 20.0, "e": 10.0, "f": 5.0, "g": 1.0}


def test_best_four_plus_one_optimistic() -> None:
    ch: Choker[str] = Choker(4, rng=random.Random(1))
    chosen = ch.decide(swarm(RATES), 0.0)
    assert ch.regular == {"a", "b", "c", "d"}
    assert ch.optimistic in {"e", "f", "g"}
    assert chosen == {"a", "b", "c", "d", ch.optimistic}


def test_seeding_ranks_by_upload_rate() -> None:
    ch: Choker[str] = Choker(2, rng=random.Random(1))
    peers = [view("x", down=100.0, up=1.0, seed=True), *swarm({"y": 9.0, "z": 8.0}, seed=True)]
    ch.decide(peers, 0.0)
    assert ch.regular == {"y", "z"}
    assert ch.optimistic == "x"


def test_uninterested_peers_stay_choked() -> None:
    ch: Choker[str] = Choker(4, rng=random.Random(1))
    peers = [view("fast", 1000.0, interested=False), *swarm({"a": 1.0, "b": 2.0})]
    assert ch.decide(peers, 0.0) == {"a", "b"}
    assert ch.optimistic is None  # nobody left for it


def test_upload_disabled_unchokes_nobody() -> None:
    ch: Choker[str] = Choker(4, upload_enabled=False)
    assert ch.decide(swarm(RATES), 0.0) == set()
    ch.upload_enabled = True
    assert len(ch.decide(swarm(RATES), 1.0)) == 5
    ch.upload_enabled = False
    assert ch.decide(swarm(RATES), 2.0) == set()


def test_regular_slots_change_only_every_ten_seconds() -> None:
    ch: Choker[str] = Choker(2, rng=random.Random(1), optimistic_interval=1000.0)
    ch.decide(swarm({"a": 10.0, "b": 9.0, "c": 1.0}), 0.0)
    assert ch.regular == {"a", "b"}
    swapped = swarm({"a": 10.0, "b": 1.0, "c": 9.0})
    ch.decide(swapped, 9.9)
    assert ch.regular == {"a", "b"}
    ch.decide(swapped, 10.0)
    assert ch.regular == {"a", "c"}


def test_a_departed_regular_is_replaced_at_once() -> None:
    ch: Choker[str] = Choker(2, rng=random.Random(1), optimistic_interval=1000.0)
    ch.decide(swarm({"a": 10.0, "b": 9.0, "c": 5.0, "d": 1.0}), 0.0)
    optimistic = ch.optimistic
    assert ch.regular == {"a", "b"}
    ch.decide(swarm({"a": 10.0, "c": 5.0, "d": 1.0}), 1.0)  # b disconnected
    assert len(ch.regular) == 2 and "a" in ch.regular
    assert optimistic not in ch.regular  # the optimistic peer keeps its own slot
    assert ch.optimistic == optimistic
    # losing interest counts as leaving
    peers = [view("a", 10.0, interested=False), *swarm({"c": 5.0, "d": 1.0})]
    assert ch.decide(peers, 2.0) == {"c", "d"}


def test_optimistic_rotates_every_thirty_seconds() -> None:
    ch: Choker[str] = Choker(1, rng=random.Random(7))
    peers = swarm({"top": 100.0, "p": 1.0, "q": 1.0, "r": 1.0})
    history = []
    for t in range(0, 300, 5):
        ch.decide(peers, float(t))
        history.append(ch.optimistic)
    # constant within each 30 s period, different from one period to the next
    periods = [history[i : i + 6] for i in range(0, len(history), 6)]
    assert all(len(set(period)) == 1 for period in periods)
    firsts = [period[0] for period in periods]
    assert all(x != y for x, y in pairwise(firsts))
    assert set(firsts) == {"p", "q", "r"}
    assert "top" not in firsts


def test_optimistic_replaced_when_it_leaves_or_earns_a_regular_slot() -> None:
    ch: Choker[str] = Choker(1, rng=random.Random(3))
    ch.decide(swarm({"a": 10.0, "b": 1.0, "c": 1.0}), 0.0)
    first = ch.optimistic
    assert first in {"b", "c"}
    other = ({"b", "c"} - {first}).pop()
    ch.decide(swarm({"a": 10.0, other: 1.0}), 1.0)
    assert ch.optimistic == other
    # at the next re-evaluation the optimistic peer outruns "a": it becomes regular
    ch.decide(swarm({"a": 10.0, other: 50.0, "d": 1.0}), 10.0)
    assert ch.regular == {other}
    assert ch.optimistic in {"a", "d"}


def test_new_peers_are_three_times_as_likely_to_be_the_optimistic_pick() -> None:
    counts: Counter[str] = Counter()
    for seed in range(2000):
        ch: Choker[str] = Choker(0, rng=random.Random(seed))
        ch.decide(swarm({"old1": 1.0, "old2": 1.0, "old3": 1.0}), 0.0)
        # 100 s later: the old peers are no longer new; "new" just connected.
        ch._next_optimistic = 100.0  # force a rotation now
        ch.decide(swarm({"old1": 1.0, "old2": 1.0, "old3": 1.0, "new": 1.0}), 100.0)
        counts[ch.optimistic or ""] += 1
    # weights 3:1:1:1 minus the current one (excluded by the rotation): new gets 3/5 or 3/5
    share = counts["new"] / 2000
    assert 0.55 < share < 0.65, counts


def test_fewer_candidates_than_slots() -> None:
    ch: Choker[str] = Choker(4, rng=random.Random(1))
    assert ch.decide(swarm({"a": 1.0, "b": 0.0}), 0.0) == {"a", "b"}
    assert ch.decide([], 1.0) == set()
    assert ch.regular == frozenset() and ch.optimistic is None


def test_equal_rates_keep_the_current_unchokes() -> None:
    ch: Choker[str] = Choker(2, rng=random.Random(5), optimistic_interval=1e9)
    peers = swarm({p: 0.0 for p in "abcdef"})
    ch.decide(peers, 0.0)
    before = ch.regular
    for t in range(10, 200, 10):
        ch.decide(peers, float(t))
        assert ch.regular == before
