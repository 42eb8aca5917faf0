"""Status at a glance (L6): what a running mount reports, and ``torrentfs status``.

The mount publishes its state through itself, so no port or socket is needed: the extended
attribute ``user.torrentfs.status`` of the mount's root holds one JSON document (`collect`).
Linux caps an attribute value at 64 KiB, so a long torrent list is split into pages
(`paginate`): page 0 is ``user.torrentfs.status`` and names the page count, page ``k`` is
``user.torrentfs.status.k``. A snapshot is kept for `SNAPSHOT_SECONDS`, so the size query and
the read of one ``getxattr`` -- and the pages of one ``torrentfs status`` -- agree.

The document (``"version": 1``)::

    {"version": 1, "page": 0, "pages": 1, "pid": 1234,
     "budget": {"limit": 134217728 or null, "used": 96468992, "evicted_pieces": 12,
                "evicted_bytes": 12582912},
     "totals": {"torrents": 3, "peers": 2, "download_rate": 1.5e6, "upload_rate": 0.0},
     "torrents": [{"name": ..., "info_hash": ..., "state": "streaming", "progress": 0.25,
                   "verified_bytes": ..., "total_size": ..., "pieces_verified": ...,
                   "num_pieces": ..., "download_rate": ..., "upload_rate": ..., "downloaded":
                   ..., "uploaded": ..., "peers": ..., "seeds": ..., "disk_used": ...,
                   "open_files": ..., "pinned": false, "error": null}, ...]}

States (`state_of`): ``fetching metadata`` (a magnet whose info dict is not known yet),
``error``, ``seeding`` (complete and uploading; ``complete`` with uploads off), ``streaming``
(files open, data missing), ``downloading`` (pinned, data missing, nobody reading), ``idle``.

`cmd_status` reads it back: every torrent with a progress bar, rates, peers, state and disk
use against the budget; ``--json`` prints the merged document(s); ``--watch`` refreshes.
Without a mount point it asks every torrentfs mount in ``/proc/self/mounts``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torrentfs.errors import TorrentfsError

if TYPE_CHECKING:
    from torrentfs.fs.operations import FsOperations
    from torrentfs.session import Session

__all__ = [
    "MAX_PAGE",
    "STATUS_XATTR",
    "MountStatus",
    "build_status_parser",
    "cmd_status",
    "collect",
    "paginate",
    "read_status",
    "render",
    "state_of",
    "torrentfs_mounts",
]

STATUS_XATTR = "user.torrentfs.status"
MAX_PAGE = 60_000
"""Bytes of JSON per page: below Linux's 64 KiB ``XATTR_SIZE_MAX``, with room to spare."""
SNAPSHOT_SECONDS = 1.0
VERSION = 1
MAX_PAGES = 1000


class StatusError(TorrentfsError):
    """A mount point that is not a live torrentfs mount, or an unreadable status."""


# ------------------------------------------------------------------------------ the mount side


def state_of(
    *, placeholder: bool, error: str | None, complete: bool, upload: bool, open_files: int,
    missing_wanted: int,
) -> str:  # fmt: skip
    """One word (or two) for a torrent's state; see the module docstring."""
    if placeholder:
        return "fetching metadata"
    if error:
        return "error"
    if complete:
        return "seeding" if upload else "complete"
    if open_files:
        return "streaming"
    if missing_wanted:
        return "downloading"
    return "idle"


