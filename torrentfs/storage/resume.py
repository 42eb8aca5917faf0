"""Resume state: which pieces are verified on disk, persisted crash-safely (L4).

A torrent's resume file (``state_dir/resume/<info-hash hex>.resume``, JSON) records the set of
verified pieces (the BEP 3 bitfield bytes, base64) and, for every file, its ``(size,
mtime_ns)`` when the state was saved. On load, a piece counts as verified only if every file it
touches still has the recorded size and mtime: a file changed or truncated behind our back
invalidates its pieces (they are found again by `recheck`, or downloaded again).

Crash-safety rule: **the state file never claims a piece whose data a crash could lose.**
`ResumeWriter.flush` snapshots the pieces marked verified so far, calls ``store.sync()``
(fdatasync of the data files) and only then writes the state file atomically (temp file,
fsync, rename, fsync of the directory). Pieces marked while the sync runs wait for the next
flush. Dropping a piece (``forget``) is persisted *before* its data may be destroyed
(``evict``).

`recheck` hashes the data already on disk (SHA-1 in worker threads) for ``--recheck`` or when
no resume data exists; pieces with a missing file region are skipped, and pieces lying wholly in
sparse holes (SEEK_HOLE/SEEK_DATA) are judged without reading them (they read as zeros).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from torrentfs.bitfield import Bitfield
from torrentfs.errors import StorageError, TorrentfsError
from torrentfs.storage.base import PieceStore, Presence
from torrentfs.storage.files import stat_data_file, storage_components

if TYPE_CHECKING:
    from torrentfs.metainfo import Metainfo

__all__ = [
    "FORMAT",
    "PieceChecker",
    "ResumeState",
    "ResumeWriter",
    "load_resume",
    "load_resume_state",
    "recheck",
    "resume_path",
]

log = logging.getLogger(__name__)

FORMAT = "torrentfs-resume"
VERSION = 1

FileStat = tuple[int, int]
"""``(size, mtime_ns)`` of a data file."""


def resume_path(state_dir: Path, info_hash: bytes) -> Path:
    """Where the resume state of a torrent lives: ``state_dir/resume/<hex>.resume``."""
    return Path(state_dir) / "resume" / f"{info_hash.hex()}.resume"


def _max_state_size(metainfo: Metainfo) -> int:
    # base64 of the bitfield + a generous per-file allowance + the fixed fields
    return 4096 + 2 * math.ceil(metainfo.num_pieces / 8) + 64 * len(metainfo.files)


def _tracked_files(metainfo: Metainfo) -> list[int]:
    """Files whose stat decides their pieces' validity: real (non-pad) files with bytes."""
    return [f.index for f in metainfo.files if not f.pad and f.length > 0]


def _piece_files(metainfo: Metainfo, piece: int) -> list[int]:
    files = metainfo.files
    return [
        s.file_index
        for s in metainfo.geometry.piece_file_slices(piece)
        if not files[s.file_index].pad
    ]


def _current_stat(root: Path, metainfo: Metainfo, index: int) -> FileStat | None:
    st = stat_data_file(root, storage_components(metainfo, metainfo.files[index]))
    return None if st is None else (st.st_size, st.st_mtime_ns)


# -- load ------------------------------------------------------------------------------------


def _parse_state(data: bytes, metainfo: Metainfo) -> tuple[Bitfield, list[FileStat | None]]:
    """Decode and check a state file; raise ValueError/TorrentfsError if it does not fit."""
    state = json.loads(data)
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError("unknown format or version")
    if state.get("info_hash") != metainfo.info_hash.hex():
        raise ValueError("state is for another torrent")
    if (
        state.get("num_pieces") != metainfo.num_pieces
        or state.get("piece_length") != metainfo.piece_length
        or state.get("total_size") != metainfo.total_size
    ):
        raise ValueError("piece layout differs")
    pieces = state.get("pieces")
    if not isinstance(pieces, str):
        raise ValueError("pieces missing")
    bitfield = Bitfield.from_bytes(metainfo.num_pieces, base64.b64decode(pieces, validate=True))
    files = state.get("files")
    if not isinstance(files, list) or len(files) != len(metainfo.files):
        raise ValueError("file list differs")
    stats: list[FileStat | None] = []
    for entry in files:
        if entry is None:
            stats.append(None)
        elif (
            isinstance(entry, list)
            and len(entry) == 2
            and all(type(v) is int and v >= 0 for v in entry)
        ):
            stats.append((entry[0], entry[1]))
        else:
            raise ValueError(f"bad file entry {entry!r}")
    return bitfield, stats


