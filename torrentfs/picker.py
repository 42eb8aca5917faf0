"""Piece picker: which blocks to request from which peer (L3, pure; BEP 3, BEP 6).

The picker turns *wants* (byte ranges somebody is waiting for, already mapped to pieces, each
with a priority and an optional deadline) and *availability* (which peer announced which
pieces: ``bitfield``, ``have``, BEP 6 ``have all``/``have none``) into ``request`` messages.
It never sees a socket or a clock: ``now`` is passed in (seconds, any monotonic origin).

Guarantees (checked by a hypothesis state machine in ``tests/test_picker.py``):

* only wanted pieces are requested: a piece is wanted while a want with priority above
  `Priority.SKIP` covers it (or `set_download_all` is on); nothing else is ever picked;
* a piece we have is never requested, nor a piece the asked peer did not announce;
* a block is requested from one peer at a time, except in *endgame* and for *time-critical*
  pieces, and never from more than two peers at once (`MAX_REQUESTS_PER_BLOCK`); a peer is
  never asked twice for the same block;
* every wanted block that some peer has ends up requested from somebody when the peers ask
  for work (no block is lost: rejects, chokes, timeouts and departures put blocks back).

Order of a `pick` (what "stream at full speed" needs, and the swarm's health after it):

1. *Urgent wants* — wants with a deadline, earliest deadline first (then higher priority),
   and wants of priority HIGH/NOW without one — each walked in piece order, so a streaming
   reader gets piece p before p+1. A piece covered by several wants is taken at its earliest
   deadline (effective deadline = min, effective priority = max over the covering wants).
2. *Time-critical duplicates* — blocks of the first few incomplete pieces of a HIGH/NOW want
   whose deadline is near or past, that one other peer has held for `time_critical_age`
   seconds already, are asked of this peer too (a second, hopefully faster peer; like
   libtorrent's time-critical pieces). Bounded by `time_critical_pieces` and the 2-per-block cap.
3. *NORMAL wants* — first finish pieces already in flight (fewer partial pieces, so pieces
   verify and are served and shared sooner), then rarest first (BEP 3's advice for swarm
   health) with a random tie-break from the seeded ``rng``.
4. *Endgame* — when no wanted piece any peer has still has an unrequested block, blocks that
   are requested from exactly one other peer may be requested again, urgent pieces first. The
   caller cancels the loser when `block_received` reports the duplicate.

Cost: sets of pieces are Python ints used as bitsets (bit i = piece i), kept up to date
incrementally: pieces we lack, pieces with an unrequested block ("open"), pieces in flight,
pieces with a singly requested block, wanted pieces, each peer's pieces, and one bitset per
availability count. A pick is a few big-int ANDs/shifts (C speed, ~n/30 machine words) plus
work proportional to the blocks it returns and the pieces it actually inspects; it never walks
all pieces in Python. Block state exists only for pieces in flight.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Generic, TypeVar

from torrentfs.bitfield import Bitfield
from torrentfs.geometry import Geometry
from torrentfs.types import BLOCK_SIZE

__all__ = [
    "MAX_REQUESTS_PER_BLOCK",
    "BlockResult",
    "PiecePicker",
    "Priority",
]

P = TypeVar("P", bound=Hashable)

MAX_REQUESTS_PER_BLOCK = 2
"""Outstanding requests allowed for one block (endgame / time-critical duplicates)."""

_MISSING: object = object()
"""Marks a block not received yet (a real peer key can be anything hashable, even None)."""

_REVERSE_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
"""Per-byte bit reversal: BEP 3 bitfields put piece 0 in the high bit of the first byte."""


class Priority(IntEnum):
    """How much a want matters. SKIP contributes nothing: it is the priority of no want."""

    SKIP = 0
    NORMAL = 1
    HIGH = 2
    NOW = 3


@dataclass(frozen=True, slots=True)
class BlockResult(Generic[P]):
    """What `PiecePicker.block_received` found.

    ``accepted`` is False when the block is of no use (we have the piece, the block came
    already, it is not a block of a wanted piece, or its position/length is wrong): the caller
    drops the data. ``cancel_peers`` are the other peers this block was also requested from
    (send them ``cancel``). ``piece_complete`` means every block of the piece is now here: hash
    it, then call `PiecePicker.piece_verified` or `PiecePicker.piece_failed`.
    """

    cancel_peers: tuple[P, ...]
    piece_complete: bool
    accepted: bool


class _Blocks:
    """Block state of one piece in flight.

    ``reqs[b]`` is the tuple of peers block b is requested from (at most two), ``got[b]`` the
    peer that delivered it or `_MISSING`. ``free`` counts blocks neither received nor requested,
    ``single`` blocks not received and requested from exactly one peer. Every block below
    ``hint`` is not free (so a fresh pick starts scanning there). ``last`` is the index of the
    last block and ``tail`` its length (every other block is `BLOCK_SIZE` long).
    """

    __slots__ = ("free", "got", "hint", "last", "received", "reqs", "single", "tail")

    def __init__(self, count: int, tail: int) -> None:
        # Any: peer keys of the owning PiecePicker[P] (a generic here would cost more than it says)
        self.got: list[Any] = [_MISSING] * count
        self.reqs: list[tuple[Any, ...]] = [()] * count
        self.free = count
        self.single = 0
        self.received = 0
        self.hint = 0
        self.last = count - 1
        self.tail = tail  # length of the last block


@dataclass(slots=True)
class _Want:
    first: int
    last: int
    priority: Priority
    deadline: float | None
    span: int  # bitset of 1s, last - first + 1 long (unshifted)


_REFUSED: BlockResult[Any] = BlockResult((), False, False)
_ACCEPTED: BlockResult[Any] = BlockResult((), False, True)


def _bits(mask: int, base: int = 0) -> Iterator[int]:
    """Set bits of `mask`, ascending, plus `base`."""
    while mask:
        low = mask & -mask
        yield base + low.bit_length() - 1
        mask ^= low


def _bitfield_to_mask(bitfield: Bitfield, nbytes: int) -> int:
    data = bitfield.to_bytes()
    if len(data) != nbytes:
        raise ValueError(f"bitfield of {len(data)} bytes, expected {nbytes}")
    return int.from_bytes(data.translate(_REVERSE_BITS), "little")


class PiecePicker(Generic[P]):
    """Decides which blocks to request from which peer; see the module docstring.

    Peers are opaque hashable keys. The picker owns `have` from now on: it sets pieces in it
    when `piece_verified` is called, and nobody else may change it.

    ``time_critical_age``/``time_critical_margin``/``time_critical_pieces`` tune step 2 of a pick:
    a HIGH/NOW want whose deadline is at most ``time_critical_margin`` seconds away (or past) may
    have blocks of its first ``time_critical_pieces`` incomplete pieces requested a second time
    when their first request is ``time_critical_age`` seconds old.
    """

    def __init__(
        self,
        geometry: Geometry,
        have: Bitfield,
        *,
        rng: random.Random | None = None,
        time_critical_age: float = 1.0,
        time_critical_margin: float = 0.5,
        time_critical_pieces: int = 4,
    ) -> None:
        n = geometry.num_pieces
        self.geometry = geometry
        self._n = n
        self._nbytes = (n + 7) // 8
        self._all = (1 << n) - 1
        self._rng = rng if rng is not None else random.Random()
        self.time_critical_age = time_critical_age
        self.time_critical_margin = time_critical_margin
        self.time_critical_pieces = time_critical_pieces

        # Block counts and the length of the last block, for full pieces and the last piece.
        self._nb_full = geometry.num_blocks(0) if n else 0
        self._nb_last = geometry.num_blocks(n - 1) if n else 0
        self._tail_full = geometry.block_size(0, self._nb_full - 1) if n else 0
        self._tail_last = geometry.block_size(n - 1, self._nb_last - 1) if n else 0

        self._have = have
        self._missing = self._all & ~_bitfield_to_mask(have, self._nbytes)
        self._open = self._missing  # lacked pieces with a block neither requested nor received
        self._held = 0  # missing pieces kept out of picks (`hold`), never in flight
        self._partial = 0  # pieces with block state (in flight)
        self._dupable = 0  # pieces with a block requested from exactly one peer
        self._blocks: dict[int, _Blocks] = {}

        self._peers: dict[P, int] = {}  # peer -> bitset of its pieces
        self._seeds: set[P] = set()  # BEP 6 have-all peers (not counted in _avail)
        self._avail = [0] * n
        self._buckets: dict[int, int] = {0: self._all} if n else {}
        self._avail_mask = 0  # pieces at least one non-seed peer has
        self._reqs: dict[P, dict[tuple[int, int], float]] = {}  # (piece, block) -> time asked

        self._wants: dict[Hashable, _Want] = {}
        self._download_all = False
        self._wanted = 0
        self._urgent: list[_Want] = []

    # -- small helpers ---------------------------------------------------------------------

    @property
    def have(self) -> Bitfield:
        """The verified pieces (owned by the picker; read only for everybody else)."""
        return self._have

    @property
    def num_pieces(self) -> int:
        return self._n

    def _num_blocks(self, piece: int) -> int:
        return self._nb_last if piece == self._n - 1 else self._nb_full

    def _block_len(self, piece: int, block: int) -> int:
        if piece == self._n - 1:
            return self._tail_last if block == self._nb_last - 1 else BLOCK_SIZE
        return self._tail_full if block == self._nb_full - 1 else BLOCK_SIZE

    def _new_blocks(self, piece: int) -> _Blocks:
        count = self._num_blocks(piece)
        st = self._blocks[piece] = _Blocks(count, self._block_len(piece, count - 1))
        self._partial |= 1 << piece
        return st

    def _check_piece(self, piece: int) -> None:
        if not 0 <= piece < self._n:
            raise IndexError(f"piece {piece} out of range (num_pieces={self._n})")

    # -- wants -----------------------------------------------------------------------------

    def add_want(
        self,
        want_id: Hashable,
        first_piece: int,
        last_piece: int,
        priority: Priority,
        deadline: float | None = None,
    ) -> None:
        """Want pieces ``first_piece..last_piece`` (inclusive); re-adding an id replaces it."""
        if not 0 <= first_piece <= last_piece < self._n:
            raise ValueError(f"bad piece range {first_piece}..{last_piece} of {self._n}")
        self._wants[want_id] = _Want(
            first_piece,
            last_piece,
            Priority(priority),
            deadline,
            (1 << (last_piece - first_piece + 1)) - 1,
        )
        self._wants_changed()

    def remove_want(self, want_id: Hashable) -> None:
        """Drop a want (no-op for an unknown id). Requests already sent stay outstanding."""
        if self._wants.pop(want_id, None) is not None:
            self._wants_changed()

    def set_download_all(self, enabled: bool) -> None:
        """Want every piece at NORMAL priority (``torrentfs download``), on top of the wants."""
        self._download_all = enabled
        self._wants_changed()

    def _wants_changed(self) -> None:
        wanted = self._all if self._download_all else 0
        urgent = []
        for w in self._wants.values():
            if w.priority == Priority.SKIP:
                continue
            wanted |= w.span << w.first
            if w.deadline is not None or w.priority >= Priority.HIGH:
                urgent.append(w)
        urgent.sort(
            key=lambda w: (
                w.deadline is None,
                0.0 if w.deadline is None else w.deadline,
                -w.priority,
                w.first,
            )
        )
        self._wanted = wanted
        self._urgent = urgent

    def wanted_pieces(self) -> list[int]:
        """Every wanted piece (had or not), ascending."""
        return list(_bits(self._wanted))

    def missing_wanted_count(self) -> int:
        """Wanted pieces not verified yet (0: everything wanted is here)."""
        return (self._wanted & self._missing).bit_count()

    def is_wanted(self, piece: int) -> bool:
        return bool(self._wanted >> piece & 1)

    # -- availability (BEP 3 bitfield/have, BEP 6 have all/have none) ----------------------

    def _inc(self, piece: int) -> None:
        bit = 1 << piece
        a = self._avail[piece]
        self._avail[piece] = a + 1
        left = self._buckets[a] ^ bit
        if left:
            self._buckets[a] = left
        else:
            del self._buckets[a]
        self._buckets[a + 1] = self._buckets.get(a + 1, 0) | bit
        if a == 0:
            self._avail_mask |= bit

    def _dec(self, piece: int) -> None:
        bit = 1 << piece
        a = self._avail[piece]
        self._avail[piece] = a - 1
        left = self._buckets[a] ^ bit
        if left:
            self._buckets[a] = left
        else:
            del self._buckets[a]
        self._buckets[a - 1] = self._buckets.get(a - 1, 0) | bit
        if a == 1:
            self._avail_mask &= ~bit

    def _forget_availability(self, peer: P) -> None:
        if peer in self._seeds:
            self._seeds.discard(peer)
        else:
            for piece in _bits(self._peers.get(peer, 0)):
                self._dec(piece)
        self._peers.pop(peer, None)

    def peer_bitfield(self, peer: P, bitfield: Bitfield) -> None:
        """The peer's ``bitfield`` message (replaces whatever it announced before)."""
        mask = _bitfield_to_mask(bitfield, self._nbytes) & self._all
        self._forget_availability(peer)
        for piece in _bits(mask):
            self._inc(piece)
        self._peers[peer] = mask
        self._release_lacking(peer, mask)

    def peer_have(self, peer: P, piece: int) -> None:
        """The peer's ``have`` message."""
        self._check_piece(piece)
        if peer in self._seeds:
            return
        mask = self._peers.get(peer, 0)
        if not mask >> piece & 1:
            self._peers[peer] = mask | 1 << piece
            self._inc(piece)

    def peer_have_all(self, peer: P) -> None:
        """BEP 6 ``have all``: a seed. Seeds are counted once, not per piece."""
        self._forget_availability(peer)
        self._seeds.add(peer)
        self._peers[peer] = self._all

    def peer_have_none(self, peer: P) -> None:
        """BEP 6 ``have none`` (or a peer that sent no bitfield): known, with no pieces."""
        self._forget_availability(peer)
        self._peers[peer] = 0
        self._release_lacking(peer, 0)

    def _release_lacking(self, peer: P, mask: int) -> None:
        """A peer that re-announces can no longer be asked for pieces it stopped having."""
        preqs = self._reqs.get(peer)
        if preqs:
            for key in [k for k in preqs if not mask >> k[0] & 1]:
                del preqs[key]
                self._drop_requester(key[0], key[1], peer)

    def peer_gone(self, peer: P) -> None:
        """The connection closed: release its requests and forget what it had."""
        self.release_requests(peer)
        self._reqs.pop(peer, None)
        self._forget_availability(peer)

    def availability(self, piece: int) -> int:
        """How many connected peers have `piece`."""
        self._check_piece(piece)
        return self._avail[piece] + len(self._seeds)

    def is_interesting(self, peer: P) -> bool:
        """True when the peer has a wanted piece we lack: we should be ``interested``."""
        return bool(self._peers.get(peer, 0) & self._wanted & self._missing)

    def has_missing(self, peer: P) -> bool:
        """True when the peer has some piece we lack, wanted or not (reads may want it)."""
        return bool(self._peers.get(peer, 0) & self._missing)

    def peer_has(self, peer: P, piece: int) -> bool:
        """Whether `peer` announced `piece` (O(1))."""
        return bool(self._peers.get(peer, 0) >> piece & 1)

    # -- picking ---------------------------------------------------------------------------

    def pick(self, peer: P, count: int, now: float) -> list[tuple[int, int, int]]:
        """Up to `count` blocks ``(piece, begin, length)`` to request from `peer` now.

        They are recorded as requested from `peer` at time `now` (see `expired_requests`).
        """
        pmask = self._peers.get(peer)
        if count <= 0 or not pmask:
            return []
        out: list[tuple[int, int, int]] = []
        preqs = self._reqs.setdefault(peer, {})
        urgent = self._urgent

        # 1. urgent wants in deadline order, each in piece order.
        fresh = self._open & pmask
        if fresh & self._wanted:
            for w in urgent:
                for piece in _bits(fresh >> w.first & w.span, w.first):
                    self._take_fresh(piece, peer, preqs, count - len(out), now, out)
                    if len(out) >= count:
                        return out

        # 2. time-critical duplicates.
        if self._dupable & pmask:
            self._time_critical(peer, pmask, preqs, count, now, out)
            if len(out) >= count:
                return out

        # 3. NORMAL wants: finish pieces in flight, then rarest first.
        fresh = self._open & pmask & self._wanted
        if fresh:
            partial = fresh & self._partial
            for piece in _bits(partial):
                self._take_fresh(piece, peer, preqs, count - len(out), now, out)
                if len(out) >= count:
                    return out
            rest = fresh & ~partial
            if rest:
                for a in sorted(self._buckets):
                    c = rest & self._buckets[a]
                    while c:
                        start = self._rng.randrange(self._n)
                        high = c >> start
                        if high:
                            piece = start + (high & -high).bit_length() - 1
                        else:
                            piece = (c & -c).bit_length() - 1
                        c &= ~(1 << piece)
                        self._take_fresh(piece, peer, preqs, count - len(out), now, out)
                        if len(out) >= count:
                            return out

        # 4. endgame: nothing wanted that anybody has is left unrequested.
        dup = self._dupable & pmask & self._wanted
        if dup and not self._open & self._wanted & self._available():
            for w in urgent:
                for piece in _bits(dup >> w.first & w.span, w.first):
                    self._take_dup(piece, peer, preqs, count - len(out), now, None, out)
                    if len(out) >= count:
                        return out
            for piece in _bits(self._dupable & dup):
                self._take_dup(piece, peer, preqs, count - len(out), now, None, out)
                if len(out) >= count:
                    return out
        return out

    def pick_pieces(self, peer: P, pieces: Iterable[int], now: float) -> list[tuple[int, int, int]]:
        """Every unrequested block of `pieces` that is wanted, missing and announced by `peer`,
        recorded as requested from it: a reader waits on these pieces, so they go to one fast
        peer at once, whatever its pipeline depth (`Torrent.read`)."""
        pmask = self._peers.get(peer)
        out: list[tuple[int, int, int]] = []
        if not pmask:
            return out
        fresh = self._open & pmask & self._wanted
        preqs = self._reqs.setdefault(peer, {})
        for piece in pieces:
            if fresh >> piece & 1:
                self._take_fresh(piece, peer, preqs, self._num_blocks(piece), now, out)
        return out

    def _available(self) -> int:
        return self._all if self._seeds else self._avail_mask

    def in_endgame(self) -> bool:
        """No wanted piece that some peer has is left with an unrequested block."""
        return not self._open & self._wanted & self._available()

    def _time_critical(
        self,
        peer: P,
        pmask: int,
        preqs: dict[tuple[int, int], float],
        count: int,
        now: float,
        out: list[tuple[int, int, int]],
    ) -> None:
        horizon = now + self.time_critical_margin
        asked_before = now - self.time_critical_age
        budget = self.time_critical_pieces
        in_flight = self._partial & self._missing
        for w in self._urgent:
            if w.deadline is None or w.deadline > horizon:
                break  # sorted by deadline; deadline-less wants come last
            if w.priority < Priority.HIGH:
                continue
            for piece in _bits(in_flight >> w.first & w.span, w.first):
                st = self._blocks[piece]
                if st.received == len(st.got):
                    continue  # complete, waiting for its hash check
                if budget <= 0:
                    return
                budget -= 1
                if st.single and pmask >> piece & 1:
                    self._take_dup(piece, peer, preqs, count - len(out), now, asked_before, out)
                    if len(out) >= count:
                        return

    def _take_fresh(
        self,
        piece: int,
        peer: P,
        preqs: dict[tuple[int, int], float],
        need: int,
        now: float,
        out: list[tuple[int, int, int]],
    ) -> None:
        st = self._blocks.get(piece)
        if st is None:
            st = self._new_blocks(piece)
        reqs = st.reqs
        got = st.got
        n = len(reqs)
        b = st.hint
        taken = 0
        while b < n and taken < need:
            if not reqs[b] and got[b] is _MISSING:
                reqs[b] = (peer,)
                preqs[(piece, b)] = now
                out.append((piece, b * BLOCK_SIZE, self._block_len(piece, b)))
                taken += 1
            b += 1
        st.hint = b
        if taken:
            st.free -= taken
            st.single += taken
            self._dupable |= 1 << piece
            if not st.free:
                self._open &= ~(1 << piece)

    def _take_dup(
        self,
        piece: int,
        peer: P,
        preqs: dict[tuple[int, int], float],
        need: int,
        now: float,
        asked_before: float | None,
        out: list[tuple[int, int, int]],
    ) -> None:
        """Second requests for blocks asked of exactly one other peer (at or before
        `asked_before`, if given)."""
        st = self._blocks[piece]
        reqs = st.reqs
        got = st.got
        taken = 0
        for b in range(len(reqs)):
            if taken >= need or not st.single:
                break
            r = reqs[b]
            if len(r) != 1 or got[b] is not _MISSING:
                continue
            other = r[0]
            if other == peer:
                continue
            if asked_before is not None and self._reqs[other][(piece, b)] > asked_before:
                continue
            reqs[b] = (other, peer)
            preqs[(piece, b)] = now
            out.append((piece, b * BLOCK_SIZE, self._block_len(piece, b)))
            st.single -= 1
            taken += 1
        if not st.single:
            self._dupable &= ~(1 << piece)

    # -- outcomes of requests --------------------------------------------------------------

    def _drop_requester(self, piece: int, block: int, peer: P) -> None:
        st = self._blocks[piece]
        r = st.reqs[block]
        if len(r) == 2:
            st.reqs[block] = (r[1],) if r[0] == peer else (r[0],)
            st.single += 1
            self._dupable |= 1 << piece
        else:
            st.reqs[block] = ()
            st.single -= 1
            st.free += 1
            if block < st.hint:
                st.hint = block
            self._open |= 1 << piece
            if not st.single:
                self._dupable &= ~(1 << piece)

    def request_failed(self, piece: int, begin: int, peer: P) -> None:
        """A request ended without data (``reject``, choke, timeout): the block is pending again.

        Unknown requests are ignored (e.g. a reject for a request we already cancelled)."""
        preqs = self._reqs.get(peer)
        key = (piece, begin // BLOCK_SIZE)
        if preqs is None or begin % BLOCK_SIZE or preqs.pop(key, None) is None:
            return
        self._drop_requester(piece, key[1], peer)

    def release_requests(self, peer: P) -> list[tuple[int, int, int]]:
        """Release every outstanding request of `peer` (``choke`` without BEP 6); returns them."""
        preqs = self._reqs.get(peer)
        if not preqs:
            return []
        released = [(p, b * BLOCK_SIZE, self._block_len(p, b)) for p, b in preqs]
        for p, b in preqs:
            self._drop_requester(p, b, peer)
        preqs.clear()
        return released

    def requests_of(self, peer: P) -> list[tuple[int, int, int]]:
        """Outstanding requests ``(piece, begin, length)`` of `peer`, oldest first."""
        return [(p, b * BLOCK_SIZE, self._block_len(p, b)) for p, b in self._reqs.get(peer, ())]

    def iter_requests_of(self, peer: P) -> Iterator[tuple[int, int, int]]:
        """`requests_of`, lazily: a caller that stops early pays only for what it looked at.
        The picker must not change while the iterator is in use."""
        for p, b in self._reqs.get(peer, ()):
            yield p, b * BLOCK_SIZE, self._block_len(p, b)

    def is_requested(self, peer: P, piece: int, begin: int) -> bool:
        """Whether the block at `begin` of `piece` is outstanding with `peer` (O(1))."""
        preqs = self._reqs.get(peer)
        return preqs is not None and (piece, begin // BLOCK_SIZE) in preqs

    def outstanding_of(self, peer: P) -> int:
        """Number of outstanding requests of `peer` (O(1): sizes its request pipeline)."""
        preqs = self._reqs.get(peer)
        return len(preqs) if preqs else 0

    def outstanding(self) -> int:
        """Number of outstanding requests, over all peers."""
        return sum(len(r) for r in self._reqs.values())

    def expired_requests(self, now: float, timeout: float) -> list[tuple[P, int, int, int]]:
        """Release requests at least `timeout` seconds old so they can be re-issued elsewhere.

        Returns ``(peer, piece, begin, length)`` for each (the caller may send ``cancel``). A
        block that still arrives later is accepted by `block_received` if it is still missing.
        """
        cutoff = now - timeout
        expired: list[tuple[P, int, int, int]] = []
        for peer, preqs in self._reqs.items():
            stale = [key for key, asked in preqs.items() if asked <= cutoff]
            for key in stale:
                del preqs[key]
                self._drop_requester(key[0], key[1], peer)
                expired.append((peer, key[0], key[1] * BLOCK_SIZE, self._block_len(*key)))
        return expired

    def block_received(
        self, piece: int, begin: int, peer: P, length: int | None = None
    ) -> BlockResult[P]:
        """A ``piece`` message arrived: mark the block received.

        Pass `length` (the block's size) to have a wrongly sized block refused. The block is
        accepted even when it was not (or no longer) requested from `peer`, as long as it is a
        still missing block of a wanted or in-flight piece.

        This runs once per 16 KiB of every download: O(1), a few dict and list operations, and
        no allocation for the usual outcome (accepted, piece not complete, nobody to cancel).
        """
        b, rest = divmod(begin, BLOCK_SIZE)
        st = self._blocks.get(piece)  # in flight implies missing (see _check_invariants)
        if st is None:
            if rest or not 0 <= piece < self._n or not (self._missing & self._wanted) >> piece & 1:
                return _REFUSED
            if not 0 <= b < self._num_blocks(piece):
                return _REFUSED
            if length is not None and length != self._block_len(piece, b):
                return _REFUSED
            st = self._new_blocks(piece)
        got = st.got
        if rest or not 0 <= b <= st.last or got[b] is not _MISSING:
            return _REFUSED
        if length is not None and length != (st.tail if b == st.last else BLOCK_SIZE):
            return _REFUSED
        r = st.reqs[b]
        cancel: tuple[P, ...] = ()
        if not r:
            st.free -= 1
            if not st.free:
                self._open &= ~(1 << piece)
        else:
            if len(r) == 1:
                st.single -= 1
                if not st.single:
                    self._dupable &= ~(1 << piece)
            key = (piece, b)
            for q in r:
                self._reqs[q].pop(key, None)
                if q != peer:
                    cancel += (q,)
            st.reqs[b] = ()
        got[b] = peer
        st.received += 1
        if cancel or st.received > st.last:
            return BlockResult(cancel, st.received > st.last, True)
        return _ACCEPTED

    def piece_verified(self, piece: int) -> list[tuple[P, int, int]]:
        """The piece's hash matched: we have it. Returns requests still outstanding for it
        ``(peer, begin, length)``, now forgotten (send them ``cancel``)."""
        self._check_piece(piece)
        if not self._missing >> piece & 1:
            return []
        leftovers: list[tuple[P, int, int]] = []
        st = self._blocks.pop(piece, None)
        if st is not None:
            for b, r in enumerate(st.reqs):
                for q in r:
                    self._reqs[q].pop((piece, b), None)
                    leftovers.append((q, b * BLOCK_SIZE, self._block_len(piece, b)))
        self._have.set(piece)
        keep = ~(1 << piece)
        self._missing &= keep
        self._held &= keep
        self._open &= keep
        self._partial &= keep
        self._dupable &= keep
        return leftovers

    def piece_lost(self, piece: int) -> None:
        """A verified piece is no longer stored (evicted for the disk budget): missing again,
        to be fetched on demand like any other missing piece."""
        self._check_piece(piece)
        if self._missing >> piece & 1:
            return
        self._have.clear(piece)
        self._missing |= 1 << piece
        self._open |= 1 << piece

    def hold(self, pieces: Iterable[int]) -> None:
        """Pick no block of these missing pieces until `unhold` (their data on disk is being
        verified: fetching them meanwhile could be wasted). Pieces in flight are not held."""
        for piece in pieces:
            self._check_piece(piece)
            if self._missing >> piece & 1 and piece not in self._blocks:
                self._held |= 1 << piece
                self._open &= ~(1 << piece)

    def unhold(self, pieces: Iterable[int]) -> None:
        """Pieces may be picked again (still missing ones become open)."""
        for piece in pieces:
            bit = 1 << piece
            if self._held & bit:
                self._held &= ~bit
                self._open |= bit & self._missing

    def piece_failed(self, piece: int) -> frozenset[P]:
        """The piece's hash did not match: every block is pending again.

        Returns the peers that sent blocks of it (candidates for a ban after repeat offences).
        Outstanding requests for the piece, if any, are forgotten.
        """
        self._check_piece(piece)
        st = self._blocks.pop(piece, None)
        if st is None:
            return frozenset()
        for b, r in enumerate(st.reqs):
            for q in r:
                self._reqs[q].pop((piece, b), None)
        keep = ~(1 << piece)
        self._partial &= keep
        self._dupable &= keep
        self._open |= 1 << piece
        return frozenset(g for g in st.got if g is not _MISSING)

    # -- self check (tests) ----------------------------------------------------------------

    def _check_invariants(self) -> None:
        """Recompute every incremental structure from scratch and compare (slow; tests)."""
        have = _bitfield_to_mask(self._have, self._nbytes)
        assert self._missing == self._all & ~have
        counted: dict[tuple[int, int], list[Hashable]] = {}
        for peer, preqs in self._reqs.items():
            for key in preqs:
                counted.setdefault(key, []).append(peer)
        assert not self._held & (self._partial | ~self._missing)
        open_ = self._missing & ~self._partial & ~self._held
        dupable = 0
        for piece, st in self._blocks.items():
            assert self._missing >> piece & 1, piece
            free = single = received = 0
            for b, (r, g) in enumerate(zip(st.reqs, st.got, strict=True)):
                assert len(r) <= MAX_REQUESTS_PER_BLOCK and len(set(r)) == len(r)
                assert sorted(map(repr, counted.pop((piece, b), []))) == sorted(map(repr, r))
                if g is not _MISSING:
                    assert not r
                    received += 1
                elif not r:
                    free += 1
                    assert b >= st.hint
                elif len(r) == 1:
                    single += 1
            assert (st.free, st.single, st.received) == (free, single, received), piece
            if free:
                open_ |= 1 << piece
            if single:
                dupable |= 1 << piece
        assert not counted, counted
        assert self._partial == sum(1 << p for p in self._blocks)
        assert self._open == open_
        assert self._dupable == dupable
        avail = [0] * self._n
        for peer, mask in self._peers.items():
            if peer not in self._seeds:
                for piece in _bits(mask):
                    avail[piece] += 1
        assert avail == self._avail
        buckets: dict[int, int] = {}
        for piece, a in enumerate(avail):
            buckets[a] = buckets.get(a, 0) | 1 << piece
        assert buckets == self._buckets
