"""The error types of torrentfs (L0).

Every failure the project anticipates is a `TorrentfsError`; anything else escaping is a bug.
Errors say whose fault they are: `ProtocolError.remote` tells a misbehaving peer (drop or ban it)
from our own mistake. The FUSE layer maps these to errno in exactly one place.
"""

from __future__ import annotations


class TorrentfsError(Exception):
    """Root of every error torrentfs raises on purpose."""


class BencodeError(TorrentfsError):
    """Malformed or over-limit bencoded data."""


class MetainfoError(TorrentfsError):
    """A .torrent (or info dictionary) that cannot be used."""


class UnsupportedTorrent(MetainfoError):
    """A well-formed torrent of a kind torrentfs does not support yet (e.g. v2-only, BEP 52)."""


class MagnetError(TorrentfsError):
    """A malformed magnet URI."""


class ProtocolError(TorrentfsError):
    """A peer-wire, extension, tracker or DHT protocol violation.

    `remote` is True when the other side broke the rules (the usual case: drop the peer),
    False when we produced something invalid (a bug on our side).
    """

    def __init__(self, message: str, *, remote: bool = True) -> None:
        super().__init__(message)
        self.remote = remote


class TrackerError(TorrentfsError):
    """A tracker that failed, refused (``failure reason``) or answered garbage."""


class StorageError(TorrentfsError):
    """Reading or writing the download dir failed (disk full, permissions, unsafe path)."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ReadTimeout(TorrentfsError):
    """Verified data for a read did not arrive before its deadline."""


class TorrentRemoved(TorrentfsError):
    """The torrent was removed (or the session closed) while someone waited on it."""