@dataclass
class ResumeState:
    """What `load_resume_state` found: the pieces to trust, and whether the file says it all."""

    verified: Bitfield
    """Recorded pieces whose files are unchanged since the save: verified without hashing."""
    clean: bool
    """The state file (or its absence) already says exactly `verified`: nothing to rewrite."""
    stats: list[FileStat | None] = field(default_factory=list)
    """The file stats recorded (when `clean`)."""

    def saved_stats(self) -> list[FileStat | None] | None:
        """For `ResumeWriter`'s ``saved``: the recorded stats when nothing needs rewriting."""
        return self.stats if self.clean else None


def load_resume(path: Path, metainfo: Metainfo, root: Path) -> Bitfield:
    """The verified pieces recorded at `path` whose files are unchanged since; never raises.

    See `load_resume_state`.
    """
    return load_resume_state(path, metainfo, root).verified


def load_resume_state(path: Path, metainfo: Metainfo, root: Path) -> ResumeState:
    """Read the state at `path`: the recorded pieces whose files are unchanged; never raises.

    A missing, unreadable, corrupt or foreign state file yields no pieces (logged, except a
    missing one). A piece is kept only if every non-pad file it touches has, right now, the
    size and mtime recorded when the state was saved, and that size is the file's length in
    the torrent. The others (e.g. verified and recorded, then the file was written again by a
    download that crashed before the next save) must be hashed before use (`stored_check`).
    Blocking (one ``lstat`` per file): run it in a worker thread.
    """
    empty = Bitfield(metainfo.num_pieces)
    try:
        with open(path, "rb") as f:
            data = f.read(_max_state_size(metainfo) + 1)
    except FileNotFoundError:
        return ResumeState(empty, clean=True, stats=[None] * len(metainfo.files))
    except OSError as exc:
        log.warning("cannot read resume state %s: %s", path, exc)
        return ResumeState(empty, clean=False)
    if len(data) > _max_state_size(metainfo):
        log.warning("resume state %s is implausibly large; ignoring it", path)
        return ResumeState(empty, clean=False)
    try:
        saved, stats = _parse_state(data, metainfo)
    except (ValueError, TorrentfsError) as exc:
        log.warning("ignoring resume state %s: %s", path, exc)
        return ResumeState(empty, clean=False)

    valid: dict[int, bool] = {}

    def file_ok(index: int) -> bool:
        ok = valid.get(index)
        if ok is None:
            recorded = stats[index]
            ok = (
                recorded is not None
                and recorded[0] >= metainfo.files[index].length
                and _current_stat(root, metainfo, index) == recorded
            )
            valid[index] = ok
        return ok

    result = Bitfield(metainfo.num_pieces)
    for piece in saved.iter_set():
        if all(file_ok(i) for i in _piece_files(metainfo, piece)):
            result.set(piece)
    dropped = saved.count() - result.count()
    if dropped:
        log.info(
            "%s: %d recorded pieces lie in files changed since the last save; checking them",
            metainfo.name,
            dropped,
        )
    return ResumeState(result, clean=not dropped, stats=stats)


