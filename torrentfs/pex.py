"""Peer exchange policy (BEP 11, ut_pex): what we tell each peer, and what we take from it (L3).

Pure: no sockets and no clock (``now`` is passed in); the wire format is `wire.ut_pex`, the
engine (`torrent.py`) calls this from its once-a-second ticker and its message handler.

Sending (`PexConnection.outgoing`), per connection:

- at most one message per `PEX_INTERVAL` (60 s, BEP 11's "once a minute"; libtorrent drops
  peers that send faster), the first one as soon as there is something to say;
- ``added`` are peers we are connected to and could be dialled (outgoing connections, or incoming
  ones that told us their listen port) and that we have not advertised to this peer yet;
  ``dropped`` are peers advertised before that are gone. At most `wire.ut_pex.MAX_SEND` (50) of
  each per message; the rest waits for the next one. Nothing changed: no message.

Receiving (`PexConnection.accept` then `PexBudget.admit`):

- a peer's messages closer together than `MIN_RECEIVE_INTERVAL` are ignored (flooding);
- at most `MAX_ACCEPT_PER_MESSAGE` added peers are taken from one message, and at most
  `PexBudget.limit` different peers per torrent over its lifetime, so a lying peer cannot fill
  our candidate list; ``dropped`` entries are ignored (a peer's view of who left is no reason to
  forget an address another source gave us).

Private torrents (BEP 27) never use PEX: the engine neither advertises ut_pex nor sends or
accepts messages for them; this module is not consulted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from torrentfs.types import PeerAddress
from torrentfs.wire.ut_pex import MAX_SEND, PexMessage, PexPeer

PEX_INTERVAL = 60.0
"""Seconds between two messages to one peer (BEP 11)."""
MIN_RECEIVE_INTERVAL = 30.0
"""A peer's message arriving sooner than this after its previous one is ignored."""
MAX_ACCEPT_PER_MESSAGE = 50
"""Added peers taken from one message."""
MAX_PEX_PEERS = 500
"""Different peers one torrent takes from PEX over its lifetime."""


@dataclass
class PexConnection:
    """PEX state of one connection: what we advertised to the peer, and when we last talked."""

    advertised: set[PeerAddress] = field(default_factory=set)
    last_sent: float = -math.inf
    last_received: float = -math.inf

    def outgoing(self, current: Mapping[PeerAddress, int], now: float) -> PexMessage | None:
        """The message to send now, given `current` (dialable peers -> `FLAG_*` bits, the
        recipient itself excluded), or None (too soon, or nothing changed)."""
        if now - self.last_sent < PEX_INTERVAL:
            return None
        added = [PexPeer(a, flags) for a, flags in current.items() if a not in self.advertised]
        dropped = [a for a in self.advertised if a not in current]
        added, dropped = added[:MAX_SEND], dropped[:MAX_SEND]
        if not added and not dropped:
            return None
        self.advertised.update(p.address for p in added)
        self.advertised.difference_update(dropped)
        self.last_sent = now
        return PexMessage(tuple(added), tuple(dropped))

    def accept(self, msg: PexMessage, now: float) -> list[PeerAddress]:
        """The added peers of a received message worth considering (empty if it came too soon)."""
        if now - self.last_received < MIN_RECEIVE_INTERVAL:
            return []
        self.last_received = now
        return [p.address for p in msg.added[:MAX_ACCEPT_PER_MESSAGE]]


@dataclass
class PexBudget:
    """How many different peers a torrent has taken from PEX (capped at `limit`)."""

    limit: int = MAX_PEX_PEERS
    learned: set[PeerAddress] = field(default_factory=set)

    def admit(self, addresses: Iterable[PeerAddress]) -> list[PeerAddress]:
        """The addresses not seen from PEX before, while the budget lasts."""
        out: list[PeerAddress] = []
        for address in addresses:
            if address in self.learned:
                continue
            if len(self.learned) >= self.limit:
                break
            self.learned.add(address)
            out.append(address)
        return out


__all__ = [
    "MAX_ACCEPT_PER_MESSAGE",
    "MAX_PEX_PEERS",
    "MIN_RECEIVE_INTERVAL",
    "PEX_INTERVAL",
    "PexBudget",
    "PexConnection",
]