def collect(session: Session, ops: FsOperations) -> dict[str, Any]:
    """The status document of a mount (every torrent; not yet paginated)."""
    open_files: dict[bytes, int] = {}
    for handle in ops.handles.values():
        key = handle.node.info_hash
        if key is not None:
            open_files[key] = open_files.get(key, 0) + 1
    cache = session.cache
    torrents: list[dict[str, Any]] = []
    for key, torrent in list(session.torrents.items()):
        st = torrent.statistics()
        torrents.append(
            {
                "name": st.name,
                "info_hash": st.info_hash,
                "state": state_of(
                    placeholder=False,
                    error=torrent.error,
                    complete=torrent.complete,
                    upload=torrent.config.upload,
                    open_files=open_files.get(key, 0),
                    missing_wanted=torrent.picker.missing_wanted_count(),
                ),
                "progress": round(st.progress, 6),
                "verified_bytes": st.verified_bytes,
                "total_size": st.total_size,
                "pieces_verified": st.pieces_verified,
                "num_pieces": st.num_pieces,
                "download_rate": round(st.download_rate),
                "upload_rate": round(st.upload_rate),
                "downloaded": st.downloaded,
                "uploaded": st.uploaded,
                "peers": st.peers,
                "seeds": st.seeds,
                "disk_used": cache.torrent_disk_usage(key) if cache is not None else 0,
                "open_files": open_files.get(key, 0),
                "pinned": cache.is_pinned(key) if cache is not None else False,
                "error": torrent.error,
            }
        )
    magnets = session.magnets
    for key in [*magnets, *(k for k in ops.magnets if k not in magnets)]:
        if key in session.torrents:
            continue
        top = ops.tree.top(key)
        fetch = magnets.get(key)
        error = fetch.error if fetch is not None else None
        torrents.append(
            {
                "name": os.fsdecode(top.name) if top is not None else key.hex(),
                "info_hash": key.hex(),
                "state": "error" if error else "fetching metadata",
                "progress": 0.0,
                "verified_bytes": 0,
                "total_size": None,
                "pieces_verified": 0,
                "num_pieces": None,
                "download_rate": 0,
                "upload_rate": 0,
                "downloaded": 0,
                "uploaded": 0,
                "peers": 0,
                "seeds": 0,
                "disk_used": 0,
                "open_files": 0,
                "pinned": False,
                "error": error,
                "magnet": ops.magnets.get(key),
            }
        )
    torrents.sort(key=lambda t: (t["name"], t["info_hash"]))
    stats = cache.statistics() if cache is not None else None
    return {
        "version": VERSION,
        "pid": os.getpid(),
        "budget": {
            "limit": stats.limit if stats is not None else None,
            "used": stats.used if stats is not None else None,
            "evicted_pieces": stats.evicted_pieces if stats is not None else 0,
            "evicted_bytes": stats.evicted_bytes if stats is not None else 0,
        },
        "totals": {
            "torrents": len(torrents),
            "peers": sum(t["peers"] for t in torrents),
            "download_rate": sum(t["download_rate"] for t in torrents),
            "upload_rate": sum(t["upload_rate"] for t in torrents),
        },
        "torrents": torrents,
    }


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def paginate(doc: dict[str, Any], limit: int = MAX_PAGE) -> list[bytes]:
    """``doc`` as JSON pages of at most ``limit`` bytes each (one torrent never split)."""
    head = {k: v for k, v in doc.items() if k != "torrents"}
    chunks: list[list[bytes]] = [[]]
    room = limit - len(_dump({**head, "page": 0, "pages": MAX_PAGES, "torrents": []}))
    used = 0
    for torrent in doc["torrents"]:
        item = _dump(torrent)
        if chunks[-1] and used + len(item) + 1 > room:
            chunks.append([])
            used = 0
        chunks[-1].append(item)
        used += len(item) + 1
    pages = []
    for number, items in enumerate(chunks):
        meta = head if number == 0 else {"version": doc.get("version", VERSION)}
        shell = _dump({**meta, "page": number, "pages": len(chunks), "torrents": []})
        pages.append(shell[:-2] + b",".join(items) + b"]}")  # shell ends with []}
    return pages


class MountStatus:
    """What the mount's root answers for ``user.torrentfs.status[.k]`` and ``statfs``."""

    def __init__(self, session: Session, ops: FsOperations) -> None:
        self.session = session
        self.ops = ops
        self._pages: list[bytes] = []
        self._taken = -SNAPSHOT_SECONDS

    def page(self, number: int) -> bytes | None:
        """Page ``number`` of a snapshot at most `SNAPSHOT_SECONDS` old (None: no such page)."""
        now = time.monotonic()
        if now - self._taken >= SNAPSHOT_SECONDS or not self._pages:
            self._pages = paginate(collect(self.session, self.ops))
            self._taken = now
        return self._pages[number] if 0 <= number < len(self._pages) else None

    def usage(self) -> tuple[int, int] | None:
        """``(budget, used)`` bytes when the mount has a budget."""
        cache = self.session.cache
        if cache is None or cache.limit is None:
            return None
        return cache.limit, cache.used

    def is_pinned(self, info_hash: bytes, file_index: int | None) -> bool:
        cache = self.session.cache
        return cache is not None and cache.is_pinned(info_hash, file_index)


# ------------------------------------------------------------------------------ the command


_ESCAPE = re.compile(r"\\([0-7]{3})")


def torrentfs_mounts(mounts_file: str = "/proc/self/mounts") -> list[Path]:
    """Mount points of every torrentfs mount (type ``fuse.torrentfs``) in this namespace."""
    found = []
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "fuse.torrentfs":
                    found.append(Path(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1])))
    except OSError as exc:
        raise StatusError(f"{mounts_file}: {exc.strerror or exc}") from None
    return found


