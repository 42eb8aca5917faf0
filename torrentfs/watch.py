"""The live metainfo directory (L6): ``.torrent`` and ``.magnet`` files -> torrents in the mount.

What `MetainfoWatcher` guarantees, and why:

* **The folder is the truth.** Every pass lists the directory and reconciles the torrents it
  describes with what is shown: files added, removed, replaced or renamed into place are
  reflected within about a second. watchdog (inotify) only wakes the pass early; a periodic pass
  catches anything an event queue overflow lost.
* **Half-written files are not read.** A file is parsed once its size and mtime stayed the same
  for ``settle`` seconds (a file whose mtime is already that old, e.g. one renamed into place,
  counts as settled at once), so slow copies are picked up once complete.
* **A bad file is logged once** (until it changes) and affects nothing else; untrusted input goes
  through the bounded parsers (`parse_metainfo`, `parse_magnet`) with file-size and line limits.
  A file that turns bad stops describing its torrent, which is then dropped.
* **Deterministic order:** additions happen in sorted file-name order, so the mount's clash
  suffixes are the same at every start (see `torrentfs.fs.tree`).
* Parsing runs in a worker thread: a 60,000-file torrent must not stall the FUSE handlers.
* **A folder that cannot be listed changes nothing.** If the folder is deleted, renamed away or
  unreadable, what is shown stays (one log line) until it can be listed again; then it is
  reconciled with whatever the folder (perhaps a new one at the same path) holds, and the
  inotify watch follows the new directory.
* **Wall-clock jumps do not stall it:** settling is timed on the monotonic clock; the wall clock
  is only compared with file mtimes (which are wall-clock times) to spot already-old files.
* ``.magnet`` files hold one or more magnet URIs, one per line, ``#`` starting a comment
  (BEP 9 magnet links). The same torrent described by two files is shown once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from torrentfs.errors import MagnetError, TorrentfsError
from torrentfs.magnet import Magnet, parse_magnet
from torrentfs.metainfo import Metainfo, parse_metainfo

log = logging.getLogger(__name__)

TORRENT_SUFFIX = ".torrent"
MAGNET_SUFFIX = ".magnet"
MAX_TORRENT_FILE = 64 << 20
MAX_MAGNET_FILE = 1 << 20
MAX_MAGNETS_PER_FILE = 10_000
DEFAULT_SETTLE = 0.3
DEFAULT_RESCAN = 2.0


@dataclass(frozen=True)
class MetainfoItem:
    """One torrent described by a file of the folder (a .torrent, or one line of a .magnet)."""

    key: bytes
    """The v1 info-hash (the v2 one for a v2-only magnet): a torrent's identity."""
    name: str
    source: Path
    metainfo: Metainfo | None = None
    magnet: Magnet | None = None
    uri: str | None = None


class WatchTarget(Protocol):
    """Who is told about torrents appearing and disappearing (the app's controller)."""

    async def add(self, item: MetainfoItem) -> None: ...

    async def remove(self, item: MetainfoItem) -> None: ...


class BadMetainfoFile(TorrentfsError):
    """A file of the metainfo folder that cannot be used (too big, unreadable, no magnets)."""


def is_metainfo_name(name: str) -> bool:
    lower = name.lower()
    return not name.startswith(".") and (
        lower.endswith(TORRENT_SUFFIX) or lower.endswith(MAGNET_SUFFIX)
    )


