"""Making v1 torrents from files on disk (BEP 3; L4: worker threads and file I/O).

What this module guarantees:

* **Layout** -- a regular file becomes a single-file torrent (``length``); a directory becomes a
  multi-file torrent (``files``) even when it holds one file, as mktorrent and libtorrent do.
  Files are sorted by their '/'-joined path in code-point order (which equals UTF-8 byte order),
  exactly as mktorrent sorts them (``strcmp`` on the path), so the same tree gives the same
  info-hash here and there -- handy for cross-seeding. (libtorrent keeps readdir order; BEP 52's
  per-component order differs for names holding characters below ``/`` such as ``a.b`` vs
  ``a/x``; it matters only for v2, which this module does not make.) Hidden files are
  included; zero-length files are included (they take no bytes of any piece); empty directories
  vanish (BEP 3 lists files, not directories). Symbolic links inside a directory are *not
  followed and not stored*: following them could leave the tree or loop, and storing them needs
  BEP 47 ``attr`` that older clients ignore; they are reported in `SourceTree.skipped`, as are
  sockets, FIFOs and devices. The path given at the top is followed if it is a link (the user
  named it). Names must be valid UTF-8 (``name`` and ``path`` are UTF-8 strings in BEP 3).
* **Pieces** -- SHA-1 of every ``piece length`` bytes of the files' concatenation (pieces span
  file boundaries, the last piece is short). Worker threads (one per CPU by default) each take
  the next chunk of whole pieces (about 2 MiB), read it with ``preadv`` into their own reused
  buffer (files laid end to end, a chunk may span several) and hash it in place: `hashlib`
  releases the GIL for buffers over 2 KiB, so reading and hashing really run in parallel and
  nothing is copied twice. The source is read, never mapped: a file truncated while it is
  hashed gives a clean `CreateError`, not a SIGBUS. A file that shrinks or grows while it is
  hashed is an error, never a torrent with silently wrong hashes.
* **Piece length** -- `choose_piece_length` picks the smallest power of two from 16 KiB to
  16 MiB that gives at most 2000 pieces (so usually 1000--2000), the range mainstream creators
  aim for (Transmission ~1000-2000, libtorrent's sqrt rule, mktorrent's size table). Explicit
  lengths must be powers of two from 16 KiB (BEP 3 block size) to 64 MiB.
* **Errors** -- every anticipated failure (missing source, unreadable file, bad name, nothing to
  share, bad URL) is a `CreateError` naming the path and the problem.

Only v1 torrents are made: v2 (BEP 52) hashing is not implemented.
"""

from __future__ import annotations

import _thread
import bisect
import os
import stat

from . import __version__
from .bencode import encode
from .errors import TorrentfsError

try:  # OpenSSL's SHA-1 itself: `hashlib` would load blake2 and look up every algorithm first
    from _hashlib import openssl_sha1 as sha1
except ImportError:  # pragma: no cover - a Python built without OpenSSL
    from hashlib import sha1

# `torrentfs make` is a short-lived command whose start-up counts against its throughput (it
# is benchmarked against mktorrent): this module imports neither `typing` nor `dataclasses`
# (both cost more CPU than hashing a few megabytes); annotations stay strings, checked by mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "DEFAULT_CREATED_BY",
    "MAX_AUTO_PIECE_LENGTH",
    "MAX_PIECE_LENGTH",
    "MIN_PIECE_LENGTH",
    "CreateError",
    "SourceFile",
    "SourceTree",
    "check_piece_length",
    "choose_piece_length",
    "create_torrent",
    "default_threads",
    "hash_pieces",
    "make_torrent",
    "scan_source",
    "sha1",
    "torrent_dict",
]

MIN_PIECE_LENGTH = 16 * 1024
"""16 KiB: a piece holds at least one request-sized block (BEP 3 clients request 16 KiB;
equal to `torrentfs.types.BLOCK_SIZE`, which is not imported here: it would import `typing`)."""

MAX_AUTO_PIECE_LENGTH = 16 * 1024 * 1024
"""The largest piece length chosen automatically (very large torrents get more pieces instead)."""

MAX_PIECE_LENGTH = 64 * 1024 * 1024
"""The largest explicit piece length accepted; beyond it many clients refuse the torrent."""

TARGET_MAX_PIECES = 2000
"""The automatic piece length keeps the piece count at or below this (and above half of it)."""

DEFAULT_CREATED_BY = f"torrentfs {__version__}"

_CHUNK_TARGET = 2 * 1024 * 1024
"""Bytes per read: large enough for few syscalls and GIL-free hashing, small enough to share."""

_PROGRESS_INTERVAL = 0.1
"""Seconds between progress reports while the workers hash."""