def read_status(
    mountpoint: Path, getxattr: Callable[[str, str], bytes] = os.getxattr
) -> dict[str, Any]:
    """The status document of the mount at ``mountpoint``, every page merged."""

    def page(name: str) -> dict[str, Any]:
        try:
            raw = getxattr(str(mountpoint), name)
        except OSError as exc:
            why = "not a torrentfs mount" if exc.errno in (61, 95) else exc.strerror or str(exc)
            raise StatusError(f"{mountpoint}: {why}") from None
        try:
            obj = json.loads(raw)
        except ValueError:
            raise StatusError(f"{mountpoint}: status is not JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("torrents"), list):
            raise StatusError(f"{mountpoint}: unexpected status document")
        return obj

    doc = page(STATUS_XATTR)
    pages = doc.get("pages", 1)
    if not isinstance(pages, int) or not 1 <= pages <= MAX_PAGES:
        raise StatusError(f"{mountpoint}: bad page count {pages!r}")
    seen = {t.get("info_hash") for t in doc["torrents"]}
    for number in range(1, pages):
        for torrent in page(f"{STATUS_XATTR}.{number}")["torrents"]:
            if torrent.get("info_hash") not in seen:  # pages of a newer snapshot may repeat
                seen.add(torrent.get("info_hash"))
                doc["torrents"].append(torrent)
    doc.pop("page", None)
    doc.pop("pages", None)
    doc["mountpoint"] = str(mountpoint)
    return doc


def _size(n: float | None) -> str:
    from torrentfs.progress import format_size

    return "?" if n is None else format_size(max(0.0, float(n)))


def _bar(fraction: float, width: int = 20) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * width + 1e-9)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass
class _Row:
    cells: list[str]
    name: str
    error: str | None


def render(doc: dict[str, Any]) -> list[str]:
    """Human-readable lines for one mount's document."""
    budget = doc.get("budget") or {}
    totals = doc.get("totals") or {}
    used, limit = budget.get("used"), budget.get("limit")
    if limit:
        disk = f"disk {_size(used)} of {_size(limit)} {_bar((used or 0) / limit, 10)}"
    else:
        disk = f"disk {_size(used)} (no budget)"
    torrents = doc.get("torrents", [])
    lines = [
        f"{doc.get('mountpoint', '?')}: {len(torrents)} torrent{'s' * (len(torrents) != 1)}, "
        f"{disk}, down {_size(totals.get('download_rate', 0))}/s, "
        f"up {_size(totals.get('upload_rate', 0))}/s, {totals.get('peers', 0)} peers"
    ]
    rows = []
    for t in torrents:
        progress = float(t.get("progress") or 0.0)
        state = str(t.get("state", "?")) + (" (pinned)" if t.get("pinned") else "")
        rows.append(
            _Row(
                [
                    _bar(progress),
                    f"{progress * 100:5.1f}%",
                    state,
                    f"down {_size(t.get('download_rate'))}/s",
                    f"up {_size(t.get('upload_rate'))}/s",
                    f"{t.get('peers', 0)} peers",
                    f"disk {_size(t.get('disk_used'))}",
                ],
                _CONTROLS.sub("?", str(t.get("name", "?"))),
                _CONTROLS.sub("?", str(t["error"])) if t.get("error") else None,
            )
        )
    widths = [max((len(r.cells[i]) for r in rows), default=0) for i in range(7)]
    for r in rows:
        cells = [
            cell.ljust(width) if i == 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(r.cells, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells) + "  " + r.name)
        if r.error:
            lines.append("      error: " + r.error)
    return lines


def build_status_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="show what running mounts are doing",
        description="Every torrent of a running torrentfs mount (all mounts when MOUNTPOINT is "
        "left out): progress, rates, peers, state and disk use against the budget.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path, nargs="?")
    p.add_argument("--json", action="store_true", help="print JSON (one object per mount "
                   "point given; {\"mounts\": [...]} for all mounts)")  # fmt: skip
    p.add_argument("--watch", type=float, nargs="?", const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until interrupted")  # fmt: skip
    p.set_defaults(func=cmd_status)


def _snapshot(args: argparse.Namespace) -> tuple[object, list[str]]:
    mounts = [args.mountpoint] if args.mountpoint is not None else torrentfs_mounts()
    if args.mountpoint is None and not mounts:
        raise StatusError("no torrentfs mount found in /proc/self/mounts")
    docs = []
    for mount in mounts:
        try:
            docs.append(read_status(mount))
        except StatusError as exc:
            if args.mountpoint is not None:
                raise
            print(f"torrentfs: {exc}", file=sys.stderr)  # a stale mount must not hide the rest
    lines: list[str] = []
    for doc in docs:
        lines += render(doc)
    obj: object = docs[0] if args.mountpoint is not None else {"mounts": docs}
    return obj, lines


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch is not None and args.watch <= 0:
        raise StatusError(f"--watch: must be positive, not {args.watch:g}")
    try:
        while True:
            obj, lines = _snapshot(args)
            if args.watch is not None and not args.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            if args.json:
                sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
            else:
                sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