def load_file(path: Path) -> tuple[MetainfoItem, ...]:
    """Parse one file of the folder. Raises `TorrentfsError` only (blocking: run in a thread)."""
    is_magnet = path.name.lower().endswith(MAGNET_SUFFIX)
    limit = MAX_MAGNET_FILE if is_magnet else MAX_TORRENT_FILE
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BadMetainfoFile(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BadMetainfoFile(f"larger than {limit} bytes")
    if not is_magnet:
        mi = parse_metainfo(data)
        return (MetainfoItem(mi.info_hash, mi.name, path, metainfo=mi),)
    return parse_magnet_file(data, path)


def parse_magnet_file(data: bytes, path: Path) -> tuple[MetainfoItem, ...]:
    """One magnet URI per line, ``#`` comments, blank lines ignored; at least one magnet."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMetainfoFile("not UTF-8 text") from None
    items: dict[bytes, MetainfoItem] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(items) >= MAX_MAGNETS_PER_FILE:
            raise BadMetainfoFile(f"more than {MAX_MAGNETS_PER_FILE} magnets")
        try:
            magnet = parse_magnet(line)
        except MagnetError as exc:
            raise MagnetError(f"line {number}: {exc}") from None
        key = magnet.info_hash if magnet.info_hash is not None else magnet.info_hash_v2
        assert key is not None  # a Magnet always has one of them
        name = magnet.display_name or key.hex()
        items.setdefault(key, MetainfoItem(key, name, path, magnet=magnet, uri=line))
    if not items:
        raise BadMetainfoFile("no magnet URI in the file")
    return tuple(items.values())


@dataclass
class _FileState:
    signature: tuple[int, int, int]
    changed_at: float
    parsed: tuple[int, int, int] | None = None
    items: tuple[MetainfoItem, ...] = ()
    complained: bool = False


class MetainfoWatcher:
    """Keeps `target` in step with the ``.torrent``/``.magnet`` files of ``directory``."""

    def __init__(
        self,
        directory: Path,
        target: WatchTarget,
        *,
        settle: float = DEFAULT_SETTLE,
        rescan: float = DEFAULT_RESCAN,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._wall_clock = wall_clock
        self._unlistable: str | None = None
        """Why the folder could not be listed at the last pass (None: it could)."""
        self._watched: tuple[int, int] | None = None
        """(st_dev, st_ino) of the directory the inotify observer watches."""
        self.target = target
        self.settle = settle
        self.rescan = rescan
        self.files: dict[Path, _FileState] = {}
        self.current: dict[bytes, MetainfoItem] = {}
        """What the target was told about, by key."""
        self._wake = trio.Event()
        self.passes = 0

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; ``started`` after the first pass (initial torrents added)."""
        observer = self._start_observer()
        try:
            pending = await self.scan()
            task_status.started()
            while True:
                timeout = self.settle / 2 if pending else self.rescan
                with trio.move_on_after(timeout):
                    await self._wake.wait()
                self._wake = trio.Event()
                pending = await self.scan()
                if self._unlistable is None and (
                    self._directory_id() != self._watched or not _observer_alive(observer)
                ):
                    # The folder was replaced (or came back): watch the new one. (watchdog's
                    # emitter ends when its directory is deleted; a new one may reuse the inode.)
                    _stop_observer(observer)
                    observer = self._start_observer()
        finally:
            _stop_observer(observer)

    def _directory_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def wake(self) -> None:
        """Ask for a pass now (from the trio thread)."""
        self._wake.set()

    def _start_observer(self) -> Any:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            log.warning("watchdog missing: watching %s by polling", self.directory)
            return None
        token = trio.lowlevel.current_trio_token()
        watcher = self

        class _Wake(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                try:
                    token.run_sync_soon(watcher.wake)
                except trio.RunFinishedError:
                    pass

        self._watched = self._directory_id()
        observer = Observer()
        try:
            observer.schedule(_Wake(), str(self.directory), recursive=False)
            observer.start()
        except OSError as exc:
            log.warning(
                "cannot watch %s (%s); polling every %g s", self.directory, exc, self.rescan
            )
            return None
        return observer

    # ------------------------------------------------------------------ one pass

    async def scan(self) -> bool:
        """One reconciliation pass; returns True while some file is still settling."""
        self.passes += 1
        now = trio.current_time()
        wall = self._wall_clock()
        seen: set[Path] = set()
        pending = False
        listing = self._list()
        if listing is None:
            return False  # unlistable: keep showing what we have (see the module docstring)
        for path, sig in listing:
            seen.add(path)
            state = self.files.get(path)
            if state is None or state.signature != sig:
                age = wall - sig[1] / 1e9
                # Already old (copied earlier, renamed into place): settled at once.
                changed_at = now - 2 * self.settle if age >= self.settle else now
                if state is None:
                    state = self.files[path] = _FileState(sig, changed_at)
                else:
                    state.signature, state.changed_at = sig, changed_at
            if state.parsed == state.signature:
                continue
            if now - state.changed_at < self.settle:
                pending = True
                continue
            await self._parse(path, state)
        for path in [p for p in self.files if p not in seen]:
            del self.files[path]
        await self._reconcile()
        return pending

    def _list(self) -> list[tuple[Path, tuple[int, int, int]]] | None:
        """The metainfo files of the folder, sorted; None if it cannot be listed."""
        found: list[tuple[Path, tuple[int, int, int]]] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            why = exc.strerror or str(exc)
            if self._unlistable != why:
                log.error(
                    "cannot list %s: %s; keeping its %d torrents until it can be listed",
                    self.directory,
                    why,
                    len(self.current),
                )
            self._unlistable = why
            return None
        if self._unlistable is not None:
            log.info("%s can be listed again", self.directory)
            self._unlistable = None
        for entry in entries:
            if not is_metainfo_name(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if not _is_regular(st.st_mode):
                continue
            found.append((Path(entry.path), (st.st_size, st.st_mtime_ns, st.st_ino)))
        found.sort()
        return found

    async def _parse(self, path: Path, state: _FileState) -> None:
        state.parsed = state.signature
        try:
            items = await trio.to_thread.run_sync(load_file, path)
        except TorrentfsError as exc:
            if not state.complained:
                log.warning("%s: ignored: %s", path.name, exc)
                state.complained = True
            state.items = ()
            return
        state.complained = False
        state.items = items

    async def _reconcile(self) -> None:
        desired: dict[bytes, MetainfoItem] = {}
        for path in sorted(self.files):
            for item in self.files[path].items:
                have = desired.get(item.key)
                if have is None or (have.metainfo is None and item.metainfo is not None):
                    desired[item.key] = item  # a .torrent wins over a magnet of the same hash
        for key in [k for k in self.current if k not in desired]:
            item = self.current.pop(key)
            log.info("removed: %s (%s)", item.name, item.source.name)
            await self._tell("remove", item)
        for key, item in desired.items():
            current = self.current.get(key)
            if current is not None:
                if (current.metainfo is None) == (item.metainfo is None):
                    continue
                if current.metainfo is not None:  # back from a .torrent to a magnet
                    self.current.pop(key)
                    await self._tell("remove", current)
            self.current[key] = item
            log.info("added: %s (%s)", item.name, item.source.name)
            await self._tell("add", item)

    async def _tell(self, what: str, item: MetainfoItem) -> None:
        try:
            if what == "add":
                await self.target.add(item)
            else:
                await self.target.remove(item)
        except TorrentfsError as exc:
            log.error("%s: cannot %s %s: %s", item.source.name, what, item.name, exc)


def _observer_alive(observer: Any) -> bool:
    if observer is None:
        return True  # polling only: nothing to re-arm
    return bool(observer.emitters) and all(e.is_alive() for e in observer.emitters)


def _stop_observer(observer: Any) -> None:
    if observer is not None:
        observer.stop()
        observer.join(timeout=1.0)


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


__all__ = [
    "BadMetainfoFile",
    "MetainfoItem",
    "MetainfoWatcher",
    "WatchTarget",
    "load_file",
    "parse_magnet_file",
]
