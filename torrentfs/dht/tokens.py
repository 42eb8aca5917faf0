"""Write tokens for ``get_peers`` -> ``announce_peer`` (BEP 5), with rotating secrets.

A node may announce itself for an info-hash only with a token we handed to *its IP address* in a
recent ``get_peers`` response; this stops third parties from announcing someone else's address.
BEP 5 suggests ``SHA1(ip + secret)`` with the secret changed every five minutes and tokens up to
ten minutes old accepted: we keep the current and the previous secret.

Guarantees: tokens are `TOKEN_LEN` bytes; a token issued at time t is accepted until at least
t + `ROTATE_INTERVAL` and never after t + 2 * `ROTATE_INTERVAL`; tokens are bound to the IP (not
the port). Pure: the caller passes ``now`` and the source of secret bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable

__all__ = ["ROTATE_INTERVAL", "SECRET_LEN", "TOKEN_LEN", "TokenManager"]

ROTATE_INTERVAL = 300.0
SECRET_LEN = 16
TOKEN_LEN = 8


def _ip_bytes(ip: str) -> bytes:
    try:
        return ipaddress.ip_address(ip).packed
    except ValueError:
        return ip.encode("utf-8", "replace")


class TokenManager:
    """Issue and check tokens. `random_bytes(n)` supplies secrets (e.g. ``secrets.token_bytes``
    or ``random.Random(seed).randbytes`` in tests)."""

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        now: float,
        *,
        rotate_interval: float = ROTATE_INTERVAL,
    ) -> None:
        self._random_bytes = random_bytes
        self._interval = rotate_interval
        self._current = random_bytes(SECRET_LEN)
        self._previous = random_bytes(SECRET_LEN)
        self._rotated_at = now

    def _rotate(self, now: float) -> None:
        elapsed = now - self._rotated_at
        if elapsed < self._interval:
            return
        if elapsed >= 2 * self._interval:
            self._previous = self._random_bytes(SECRET_LEN)  # both are stale
        else:
            self._previous = self._current
        self._current = self._random_bytes(SECRET_LEN)
        # Stay on the fixed schedule so a token's lifetime does not depend on when we are asked.
        self._rotated_at += self._interval * (elapsed // self._interval)

    @staticmethod
    def _make(ip: str, secret: bytes) -> bytes:
        return hashlib.sha1(_ip_bytes(ip) + secret).digest()[:TOKEN_LEN]

    def issue(self, ip: str, now: float) -> bytes:
        """The token for `ip` to put in a ``get_peers`` response."""
        self._rotate(now)
        return self._make(ip, self._current)

    def check(self, token: bytes, ip: str, now: float) -> bool:
        """Whether `token` (from an ``announce_peer`` sent by `ip`) is valid now."""
        self._rotate(now)
        return any(
            hmac.compare_digest(token, self._make(ip, secret))
            for secret in (self._current, self._previous)
        )
