"""Tiny helpers shared by the mount's unit tests: metainfo built in memory (no hashing)."""

from __future__ import annotations

import hashlib

from torrentfs.bencode import encode
from torrentfs.metainfo import Metainfo, parse_metainfo


def make_metainfo(
    name: str,
    files: list[tuple[str, int]] | None = None,
    *,
    length: int | None = None,
    piece_length: int = 16384,
    pads: dict[int, int] | None = None,
    creation_date: int | None = 1_600_000_000,
    salt: str = "",
    data: bytes | None = None,
) -> Metainfo:
    """A v1 torrent: single-file (``length``) or multi-file (``files`` as ``"a/b", size``).

    ``pads`` inserts a BEP 47 pad file of the given size after file number ``i``. Piece hashes
    are real when ``data`` (the concatenated payload, pads as zeros) is given, else zeros.
    """
    info: dict[bytes, object] = {b"name": name.encode(), b"piece length": piece_length}
    if files is None:
        assert length is not None
        info[b"length"] = length
        total = length
    else:
        entries: list[dict[bytes, object]] = []
        total = 0
        for i, (path, size) in enumerate(files):
            entries.append({b"length": size, b"path": [p.encode() for p in path.split("/")]})
            total += size
            if pads and i in pads:
                entries.append({b"length": pads[i], b"path": [b".pad", str(pads[i]).encode()],
                                b"attr": b"p"})  # fmt: skip
                total += pads[i]
        info[b"files"] = entries
    n = max(1, -(-total // piece_length))
    if data is not None:
        info[b"pieces"] = b"".join(
            hashlib.sha1(data[i * piece_length : (i + 1) * piece_length]).digest() for i in range(n)
        )
    else:
        info[b"pieces"] = b"\0" * 20 * n
    if salt:
        info[b"x-salt"] = salt.encode()
    top: dict[bytes, object] = {b"info": info}
    if creation_date is not None:
        top[b"creation date"] = creation_date
    return parse_metainfo(encode(top))


def torrent_bytes(metainfo: Metainfo) -> bytes:
    """A .torrent file for an already parsed metainfo (info dict bytes kept exactly)."""
    return b"d4:info" + metainfo.info_bytes + b"e"
