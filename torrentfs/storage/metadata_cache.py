"""Resolved magnet metadata kept in the state dir (L4), so a restart never fetches it again.

One file per torrent, ``<state_dir>/metadata/<info-hash hex>.info``, holding the exact info dict
bytes a magnet resolved to (BEP 9). Guarantees:

* written atomically (temporary file, fsync, rename, fsync of the directory): a crash leaves
  the old state or the new one, never half a file;
* `load` trusts nothing it reads: a file larger than `MAX_METADATA_SIZE` or whose SHA-1 is not
  the info-hash is ignored (and removed), so the metadata is fetched again rather than used.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from torrentfs.errors import StorageError
from torrentfs.wire.extension import MAX_METADATA_SIZE

log = logging.getLogger(__name__)

SUFFIX = ".info"


def metadata_path(state_dir: Path, info_hash: bytes) -> Path:
    return state_dir / "metadata" / f"{info_hash.hex()}{SUFFIX}"


def load(state_dir: Path, info_hash: bytes) -> bytes | None:
    """The saved info dict of `info_hash`, verified against it, or None."""
    path = metadata_path(state_dir, info_hash)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_METADATA_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s: cannot read saved metadata: %s", path, exc)
        return None
    if len(data) <= MAX_METADATA_SIZE and hashlib.sha1(data).digest() == info_hash:
        return data
    log.warning("%s: saved metadata does not match its info-hash; fetching it again", path)
    try:
        path.unlink()
    except OSError:
        pass
    return None


def save(state_dir: Path, info_hash: bytes, info_bytes: bytes) -> None:
    """Keep `info_bytes` (already verified by the caller) for `info_hash`; raises StorageError."""
    path = metadata_path(state_dir, info_hash)
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            f.write(info_bytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"{path}: cannot save metadata: {exc}", errno=exc.errno) from None
