"""Choker: which peers we upload to (L3, pure; BEP 3 tit-for-tat).

BEP 3: "uploaders reciprocate to the peers which provide the best download rate", re-decided
every 10 seconds so the choice reflects steady rates rather than noise, and "at any one time
there is a single peer which is unchoked regardless of its upload rate" — the *optimistic
unchoke*, rotated every 30 seconds, which is how a newcomer (or a faster peer we do not yet
reciprocate) gets a chance to prove itself. As in BitTorrent mainline and libtorrent, newly
connected peers are three times as likely to be the optimistic pick, since they have nothing
to offer until they get some pieces.

Rates: while we download (leech) we reciprocate by the rate each peer gives *us*; when we only
seed there is nothing to reciprocate, so we favour the peers we upload to fastest (mainline's
seeding rule: the swarm gets the most out of our upload).

Guarantees (tests in ``tests/test_choker.py``):

* only interested peers are unchoked — a choked, uninterested peer costs nothing;
* at most ``slots`` regular unchokes plus one optimistic unchoke;
* the regular set changes only at a re-evaluation (every ``rechoke_interval`` seconds), except
  that a slot left by a peer that went away or lost interest is refilled at once;
* the optimistic peer stays for ``optimistic_interval`` seconds unless it leaves, loses interest,
  or earns a regular slot;
* with uploading disabled nobody is unchoked.

Pure: the caller passes ``now`` and applies the answer (``choke``/``unchoke`` messages).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Choker", "PeerView"]

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class PeerView(Generic[P]):
    """What the choker needs to know about one connected peer right now.

    ``download_rate`` is what the peer gives us, ``upload_rate`` what we give it (bytes/s);
    ``is_seed_mode`` is True when we are seeding the torrent (we have everything we want).
    """

    peer: P
    interested: bool
    download_rate: float
    upload_rate: float
    is_seed_mode: bool = False

    @property
    def rate(self) -> float:
        """The rate the regular slots are ranked by."""
        return self.upload_rate if self.is_seed_mode else self.download_rate


class Choker(Generic[P]):
    """Tit-for-tat unchoke decisions (BEP 3); see the module docstring.

    Call `decide` whenever something changes (a peer connects, leaves, becomes interested)
    and at least every few seconds; it is cheap (O(peers log peers)).
    """

    def __init__(
        self,
        slots: int = 4,
        *,
        upload_enabled: bool = True,
        rng: random.Random | None = None,
        rechoke_interval: float = 10.0,
        optimistic_interval: float = 30.0,
        new_peer_age: float = 60.0,
        new_peer_weight: int = 3,
    ) -> None:
        if slots < 0:
            raise ValueError(f"slots must not be negative, got {slots}")
        self.slots = slots
        self.upload_enabled = upload_enabled
        self.rechoke_interval = rechoke_interval
        self.optimistic_interval = optimistic_interval
        self.new_peer_age = new_peer_age
        self.new_peer_weight = new_peer_weight
        self._rng = rng if rng is not None else random.Random()
        self._regular: set[P] = set()
        self._optimistic: P | None = None
        self._next_rechoke: float | None = None
        self._next_optimistic: float | None = None
        self._first_seen: dict[P, float] = {}

    @property
    def optimistic(self) -> P | None:
        """The current optimistic unchoke, if any."""
        return self._optimistic

    @property
    def regular(self) -> frozenset[P]:
        """The current regular unchokes."""
        return frozenset(self._regular)

    def decide(self, peers: Iterable[PeerView[P]], now: float) -> set[P]:
        """The peers that should be unchoked now (choke every other one)."""
        views = {v.peer: v for v in peers}
        self._first_seen = {p: self._first_seen.get(p, now) for p in views}
        if not self.upload_enabled:
            self._regular = set()
            self._optimistic = None
            self._next_rechoke = self._next_optimistic = None
            return set()
        candidates = {p: v for p, v in views.items() if v.interested}

        if self._next_rechoke is None or now >= self._next_rechoke:
            self._regular = set(self._ranked(candidates)[: self.slots])
            self._next_rechoke = now + self.rechoke_interval
        else:
            self._regular &= candidates.keys()
            if len(self._regular) < self.slots:
                # Refill a slot freed by a departure at once; the optimistic peer is not a
                # candidate for it (it keeps its own slot until the next re-evaluation).
                rest = {p: v for p, v in candidates.items() if p not in self._regular}
                if self._optimistic is not None:
                    rest.pop(self._optimistic, None)
                free = self.slots - len(self._regular)
                self._regular.update(self._ranked(rest)[:free])

        current = self._optimistic
        expired = self._next_optimistic is None or now >= self._next_optimistic
        if current is None or current not in candidates or current in self._regular or expired:
            pool = [p for p in candidates if p not in self._regular]
            if expired and len(pool) > 1 and current in pool:
                pool.remove(current)  # rotate: someone else's turn
            self._optimistic = self._choose_optimistic(pool, now)
            self._next_optimistic = now + self.optimistic_interval

        chosen = set(self._regular)
        if self._optimistic is not None:
            chosen.add(self._optimistic)
        return chosen

    def _ranked(self, candidates: dict[P, PeerView[P]]) -> list[P]:
        """Fastest first; ties go to peers already unchoked (less churn), then chance."""
        keyed = [
            (-v.rate, p not in self._regular, self._rng.random(), i, p)
            for i, (p, v) in enumerate(candidates.items())
        ]
        keyed.sort(key=lambda k: k[:4])
        return [k[4] for k in keyed]

    def _choose_optimistic(self, pool: list[P], now: float) -> P | None:
        if not pool:
            return None
        weights = [
            self.new_peer_weight if now - self._first_seen[p] < self.new_peer_age else 1
            for p in pool
        ]
        return self._rng.choices(pool, weights=weights)[0]
