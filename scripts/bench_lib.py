"""Shared helpers for the benchmarks under ``scripts/bench_*.py`` (run through ``scripts/bench``).

What they guarantee, so that every benchmark measures the same way:

* Swarm pieces (opentracker, python3-libtorrent peers, payloads, torrents) are the test
  harness's own (``tests/swarm.py``), so a benchmark runs exactly the swarm the interop tests run,
  with the same isolation check (a network namespace with only ``lo``).
* ``run_measured`` runs one client as a subprocess and takes its wall time (spawn to exit) and
  CPU time (user + system, from ``os.wait4``'s rusage of that child), and its peak resident
  memory as the kernel's high-water mark ``VmHWM`` of the client's process, read every 20 ms
  (a high-water mark, so short peaks are not missed; only growth in the last 20 ms before exit
  could be).  Not ``ru_maxrss``: Linux carries the *parent's* peak RSS over fork and exec into
  the child's ``ru_maxrss``, so it would report this Python process's size for small clients.
  Its stdout JSON lines are collected.
* Payloads are deterministic and cached under ``/var/tmp/torrentfs-bench`` (or
  ``$TORRENTFS_BENCH_CACHE``) with their sha256, so re-runs do not regenerate a gigabyte.
* ``settle()`` runs before every timed client: the seeder's payload read into the page cache
  (this VM's DAMON pages out file pages unused for a minute: a seeder would otherwise serve
  random pieces from disk, and a client would be timed on the seeder's disk latency), dirty
  pages written back (``sync``) and the machine quiet (under 10% of its CPUs busy for 0.3 s,
  waiting at most 10 s), so no client pays for the writeback, file deletion or memory reclaim
  the client before it left behind.
* Sizes: ``MB`` = 10**6 bytes for rates (as the reference figures in LOOPBACK-SWARMS.md),
  ``MiB``/``GiB`` for sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from swarm import (  # noqa: E402  (the harness lives with the tests)
    HarnessError,
    LibtorrentPeer,
    Opentracker,
    Payload,
    TorrentFile,
    free_port,
    make_payload,
    make_torrent,
    next_loopback,
    read_torrent,
    require_isolated_network,
    sha256_file,
)

__all__ = [
    "MB",
    "ROOT",
    "GiB",
    "HarnessError",
    "LibtorrentPeer",
    "Measured",
    "MiB",
    "Opentracker",
    "Payload",
    "TorrentFile",
    "cache_dir",
    "cached_single_file",
    "format_table",
    "free_port",
    "median",
    "next_loopback",
    "parse_size",
    "require_isolated_network",
    "run_measured",
    "settle",
    "sha256_file",
]

MB = 1_000_000
MiB = 1 << 20
GiB = 1 << 30

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": MB, "mb": MB, "mib": MiB,
          "g": 10**9, "gb": 10**9, "gib": GiB}  # fmt: skip


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"256MiB"``, ``"300MB"``, ``"4096"`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 1GiB, 256MiB, 300MB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human_size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def cache_dir() -> Path:
    d = Path(os.environ.get("TORRENTFS_BENCH_CACHE", "/var/tmp/torrentfs-bench"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_single_file(
    size: int, piece_length: int, tracker_url: str, seed: int = 0
) -> tuple[Payload, TorrentFile, str]:
    """A deterministic single-file payload of ``size`` bytes, its torrent, and its sha256.

    The payload is written once per ``(size, seed)`` (a marker file records completion and the
    digest); the torrent once per piece length and tracker URL.
    """
    base = cache_dir() / f"payload-{human_size(size)}-seed{seed}"
    marker = base / "complete.json"
    path = base / "payload.bin"
    digest: str | None = None
    if marker.exists() and path.exists() and path.stat().st_size == size:
        digest = json.loads(marker.read_text()).get("sha256")
    if digest is None:
        print(f"bench: writing a {human_size(size)} payload to {base} (once)", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)
        payload = make_payload(base, size, seed=seed)
        digest = sha256_file(payload.root)
        marker.write_text(json.dumps({"size": size, "seed": seed, "sha256": digest}))
    payload = Payload(path, ((path.name, size),), multi_file=False)
    key = re.sub(r"[^A-Za-z0-9]+", "_", tracker_url)
    tpath = base / f"payload-{human_size(piece_length)}-{key}.torrent"
    if tpath.exists():
        torrent = read_torrent(tpath)
    else:
        print(f"bench: making {tpath.name} with mktorrent", file=sys.stderr)
        torrent = make_torrent(
            path, tpath.with_suffix(".tmp"), piece_length=piece_length, trackers=[tracker_url]
        )
        torrent.path.replace(tpath)
        torrent = read_torrent(tpath)
    return payload, torrent, digest


@dataclass
class Measured:
    """One client process: what the kernel accounted for it and what it printed."""

    returncode: int
    wall: float  # seconds, spawn to exit
    cpu: float  # seconds, user + system, the process and its waited-for children
    peak_rss: int  # bytes (ru_maxrss)
    started_at: float  # unix time of the spawn (to place clients' own timestamps)
    events: list[dict[str, Any]] = field(default_factory=list)  # stdout JSON lines
    stderr_tail: str = ""
    timed_out: bool = False

    def event(self, name: str) -> dict[str, Any] | None:
        for e in self.events:
            if e.get("event") == name:
                return e
        return None


def vm_hwm(pid: int) -> int:
    """The kernel's high-water mark of a process's resident memory (VmHWM), bytes; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_measured(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stderr_path: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Measured:
    """Run ``cmd`` to completion (killed after ``timeout`` s) and measure it (see module doc).

    Stdout lines that parse as JSON objects are collected (a JSON line without an ``event`` key
    is stored as ``{"event": "stats", ...}``); other stdout lines are ignored.
    """
    events: list[dict[str, Any]] = []
    with stderr_path.open("wb") as err:
        started_at = time.time()
        t0 = time.monotonic()
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd,
        )  # fmt: skip

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    obj.setdefault("event", "stats")
                    events.append(obj)
                    if on_event is not None:
                        on_event(obj)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        hwm = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                hwm[0] = max(hwm[0], vm_hwm(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
            sampler.join()
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(5)
    try:
        tail = stderr_path.read_text(errors="replace")[-3000:]
    except OSError:
        tail = ""
    return Measured(
        returncode=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=hwm[0] or usage.ru_maxrss * 1024,
        started_at=started_at,
        events=events,
        stderr_tail=tail,
        timed_out=timed_out.is_set(),
    )


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (``/proc/stat``); steal counts as idle."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4] + (fields[7] if len(fields) > 7 else 0)  # idle, iowait, steal
    total = sum(fields[:8])
    return total - idle, total


def warm_file(path: Path, chunk: int = 8 << 20) -> None:
    """Read ``path`` once so that its pages are in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        buf = bytearray(chunk)
        offset = 0
        while n := os.preadv(fd, [buf], offset):
            offset += n
    finally:
        os.close(fd)


def settle(
    *warm: Path, busy_below: float = 0.10, window: float = 0.3, limit: float = 10.0
) -> float:
    """Read the ``warm`` files into the page cache, write back dirty pages and wait until the
    machine is quiet; the seconds it took.

    Quiet: under ``busy_below`` of all CPUs busy over ``window`` seconds. Gives up (and says
    so on stderr) after ``limit`` seconds: a machine busy with other work is measured as is.
    """
    t0 = time.monotonic()
    for path in warm:
        warm_file(path)
    os.sync()
    while True:
        busy0, total0 = _cpu_times()
        time.sleep(window)
        busy1, total1 = _cpu_times()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) < busy_below:
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            print(f"bench: machine still busy after {limit:g} s; measuring anyway", file=sys.stderr)
            return time.monotonic() - t0


def median(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into reports)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def swarm_bench_parser(
    description: str, clients: Sequence[str], clients_help: str, timeout_help: str
) -> argparse.ArgumentParser:
    """The options every swarm benchmark shares (size, pieces, clients, runs, seed, output)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", type=parse_size, default=1 << 30, help="torrent size (default 1GiB)")
    p.add_argument("--piece-length", type=parse_size, default=1 << 20, help="default 1MiB")
    p.add_argument("--clients", default=",".join(clients), help=clients_help)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="payload seed")
    p.add_argument("--timeout", type=float, default=900.0, help=timeout_help)
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    return p


def parse_clients(parser: argparse.ArgumentParser, text: str, known: Sequence[str]) -> list[str]:
    """The comma list of clients; an unknown name is a usage error."""
    clients = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in clients if c not in known]
    if unknown:
        parser.error(f"unknown client(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return clients
