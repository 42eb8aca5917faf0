#!/usr/bin/env python3
"""Benchmark: magnet -> metadata -> first byte (``scripts/bench magnet``).

One torrent (default 512 MiB, 1 MiB pieces; a deterministic file cached under /var/tmp), and for
every client run a fresh python3-libtorrent seeder (``--trust --tracker-less``) on its own
loopback address, in a network namespace with only ``lo``. The magnet carries nothing but the
info-hash, a ``dn`` and the seeder as ``x.pe`` (BEP 9), so the client must fetch the info dict
over ``ut_metadata`` before it can ask for a single piece. Measured, from spawning the client
(the mount: from dropping the ``.magnet`` file into the watched folder of a mount already up):

* **metadata** -- until the info dict was verified. torrentfs download: ``metadata_at`` of its
  ``--json-stats`` line; libtorrent (``tests/peers/lt_peer.py leech MAGNET``): its
  ``metadata_received_alert``; the mount: until the magnet's directory lists its files.
* **first piece/byte** -- torrentfs download and libtorrent: the first verified piece; the
  mount: until ``read(1)`` of the torrent's file returned (a real reader's first byte).
* **total MB/s** (download clients: size / wall time, spawn to exit) and CPU seconds.

The downloaded file's sha256 is checked against the source (a wrong file fails the run).
Figures are reported, never judged; ratios are against libtorrent resolving the same magnet in
the same run. Output: a Markdown table; ``--json FILE`` also writes every result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import (
    MB,
    ROOT,
    LibtorrentPeer,
    cache_dir,
    cached_single_file,
    format_table,
    median,
    next_loopback,
    parse_clients,
    require_isolated_network,
    run_measured,
    sha256_file,
    swarm_bench_parser,
)

CLIENTS = ("torrentfs", "torrentfs-mount", "libtorrent")
TORRENTFS = ROOT / ".venv" / "bin" / "torrentfs"
LT_PEER = ROOT / "tests" / "peers" / "lt_peer.py"
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class Result:
    client: str
    run: int
    ok: bool
    metadata: float | None = None
    first: float | None = None
    total: float | None = None
    cpu: float | None = None
    error: str = ""


def _since(at: Any, started_at: float) -> float | None:
    return None if not isinstance(at, int | float) else float(at) - started_at


def run_download(client: str, magnet: str, d: Path, host: str, size: int, t: float) -> Result:
    out = d / "out"
    if client == "torrentfs":
        cmd = [str(TORRENTFS), "download", magnet, "-o", str(out), "--listen", f"{host}:0",
               "--no-dht", "--state-dir", str(d / "state"), "--json-stats"]  # fmt: skip
    else:
        cmd = [SYSTEM_PYTHON, str(LT_PEER), "leech", magnet, "--out", str(out), "--listen",
               f"{host}:0", "--no-recheck", "--tracker-less", "--timeout", str(t)]  # fmt: skip
    m = run_measured(cmd, timeout=t, cwd=ROOT, stderr_path=d / f"{client}.stderr")
    stats = m.event("stats" if client == "torrentfs" else "done") or {}
    if m.returncode != 0 or not stats:
        return Result(client, 0, False, error=f"exit {m.returncode}: {m.stderr_tail[-300:]}")
    return Result(
        client,
        0,
        True,
        metadata=_since(stats.get("metadata_at"), m.started_at),
        first=_since(stats.get("first_piece_at"), m.started_at),
        total=size / m.wall / MB,
        cpu=m.cpu,
    )


def run_mount(magnet: str, name: str, d: Path, host: str, t: float) -> Result:
    meta, mnt = d / "meta", d / "mnt"
    meta.mkdir(parents=True)
    mnt.mkdir()
    cmd = [str(TORRENTFS), str(meta), str(mnt), "--download-dir", str(d / "data"),
           "--state-dir", str(d / "state"), "--listen", f"{host}:0", "--no-dht", "-f",
           "--read-timeout", str(t)]  # fmt: skip
    with (d / "mount.stderr").open("wb") as err:
        proc = subprocess.Popen(cmd, stderr=err, stdout=err, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                return Result("torrentfs-mount", 0, False, error="mount did not come up")
            time.sleep(0.02)
        t0 = time.monotonic()
        (meta / ".x.part").write_text(magnet + "\n")
        os.rename(meta / ".x.part", meta / "x.magnet")
        top = mnt / "Magnetic"
        deadline = t0 + t
        while not (top.is_dir() and os.listdir(top)):
            if time.monotonic() > deadline:
                return Result("torrentfs-mount", 0, False, error="metadata never arrived")
            time.sleep(0.005)
        metadata = time.monotonic() - t0
        with open(top / name, "rb") as f:
            f.read(1)
        first = time.monotonic() - t0
        return Result("torrentfs-mount", 0, True, metadata=metadata, first=first)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def report(results: list[Result], clients: list[str]) -> str:
    rows = []
    ref_meta = median([r.metadata for r in results if r.client == "libtorrent" and r.ok])
    ref_first = median([r.first for r in results if r.client == "libtorrent" and r.ok])
    for c in clients:
        rs = [r for r in results if r.client == c and r.ok]
        meta = median([r.metadata for r in rs])
        first = median([r.first for r in rs])
        ratio_meta = meta / ref_meta if meta and ref_meta else None
        ratio_first = first / ref_first if first and ref_first else None
        failed = [r.error for r in results if r.client == c and not r.ok]
        rows.append([
            c, f"{len(rs)}/{len(rs) + len(failed)}", fmt(meta), fmt(first),
            fmt(median([r.total for r in rs]), ".1f"), fmt(median([r.cpu for r in rs]), ".1f"),
            fmt(ratio_meta), fmt(ratio_first),
        ])  # fmt: skip
    table = format_table(
        ["client", "ok", "metadata s", "first piece/byte s", "total MB/s", "CPU s",
         "metadata / libtorrent", "first / libtorrent"], rows,
    )  # fmt: skip
    notes = [f"- {r.client} run {r.run}: {r.error}" for r in results if not r.ok]
    return table + ("\n\nfailures:\n" + "\n".join(notes) if notes else "")


def main(argv: list[str] | None = None) -> int:
    parser = swarm_bench_parser(
        __doc__.split("\n\n")[0], CLIENTS, "comma list (default: all)", "seconds per client run"
    )
    parser.set_defaults(size=512 << 20, timeout=300.0)
    args = parser.parse_args(argv)
    clients = parse_clients(parser, args.clients, CLIENTS)
    require_isolated_network()
    payload, torrent, digest = cached_single_file(
        args.size, args.piece_length, "http://127.0.0.1:6969/announce", seed=args.seed
    )
    name = payload.root.name
    work = cache_dir() / "work-magnet"
    results: list[Result] = []
    for run in range(args.runs):
        for client in clients:
            d = work / f"{client}-{run}"
            subprocess.run(["rm", "-rf", str(d)], check=False)
            d.mkdir(parents=True)
            seeder = LibtorrentPeer(
                "seed", torrent.path, payload.root.parent,
                extra_args=["--trust", "--tracker-less"], log_dir=d,
            )  # fmt: skip
            seeder.start()
            try:
                magnet = f"{torrent.magnet()}&dn=Magnetic&x.pe={seeder.address_text}"
                host = next_loopback()
                if client == "torrentfs-mount":
                    r = run_mount(magnet, name, d, host, args.timeout)
                else:
                    r = run_download(client, magnet, d, host, torrent.total_size, args.timeout)
                    got = d / "out" / name
                    if r.ok and (not got.exists() or sha256_file(got) != digest):
                        r.ok, r.error = False, "downloaded file differs from the source"
            finally:
                seeder.stop()
            r.run = run
            results.append(r)
            print(f"bench magnet: {client} run {run}: {r}", file=sys.stderr)
    print(f"magnet -> metadata -> first byte; {torrent.total_size >> 20} MiB, "
          f"{args.piece_length >> 10} KiB pieces, {torrent.num_pieces} pieces; seconds from "
          "spawn (mount: from dropping the .magnet file)")  # fmt: skip
    print(report(results, clients))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