class CreateError(TorrentfsError):
    """The torrent cannot be made: a missing or unreadable source, a bad name or option."""


class SourceFile:
    """One file to include: `path` relative to the torrent root (``(name,)`` if single-file)."""

    __slots__ = ("fs_path", "length", "path")

    def __init__(self, path: tuple[str, ...], fs_path: str, length: int) -> None:
        self.path = path
        self.fs_path = fs_path
        self.length = length

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceFile):
            return NotImplemented
        return (self.path, self.fs_path, self.length) == (other.path, other.fs_path, other.length)

    __hash__ = None  # type: ignore[assignment]  # mutable value: not hashable

    def __repr__(self) -> str:
        return f"SourceFile(path={self.path!r}, fs_path={self.fs_path!r}, length={self.length})"


class SourceTree:
    """What `scan_source` found: the files in torrent order and what it left out (and why).

    `skipped` holds ``(fs_path, reason)`` of symbolic links and special files not included.
    """

    __slots__ = ("files", "multi_file", "name", "skipped")

    def __init__(
        self,
        name: str,
        files: tuple[SourceFile, ...],
        multi_file: bool,
        skipped: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.name = name
        self.files = files
        self.multi_file = multi_file
        self.skipped = skipped

    @property
    def total_size(self) -> int:
        return sum(f.length for f in self.files)

    def __repr__(self) -> str:
        return (
            f"SourceTree(name={self.name!r}, files={self.files!r}, "
            f"multi_file={self.multi_file}, skipped={self.skipped!r})"
        )


def default_threads() -> int:
    """Hashing threads: one per CPU this process may run on (the reader is extra), at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def choose_piece_length(total_size: int) -> int:
    """The smallest power of two in [16 KiB, 16 MiB] giving at most `TARGET_MAX_PIECES` pieces."""
    length = MIN_PIECE_LENGTH
    while length < MAX_AUTO_PIECE_LENGTH and -(-total_size // length) > TARGET_MAX_PIECES:
        length *= 2
    return length


def check_piece_length(piece_length: int) -> None:
    """Raise `CreateError` unless `piece_length` is a power of two in the accepted range."""
    if (
        piece_length < MIN_PIECE_LENGTH
        or piece_length > MAX_PIECE_LENGTH
        or piece_length & (piece_length - 1)
    ):
        raise CreateError(
            f"piece length {piece_length} must be a power of two from "
            f"{MIN_PIECE_LENGTH} (16 KiB) to {MAX_PIECE_LENGTH} (64 MiB)"
        )


def _check_name(component: str, where: str) -> None:
    try:
        component.encode("utf-8")
    except UnicodeEncodeError:
        raise CreateError(f"{where}: file name is not valid UTF-8") from None
    if component in ("", ".", "..") or "/" in component or "\0" in component:
        raise CreateError(f"{where}: unusable name {component!r}")


def scan_source(path: str | os.PathLike[str], *, name: str | None = None) -> SourceTree:
    """List the files a torrent of `path` holds, in torrent order (see the module docstring)."""
    top = os.fspath(path)
    try:
        st = os.stat(top)
    except OSError as e:
        raise CreateError(f"{top}: {e.strerror or e}") from None
    if name is None:
        name = os.path.basename(os.path.abspath(top))
    _check_name(name, top)
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            raise CreateError(f"{top}: file is empty; a torrent needs at least one byte")
        return SourceTree(name, (SourceFile((name,), top, st.st_size),), multi_file=False)
    if not stat.S_ISDIR(st.st_mode):
        raise CreateError(f"{top}: not a regular file or directory")
    files: list[SourceFile] = []
    skipped: list[tuple[str, str]] = []
    # An explicit stack, not recursion: directory depth is not bounded by Python's stack.
    stack: list[tuple[str, tuple[str, ...]]] = [(top, ())]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as e:
            raise CreateError(f"{directory}: {e.strerror or e}") from None
        for entry in entries:
            rel = (*prefix, entry.name)
            _check_name(entry.name, entry.path)
            try:
                if entry.is_symlink():
                    skipped.append((entry.path, "symbolic link"))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel))
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    files.append(SourceFile(rel, entry.path, size))
                else:
                    skipped.append((entry.path, "not a regular file"))
            except OSError as e:
                raise CreateError(f"{entry.path}: {e.strerror or e}") from None
    files.sort(key=lambda f: "/".join(f.path))
    skipped.sort()
    if not files:
        raise CreateError(f"{top}: no files to share")
    tree = SourceTree(name, tuple(files), multi_file=True, skipped=tuple(skipped))
    if tree.total_size == 0:
        raise CreateError(f"{top}: all files are empty; a torrent needs at least one byte")
    return tree


def hash_pieces(
    files: Sequence[SourceFile],
    piece_length: int,
    *,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """The concatenated 20-byte SHA-1 of every piece of `files` laid end to end (BEP 3).

    `threads` workers (default `default_threads`) each take whole chunks of pieces, read them
    with `pread` (files laid end to end, a chunk may span several) and hash them: reading and
    hashing both run in parallel, and `hashlib` releases the GIL. `progress`, if given, is called
    in the calling thread with the number of bytes hashed so far, and once at the end with the
    total. An interrupt (KeyboardInterrupt) stops the workers.
    """
    if piece_length <= 0:
        raise CreateError(f"piece length {piece_length} must be positive")
    total = sum(f.length for f in files)
    num_pieces = -(-total // piece_length)
    digests = bytearray(20 * num_pieces)
    if num_pieces == 0:
        return b""
    workers = max(1, threads if threads is not None else default_threads())
    pieces_per_chunk = max(1, _CHUNK_TARGET // piece_length)
    chunk_size = pieces_per_chunk * piece_length
    num_chunks = -(-total // chunk_size)
    workers = min(workers, num_chunks)
    layout = _Layout([f for f in files if f.length])
    next_chunk = [0]
    lock = _thread.allocate_lock()
    done = [0]
    failures: list[BaseException] = []
    stop = [False]

    def worker(finished: _thread.LockType) -> None:
        buf = bytearray(chunk_size)
        fds: dict[int, int] = {}
        try:
            while not stop[0]:
                with lock:
                    chunk = next_chunk[0]
                    next_chunk[0] += 1
                if chunk >= num_chunks:
                    return
                offset = chunk * chunk_size
                nbytes = min(chunk_size, total - offset)
                view = memoryview(buf)[:nbytes]
                layout.read_into(offset, view, fds)
                out = chunk * pieces_per_chunk * 20
                for start in range(0, nbytes, piece_length):
                    digests[out : out + 20] = sha1(view[start : start + piece_length]).digest()
                    out += 20
                view.release()
                with lock:
                    done[0] += nbytes
        except BaseException as e:
            failures.append(e)
            stop[0] = True
        finally:
            for fd in fds.values():
                os.close(fd)
            finished.release()

    # `_thread`, not `threading`: its import (functools, collections, ...) and `Thread.start`
    # waiting for each thread to run cost `make` milliseconds that mktorrent does not spend.
    pool = []
    for _ in range(workers):
        finished = _thread.allocate_lock()
        finished.acquire()
        _thread.start_new_thread(worker, (finished,))
        pool.append(finished)
    try:
        for finished in pool:  # an interrupt (Ctrl-C) stops the wait and then the workers
            while not finished.acquire(timeout=_PROGRESS_INTERVAL):
                if progress is not None:
                    progress(done[0])
            finished.release()
    finally:
        stop[0] = True
        for finished in pool:
            finished.acquire()
    if failures:
        raise failures[0]
    layout.check_unchanged()
    if progress is not None:
        progress(total)
    return bytes(digests)


class _Layout:
    """Positional reads over files laid end to end (each worker keeps its own descriptors)."""

    def __init__(self, files: Sequence[SourceFile]) -> None:
        self.files = list(files)
        self.starts: list[int] = []
        pos = 0
        for f in self.files:
            self.starts.append(pos)
            pos += f.length

    def _fd(self, index: int, fds: dict[int, int]) -> int:
        fd = fds.get(index)
        if fd is None:
            f = self.files[index]
            try:
                fd = os.open(f.fs_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise CreateError(f"{f.fs_path}: {e.strerror or e}") from None
            fds[index] = fd
            try:  # a hint for a cold cache: read ahead more, drop behind sooner
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except (AttributeError, OSError):  # pragma: no cover - not Linux, or a pipe-like file
                pass
        return fd

    def read_into(self, offset: int, view: memoryview, fds: dict[int, int]) -> None:
        index = bisect.bisect_right(self.starts, offset) - 1
        pos = 0
        while pos < len(view):
            f = self.files[index]
            within = offset + pos - self.starts[index]
            want = min(len(view) - pos, f.length - within)
            fd = self._fd(index, fds)
            while want > 0:
                try:
                    got = os.preadv(fd, [view[pos : pos + want]], within)
                except OSError as e:
                    raise CreateError(f"{f.fs_path}: {e.strerror or e}") from None
                if got == 0:
                    raise CreateError(f"{f.fs_path}: file shrank while it was being hashed")
                pos += got
                within += got
                want -= got
            index += 1

    def check_unchanged(self) -> None:
        for f in self.files:
            try:
                size = os.stat(f.fs_path).st_size
            except OSError as e:
                raise CreateError(f"{f.fs_path}: {e.strerror or e}") from None
            if size != f.length:
                raise CreateError(f"{f.fs_path}: file changed size while it was being hashed")


def _check_url(url: str, what: str, schemes: frozenset[str]) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes or not parts.netloc or any(c.isspace() for c in url):
        allowed = ", ".join(sorted(schemes))
        raise CreateError(f"{what} {url!r} is not a URL ({allowed})")


_TRACKER_SCHEMES = frozenset({"http", "https", "udp", "ws", "wss"})
_WEB_SEED_SCHEMES = frozenset({"http", "https", "ftp"})


def torrent_dict(
    tree: SourceTree,
    piece_length: int,
    pieces: bytes,
    *,
    trackers: Sequence[str] = (),
    web_seeds: Sequence[str] = (),
    private: bool = False,
    comment: str | None = None,
    created_by: str | None = DEFAULT_CREATED_BY,
    creation_date: int | None = None,
) -> dict[bytes, object]:
    """The .torrent for `tree` with the given hashes, before bencoding (`encode` makes the file).

    Each tracker is its own tier (BEP 12) and the first is also ``announce`` (for BEP 3-only
    clients); ``announce-list`` is written only when there is more than one tracker, as
    mktorrent does. Web seeds go to ``url-list`` (BEP 19). ``private`` is BEP 27.
    """
    for url in trackers:
        _check_url(url, "tracker", _TRACKER_SCHEMES)
    for url in web_seeds:
        _check_url(url, "web seed", _WEB_SEED_SCHEMES)
    info: dict[bytes, object] = {
        b"name": tree.name.encode(),
        b"piece length": piece_length,
        b"pieces": pieces,
    }
    if tree.multi_file:
        info[b"files"] = [
            {b"length": f.length, b"path": [c.encode() for c in f.path]} for f in tree.files
        ]
    else:
        info[b"length"] = tree.files[0].length
    if private:
        info[b"private"] = 1
    torrent: dict[bytes, object] = {b"info": info}
    if trackers:
        torrent[b"announce"] = trackers[0].encode()
        if len(trackers) > 1:
            torrent[b"announce-list"] = [[url.encode()] for url in trackers]
    if web_seeds:
        torrent[b"url-list"] = [url.encode() for url in web_seeds]
    if comment:
        torrent[b"comment"] = comment.encode()
    if created_by:
        torrent[b"created by"] = created_by.encode()
    if creation_date is not None:
        torrent[b"creation date"] = creation_date
    return torrent


def create_torrent(
    tree: SourceTree,
    *,
    trackers: Sequence[str] = (),
    web_seeds: Sequence[str] = (),
    private: bool = False,
    piece_length: int | None = None,
    comment: str | None = None,
    created_by: str | None = DEFAULT_CREATED_BY,
    creation_date: int | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[bytes, bytes]:
    """Hash and encode a scanned tree: the .torrent bytes (see `make_torrent`) and the v1
    info-hash (BEP 3: the SHA-1 of the bencoded ``info``, canonical here as in the file)."""
    if piece_length is None:
        piece_length = choose_piece_length(tree.total_size)
    else:
        check_piece_length(piece_length)
    # URLs are checked before the (possibly long) hashing, not after.
    torrent_dict(tree, piece_length, b"", trackers=trackers, web_seeds=web_seeds)
    total = tree.total_size

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total)

    pieces = hash_pieces(
        tree.files, piece_length, threads=threads, progress=None if progress is None else report
    )
    torrent = torrent_dict(
        tree,
        piece_length,
        pieces,
        trackers=trackers,
        web_seeds=web_seeds,
        private=private,
        comment=comment,
        created_by=created_by,
        creation_date=creation_date,
    )
    return encode(torrent), sha1(encode(torrent[b"info"])).digest()


def make_torrent(
    path: str | os.PathLike[str],
    *,
    trackers: Sequence[str] = (),
    web_seeds: Sequence[str] = (),
    private: bool = False,
    piece_length: int | None = None,
    comment: str | None = None,
    name: str | None = None,
    created_by: str | None = DEFAULT_CREATED_BY,
    creation_date: int | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[bytes, SourceTree]:
    """Scan, hash and encode: the .torrent bytes of `path` and the tree they describe.

    `piece_length` None chooses one (`choose_piece_length`). `progress(done, total)` is called
    from the calling thread while hashing. `creation_date` is seconds since the epoch, or None
    to leave it out (reproducible torrents).
    """
    tree = scan_source(path, name=name)
    data, _ = create_torrent(
        tree,
        trackers=trackers,
        web_seeds=web_seeds,
        private=private,
        piece_length=piece_length,
        comment=comment,
        created_by=created_by,
        creation_date=creation_date,
        threads=threads,
        progress=progress,
    )
    return data, tree
