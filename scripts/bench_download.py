#!/usr/bin/env python3
"""Benchmark: ``torrentfs download`` against aria2c, webtorrent and libtorrent (``scripts/bench
download``).

One torrent (default 1 GiB, 1 MiB pieces; one deterministic file cached under /var/tmp), one
python3-libtorrent seeder per client run, each client on its own loopback address, in a network
namespace with only ``lo``.  For each client and run it reports:

* total MB/s — torrent size / wall time from spawning the client to its exit (start-up, tracker
  announce, download and the client's own shutdown: what a user waits for);
* MB/s after the first piece — (size − one piece) / (exit − first verified piece);
* time to the first verified piece, since the spawn;
* CPU seconds per GiB (user + system of the client process, from ``wait4``);
* peak RSS (``ru_maxrss`` from ``wait4``);
and it checks the downloaded file's sha256 against the source (a wrong file fails the run and
the exit status).  Then the ratios of each client's total MB/s to aria2c's and webtorrent's.

How each client is driven and where its first-piece time comes from:

* torrentfs: ``torrentfs download T -o DIR --listen H:0 --no-dht --json-stats --peer SEEDER``;
  first piece from its JSON (``first_piece_at``, a unix time, if present; else
  ``first_piece_seconds``, which counts from its own start and so excludes interpreter start-up —
  marked ``*``).  If the command is missing or fails, its row says n/a and why.
* aria2c: DHT, LPD and PEX off, ``--interface=H``, ``--seed-time=0``, ``--file-allocation=none``;
  first piece = the first "we got new piece" line of its info-level log (logged after the
  piece's SHA-1 matched), whose timestamp is local wall-clock time.
* webtorrent (npm library 1.x, ``scripts/webtorrent_leech.js``): ``{dht, lsd, utp: false}``;
  first piece = the first piece marked verified (wrapping its private ``_markVerified``).
  webtorrent cannot bind its outgoing connections to an address, so it connects from 127.0.0.1.
* libtorrent: ``tests/peers/lt_peer.py leech --no-recheck``; first ``piece_finished_alert``.

All clients learn the seeder from the tracker in the torrent (opentracker on 127.0.0.1:6969);
those that can also get it directly (``--peer``).  The seeder uses ``--trust`` (no hashing): the
client under test, not the seeder, should be the one using the two CPU cores.
``BENCH_SEEDER_ARGS`` adds lt_peer options to the seeders (e.g. ``--high-performance``).
Output: a Markdown table on stdout; ``--json FILE`` also writes every result; each client's
stderr (and aria2c's log, and any failed download) stays in ``<cache>/work-download``.
Speed is reported, never judged: the exit status is 1 only if a download was wrong or failed.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import (
    MB,
    ROOT,
    GiB,
    HarnessError,
    LibtorrentPeer,
    Measured,
    MiB,
    Opentracker,
    TorrentFile,
    format_table,
    free_port,
    median,
    next_loopback,
    require_isolated_network,
    run_measured,
    sha256_file,
)
from swarm import LT_PEER, SYSTEM_PYTHON

SEEDER_ARGS = os.environ.get("BENCH_SEEDER_ARGS", "").split()
CLIENTS = ("torrentfs", "aria2c", "webtorrent", "libtorrent")
TRACKER_PORT = 6969
NODE_MODULES = ROOT / ".bench-cache" / "node" / "node_modules"


@dataclass
class Result:
    client: str
    run: int
    ok: bool
    error: str | None = None
    wall: float | None = None
    cpu: float | None = None
    peak_rss: int | None = None
    first_piece: float | None = None
    first_piece_approx: bool = False
    bytes: int = 0
    piece_length: int = 0

    @property
    def total_rate(self) -> float | None:
        return self.bytes / self.wall / MB if self.ok and self.wall else None

    @property
    def after_first_rate(self) -> float | None:
        if not self.ok or self.wall is None or self.first_piece is None:
            return None
        span = self.wall - self.first_piece
        return (self.bytes - self.piece_length) / span / MB if span > 0 else None

    @property
    def cpu_per_gib(self) -> float | None:
        return self.cpu / (self.bytes / GiB) if self.ok and self.cpu is not None else None


# --------------------------------------------------------------------------- clients


@dataclass
class Job:
    """How to run one client: its command, environment, and how to read its first piece."""

    cmd: list[str]
    env: dict[str, str] | None
    first_piece: Callable[[Measured, Path], tuple[float | None, bool]]


def _from_json_at(m: Measured, key_event: str) -> tuple[float | None, bool]:
    for e in m.events:
        if e.get("event") == key_event and e.get("first_piece_at") is not None:
            return float(e["first_piece_at"]) - m.started_at, False
    return None, False


def job_libtorrent(torrent: TorrentFile, out: Path, host: str, seeder: str, t: float) -> Job:
    cmd = [SYSTEM_PYTHON, str(LT_PEER), "leech", str(torrent.path), "--out", str(out),
           "--listen", f"{host}:0", "--no-recheck", "--peer", seeder,
           "--timeout", str(t)]  # fmt: skip
    return Job(cmd, None, lambda m, _: _from_json_at(m, "done"))


def job_torrentfs(torrent: TorrentFile, out: Path, host: str, seeder: str, t: float) -> Job:
    state = out.parent / f"{out.name}-state"
    cmd = [str(ROOT / ".venv" / "bin" / "torrentfs"), "download", str(torrent.path), "-o",
           str(out), "--listen", f"{host}:0", "--no-dht", "--json-stats", "--peer", seeder,
           "--state-dir", str(state)]  # fmt: skip

    def first(m: Measured, _: Path) -> tuple[float | None, bool]:
        for e in m.events:
            if e.get("first_piece_at") is not None:
                return float(e["first_piece_at"]) - m.started_at, False
            if e.get("first_piece_seconds") is not None:
                return float(e["first_piece_seconds"]), True
        return None, False

    return Job(cmd, None, first)


def _aria2_first_piece(m: Measured, log: Path) -> tuple[float | None, bool]:
    try:
        with log.open(errors="replace") as f:
            for line in f:
                if "we got new piece" in line:
                    stamp = datetime.datetime.strptime(line[:26], "%Y-%m-%d %H:%M:%S.%f")
                    return stamp.timestamp() - m.started_at, False  # naive = local time
    except (OSError, ValueError):
        pass
    return None, False


def job_aria2c(torrent: TorrentFile, out: Path, host: str, seeder: str, t: float) -> Job:
    log = out.parent / f"{out.name}-aria2.log"
    cmd = ["aria2c", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
           "--enable-peer-exchange=false", "--seed-time=0", f"--interface={host}",
           f"--listen-port={free_port(host)}", f"--dir={out}", "--file-allocation=none",
           "--summary-interval=0", "--console-log-level=warn", "--disable-ipv6=true",
           "--bt-tracker-connect-timeout=5", f"--log={log}", "--log-level=info",
           str(torrent.path)]  # fmt: skip
    return Job(cmd, None, lambda m, _: _aria2_first_piece(m, log))


def job_webtorrent(torrent: TorrentFile, out: Path, host: str, seeder: str, t: float) -> Job:
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    cmd = ["node", str(ROOT / "scripts" / "webtorrent_leech.js"), str(torrent.path), str(out),
           "--peer", seeder]  # fmt: skip
    return Job(cmd, env, lambda m, _: _from_json_at(m, "done"))


JOBS: dict[str, Callable[[TorrentFile, Path, str, str, float], Job]] = {
    "torrentfs": job_torrentfs,
    "aria2c": job_aria2c,
    "webtorrent": job_webtorrent,
    "libtorrent": job_libtorrent,
}


def missing_tool(client: str) -> str | None:
    if client == "torrentfs" and not (ROOT / ".venv" / "bin" / "torrentfs").exists():
        return ".venv/bin/torrentfs missing (run scripts/bootstrap)"
    if client == "aria2c" and not shutil.which("aria2c"):
        return "aria2c not installed"
    if client == "webtorrent":
        if not shutil.which("node"):
            return "node not installed"
        if not (NODE_MODULES / "webtorrent").is_dir():
            return f"webtorrent library missing under {NODE_MODULES} (scripts/bench installs it)"
    return None


# --------------------------------------------------------------------------- one measurement


def last_error_line(stderr: str) -> str:
    """The most telling stderr line: the last ``SomeError: ...`` line, else the last line."""
    lines = [ln.strip(" |+") for ln in stderr.splitlines() if ln.strip(" |+-")]
    for ln in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln):
            return ln
    return lines[-1] if lines else "(no stderr)"


def measure(
    client: str,
    run: int,
    torrent: TorrentFile,
    source: Path,
    digest: str,
    tracker: Opentracker,
    work: Path,
    timeout: float,
) -> Result:
    res = Result(client, run, ok=False, bytes=torrent.total_size, piece_length=torrent.piece_length)
    why = missing_tool(client)
    if why:
        res.error = why
        return res
    out = work / f"{client}-{run}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # A fresh seeder on a fresh address per client: seeders remember peers by IP.
    seeder = LibtorrentPeer(
        "seed", torrent.path, source.parent, host=next_loopback(),
        extra_args=["--trust", *SEEDER_ARGS], log_dir=work,
    )  # fmt: skip
    try:
        seeder.start()
        tracker.wait_seeders(torrent.info_hash)
        job = JOBS[client](torrent, out, next_loopback(), seeder.address_text, timeout)
        m = run_measured(
            job.cmd, timeout=timeout, env=job.env, stderr_path=work / f"{client}-{run}.stderr"
        )
    except HarnessError as exc:
        res.error = f"harness: {exc}"
        return res
    except FileNotFoundError as exc:
        res.error = f"cannot run: {exc}"
        return res
    finally:
        seeder.stop()
    res.wall, res.cpu, res.peak_rss = m.wall, m.cpu, m.peak_rss
    res.first_piece, res.first_piece_approx = job.first_piece(m, out)
    got = out / source.name
    if m.timed_out:
        res.error = f"timed out after {timeout:.0f} s"
    elif m.returncode != 0:
        res.error = f"exit {m.returncode}: {last_error_line(m.stderr_tail)[:160]}"
    elif not got.is_file():
        res.error = f"no output file {got}"
    elif sha256_file(got) != digest:
        res.error = "WRONG DATA: sha256 differs from the source"
    else:
        res.ok = True
    if res.ok:
        shutil.rmtree(out, ignore_errors=True)  # keep a failed download for inspection
    return res


# --------------------------------------------------------------------------- report


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def report(results: list[Result], clients: list[str]) -> str:
    rows = []
    for r in results:
        fp = fmt(r.first_piece, ".2f") + ("*" if r.first_piece_approx else "")
        rows.append([
            r.client, str(r.run), fmt(r.total_rate), fmt(r.after_first_rate),
            fp if r.ok else "n/a", fmt(r.cpu_per_gib, ".2f"),
            fmt(r.peak_rss / MB if r.peak_rss and r.ok else None, ".0f"),
            "ok" if r.ok else (r.error or "failed"),
        ])  # fmt: skip
    table = format_table(
        ["client", "run", "MB/s", "MB/s after 1st piece", "1st piece s", "CPU s/GiB",
         "peak RSS MB", "result"],
        rows,
    )  # fmt: skip
    med = {c: median([r.total_rate for r in results if r.client == c]) for c in clients}
    ratio_rows = []
    for c in clients:
        cells = [c, fmt(med[c])]
        for ref in ("aria2c", "webtorrent"):
            a, b = med[c], med.get(ref)
            cells.append(fmt(a / b, ".2f") if a and b else "n/a")
        ratio_rows.append(cells)
    ratios = format_table(["client", "median MB/s", "× aria2c", "× webtorrent"], ratio_rows)
    note = (
        "\n* = counted from the client's own start (excludes interpreter start-up)"
        if any(r.ok and r.first_piece_approx for r in results)
        else ""
    )
    return f"{table}{note}\n\n{ratios}"


def main(argv: list[str] | None = None) -> int:
    from bench_lib import parse_clients, swarm_bench_parser

    p = swarm_bench_parser(
        __doc__.split("\n\n")[0],
        CLIENTS,
        "comma list: " + ",".join(CLIENTS),
        "per client run, seconds",
    )
    args = p.parse_args(argv)
    clients = parse_clients(p, args.clients, [c for c in CLIENTS if c in JOBS])
    try:
        require_isolated_network()
    except HarnessError as exc:
        print(f"bench download: {exc}", file=sys.stderr)
        return 2

    from bench_lib import cached_single_file

    tracker_url = f"http://127.0.0.1:{TRACKER_PORT}/announce"
    payload, torrent, digest = cached_single_file(
        args.size, args.piece_length, tracker_url, seed=args.seed
    )
    print(
        f"bench download: {torrent.total_size / MiB:.0f} MiB, {torrent.num_pieces} pieces of "
        f"{torrent.piece_length // 1024} KiB; clients {', '.join(clients)}; {args.runs} run(s)",
        file=sys.stderr,
    )
    results: list[Result] = []
    # Kept after the run (failed downloads and every client's stderr are left there).
    work = payload.root.parent / "work-download"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    with Opentracker(work / "tracker", port=TRACKER_PORT) as tracker:
        tracker.allow(torrent.info_hash)
        for run in range(1, args.runs + 1):
            for client in clients:
                t0 = time.monotonic()
                r = measure(client, run, torrent, payload.root, digest, tracker, work, args.timeout)
                results.append(r)
                print(
                    f"bench download: {client} run {run}: "
                    f"{'ok' if r.ok else r.error} ({time.monotonic() - t0:.1f} s)",
                    file=sys.stderr,
                )
    print(report(results, clients))
    print(f"\n(logs: {work})")
    if args.json is not None:
        rows: list[dict[str, Any]] = [
            {
                **asdict(r),
                "total_mb_s": r.total_rate,
                "after_first_mb_s": r.after_first_rate,
                "cpu_s_per_gib": r.cpu_per_gib,
            }
            for r in results
        ]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "results": rows}, indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