# -- save ------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new file, complete."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ResumeWriter:
    """Batches verified pieces and persists them crash-safely (see the module docstring).

    `verified` are pieces already durable on disk (from `load_resume` or `recheck`); they are
    written out at the first flush - unless ``saved`` is given: the file stats the state file
    on disk already records for exactly `verified` (`ResumeState.saved_stats`), so an idle
    torrent writes (and fsyncs) nothing until something changes. Call `mark_verified` after
    ``store.write_piece`` returned, and `flush` (or run `run` in a nursery) to persist. Flushes
    are serialised.
    """

    def __init__(
        self,
        path: Path,
        metainfo: Metainfo,
        root: Path,
        verified: Bitfield | None = None,
        *,
        max_pending: int = 256,
        max_interval: float = 10.0,
        min_interval: float = 1.0,
        saved: list[FileStat | None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.metainfo = metainfo
        self.root = Path(root)
        self.max_pending = max_pending
        self.max_interval = max_interval
        self.min_interval = min_interval
        self._durable = verified.copy() if verified is not None else Bitfield(metainfo.num_pieces)
        if len(self._durable) != metainfo.num_pieces:
            raise ValueError("verified bitfield has the wrong size")
        self._pending: set[int] = set()
        self._dirty = saved is None  # the file on disk (if any) is not known to match
        self._stats: list[FileStat | None] = [None] * len(metainfo.files)
        self._stale: set[int] = set(_tracked_files(metainfo))
        if saved is not None:
            if len(saved) != len(metainfo.files):
                raise ValueError("saved file stats have the wrong length")
            self._stats = list(saved)
            self._stale = set()
        self._lock = trio.Lock()
        self._wake = trio.Event()
        self._last_flush: float | None = None
        self.flush_count = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def saved_pieces(self) -> Bitfield:
        """Pieces the next state file may claim (synced); a copy."""
        return self._durable.copy()

    def mark_verified(self, piece: int) -> None:
        """Record that `piece` was written (not yet synced); persisted by the next flush."""
        if not 0 <= piece < self.metainfo.num_pieces:
            raise IndexError(f"piece {piece} out of range")
        if self._durable[piece]:
            return
        self._pending.add(piece)
        if len(self._pending) >= self.max_pending:
            self._wake.set()

    def forget(self, piece: int) -> None:
        """Stop claiming `piece` (failed, evicted). Flush before destroying its data."""
        self._pending.discard(piece)
        self._durable.clear(piece)
        self._dirty = True
        self._stale.update(_piece_files(self.metainfo, piece))

    def should_flush(self, now: float) -> bool:
        """The helper policy: flush after `max_pending` pieces or `max_interval` seconds,
        but not more often than every `min_interval` seconds."""
        if not self._pending and not self._dirty:
            return False
        if self._last_flush is None:
            return True
        elapsed = now - self._last_flush
        if elapsed >= self.max_interval:
            return True
        return len(self._pending) >= self.max_pending and elapsed >= self.min_interval

    # -- persisting -------------------------------------------------------------------------

    async def flush(self, store: PieceStore) -> None:
        """Sync the data of every piece marked so far, then write the state file atomically.

        Raises `StorageError` if either step fails; nothing unsynced is ever recorded.
        """
        async with self._lock:
            if not self._pending and not self._dirty:
                return
            snapshot = set(self._pending)
            await store.sync()  # before the state names them: their data is now durable
            for piece in snapshot:
                if piece in self._pending:  # not forgotten while we synced
                    self._pending.discard(piece)
                    self._durable.set(piece)
                    self._stale.update(_piece_files(self.metainfo, piece))
            bits = self._durable.to_bytes()
            stale = self._stale
            self._stale = set()
            self._dirty = False
            try:
                await trio.to_thread.run_sync(self._write_state, bits, stale)
            except BaseException:
                self._stale |= stale
                self._dirty = True
                raise
            self._last_flush = trio.current_time()
            self.flush_count += 1

    async def maybe_flush(self, store: PieceStore, now: float | None = None) -> bool:
        """Flush if `should_flush`; True if it did."""
        if not self.should_flush(trio.current_time() if now is None else now):
            return False
        await self.flush(store)
        return True

    async def evict(self, store: PieceStore, piece: int) -> None:
        """Drop `piece` crash-safely: persist that it is gone, then free its disk space."""
        self.forget(piece)
        await self.flush(store)
        await store.evict_piece(piece)

    async def run(self, store: PieceStore) -> None:
        """Flush by the `should_flush` policy until cancelled (run it in the torrent's nursery).

        Errors are logged and retried at the next interval; the owner does a final `flush`.
        """
        failing = False
        while True:
            with trio.move_on_after(self.max_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            if self._last_flush is not None:
                wait = self._last_flush + self.min_interval - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
            if not self._pending and not self._dirty:
                continue
            try:
                await self.flush(store)
            except StorageError as exc:
                level = logging.DEBUG if failing else logging.ERROR
                log.log(level, "%s: cannot save resume state: %s", self.metainfo.name, exc)
                failing = True
            else:
                failing = False

    def _write_state(self, bits: bytes, stale: set[int]) -> None:
        try:
            for index in stale:
                self._stats[index] = _current_stat(self.root, self.metainfo, index)
            state: dict[str, Any] = {
                "format": FORMAT,
                "version": VERSION,
                "info_hash": self.metainfo.info_hash.hex(),
                "name": self.metainfo.name,
                "piece_length": self.metainfo.piece_length,
                "num_pieces": self.metainfo.num_pieces,
                "total_size": self.metainfo.total_size,
                "pieces": base64.b64encode(bits).decode("ascii"),
                "files": [None if s is None else list(s) for s in self._stats],
            }
            _write_atomic(self.path, json.dumps(state, separators=(",", ":")).encode())
        except OSError as exc:
            raise StorageError(
                f"cannot write resume state {self.path}: {exc.strerror or exc}", errno=exc.errno
            ) from exc


# -- recheck ---------------------------------------------------------------------------------


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


class PieceChecker:
    """Does a stored piece match its SHA-1 in the metainfo (BEP 3)? Reading in worker threads;
    pieces lying wholly in sparse holes are judged against the hash of zeros, unread."""

    def __init__(self, store: PieceStore, metainfo: Metainfo) -> None:
        self.store = store
        self.metainfo = metainfo
        self._zero_hashes: dict[int, bytes] = {}

    async def matches(self, piece: int, presence: Presence | None = None) -> bool:
        """`presence`: the store's `piece_presence`, if already known."""
        if presence is None:
            presence = await self.store.piece_presence(piece)
        if presence is Presence.ABSENT:
            return False
        if presence is Presence.HOLE:
            size = self.metainfo.piece_size(piece)
            digest = self._zero_hashes.get(size)
            if digest is None:
                digest = self._zero_hashes[size] = await trio.to_thread.run_sync(_sha1, bytes(size))
        else:
            digest = await trio.to_thread.run_sync(_sha1, await self.store.read_piece(piece))
        return digest == self.metainfo.piece_hash(piece)


async def recheck(
    store: PieceStore,
    metainfo: Metainfo,
    *,
    skip: Bitfield | None = None,
    pieces: Iterable[int] | None = None,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Bitfield:
    """Hash the stored data of every piece (or of `pieces`), except those set in `skip`.

    Returns the pieces whose SHA-1 matched (BEP 3). Reading and hashing run in worker threads,
    `concurrency` pieces at a time. Pieces with missing backing data are not read; pieces lying
    entirely in holes are matched against the hash of zeros without reading. `progress` is
    called with each checked piece index.
    """
    found = Bitfield(metainfo.num_pieces)
    todo = range(metainfo.num_pieces) if pieces is None else pieces
    checker = PieceChecker(store, metainfo)
    unusable: list[StorageError] = []

    async def check(piece: int) -> None:
        try:
            matched = await checker.matches(piece)
        except StorageError as exc:
            # Unreadable, or not ours to read (a symlink planted in the download dir): the
            # piece is simply not found; fetching it will report the problem to its readers.
            if not unusable:
                log.warning("%s: cannot check piece %d: %s", metainfo.name, piece, exc)
            unusable.append(exc)
            return
        if matched:
            found.set(piece)

    send, receive = trio.open_memory_channel[int](0)

    async def worker(pieces_in: trio.MemoryReceiveChannel[int]) -> None:
        async with pieces_in:
            async for piece in pieces_in:
                await check(piece)
                if progress is not None:
                    progress(piece)

    async with trio.open_nursery() as nursery:
        async with receive:
            for _ in range(max(1, concurrency)):
                nursery.start_soon(worker, receive.clone())
        async with send:
            for piece in todo:
                if skip is not None and skip[piece]:
                    continue
                await send.send(piece)
    return found
