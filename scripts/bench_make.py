#!/usr/bin/env python3
"""Benchmark: ``torrentfs make`` against mktorrent on one large file (``scripts/bench make``).

Creates (once, then reuses) a file of random bytes in a cache directory under $TMPDIR (or
/tmp) and reads it once so that every run finds it in the page cache (dropping the cache
between runs would need root and would disturb the whole machine, so all runs are measured
*warm*, for both tools). Then, for each piece length, it runs the two tools as a user runs them
(whole processes: Python start-up included), alternating them round after round so that a
change in the machine's load hits both alike:

* ``mktorrent -d -l LOG2 [-t N]`` (mktorrent 1.1: one thread reads the file piece by piece,
  N threads hash; N defaults to the number of CPU cores, as does torrentfs's);
* ``torrentfs make --no-date --piece-length BYTES [--threads N]`` (N threads each read a chunk
  of pieces with preadv and hash it).

``--threads N`` gives both tools the same N; by default each uses its own default (both: one
hashing thread per core). One untimed run of each tool warms the cache and the binaries.

For each tool it prints the median wall time, the throughput that gives (MiB/s), the median
CPU time (user + sys, far less disturbed by other load than wall time) and the ratio
torrentfs/mktorrent of throughput (mktorrent wall / torrentfs wall) and of CPU efficiency; the
medians are over ``--repeat`` rounds. It checks that both produced the same info dictionary
(same info-hash): the exit status is 1 if they differ, 0 otherwise -- speed is reported,
never judged here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torrentfs.bencode import decode_torrent  # noqa: E402

MiB = 1024 * 1024


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def ensure_file(cache: Path, size: int) -> Path:
    """The random test file, created once (write to a temp name, then rename)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"make-{size // MiB}MiB.bin"
    if path.exists() and path.stat().st_size == size:
        return path
    print(f"creating {path} ({size // MiB} MiB of random data)...", file=sys.stderr)
    fd, temp = tempfile.mkstemp(dir=cache, prefix=".make-", suffix=".part")
    with os.fdopen(fd, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    os.replace(temp, path)
    return path


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 * MiB)
        while f.readinto(buf):
            pass


def info_hash(torrent: Path) -> str:
    data = torrent.read_bytes()
    _, span = decode_torrent(data)
    assert span is not None
    return hashlib.sha1(data[span[0] : span[1]]).hexdigest()


def run_once(argv: list[str], out: Path) -> tuple[float, float]:
    """Wall-clock and CPU time (user + sys) of one run of `argv`, which must write `out`."""
    out.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"bench_make: {argv[0]} failed: {r.stderr.decode(errors='replace').strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench make", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=512 * MiB, help="file size (512M)")
    parser.add_argument(
        "--piece-lengths",
        default="1M,256K",
        help="comma-separated piece lengths, powers of two (default: 1M,256K)",
    )
    parser.add_argument("--repeat", type=int, default=7, help="rounds (medians are shown)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "torrentfs-bench",
        help="where the test file is kept between runs",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="hashing threads for both tools (-t N)"
    )
    parser.add_argument(
        "--torrentfs",
        default=str(ROOT / ".venv" / "bin" / "torrentfs"),
        help="the torrentfs command to measure (default: this checkout's .venv/bin/torrentfs)",
    )
    parser.add_argument("--json", action="store_true", help="also print a JSON summary line")
    args = parser.parse_args(argv)

    mktorrent = shutil.which("mktorrent")
    if mktorrent is None:
        sys.exit("bench_make: mktorrent is not installed (Debian package mktorrent)")
    source = ensure_file(args.cache_dir, args.size)
    warm(source)
    cores = len(os.sched_getaffinity(0))
    size_mib = args.size / MiB
    threads = str(args.threads) if args.threads else f"default ({cores}, one per core)"
    print(f"file: {source} ({size_mib:.0f} MiB, page-cache warm), {cores} CPU cores")
    print(f"hashing threads: {threads} for both; median of {args.repeat} alternating rounds")
    print(f"torrentfs: {args.torrentfs}")
    results: list[dict[str, object]] = []
    same = True
    with tempfile.TemporaryDirectory(prefix="bench-make-") as tmp:
        work = Path(tmp)
        for piece_length in (parse_size(p) for p in args.piece_lengths.split(",")):
            log2 = piece_length.bit_length() - 1
            if piece_length != 1 << log2:
                sys.exit(f"bench_make: piece length {piece_length} is not a power of two")
            mk_out, tf_out = work / "mk.torrent", work / "tf.torrent"
            t_opt = ["-t", str(args.threads)] if args.threads else []
            commands = {
                "mktorrent": (
                    [mktorrent, "-d", "-l", str(log2), *t_opt, "-o", str(mk_out), str(source)],
                    mk_out,
                ),
                "torrentfs make": (
                    [
                        *(args.torrentfs, "make", str(source), "-o", str(tf_out), "--no-date"),
                        *("--piece-length", str(piece_length), *t_opt),
                    ],
                    tf_out,
                ),
            }
            for warm_argv, warm_out in commands.values():  # untimed: warms binaries and caches
                run_once(warm_argv, warm_out)
            walls: dict[str, list[float]] = {tool: [] for tool in commands}
            cpus: dict[str, list[float]] = {tool: [] for tool in commands}
            for round_ in range(args.repeat):
                # Alternate which tool goes first, so neither always follows the other.
                order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
                for tool in order:
                    took, used = run_once(*commands[tool])
                    walls[tool].append(took)
                    cpus[tool].append(used)
            hashes = {info_hash(mk_out), info_hash(tf_out)}
            same = same and len(hashes) == 1
            wall = {tool: statistics.median(v) for tool, v in walls.items()}
            cpu = {tool: statistics.median(v) for tool, v in cpus.items()}
            print(f"\npiece length {piece_length // 1024} KiB (-l {log2}):")
            for tool in commands:
                print(
                    f"  {tool:<15} wall {wall[tool]:6.3f} s  {size_mib / wall[tool]:6.0f} MiB/s"
                    f"   CPU {cpu[tool]:6.3f} s   (wall min {min(walls[tool]):.3f}"
                    f" max {max(walls[tool]):.3f})"
                )
            ratio = wall["mktorrent"] / wall["torrentfs make"]
            cpu_ratio = cpu["mktorrent"] / cpu["torrentfs make"]
            paired = statistics.median(
                m / t for m, t in zip(walls["mktorrent"], walls["torrentfs make"], strict=True)
            )
            print(
                f"  throughput torrentfs/mktorrent: {ratio:.2f}x"
                f" (median of per-round ratios {paired:.2f}x)"
            )
            print(f"  CPU efficiency torrentfs/mktorrent: {cpu_ratio:.2f}x")
            verdict = "same" if len(hashes) == 1 else "DIFFERENT"
            print(f"  info-hash: {verdict} ({', '.join(sorted(hashes))})")
            results.append(
                {
                    "piece_length": piece_length,
                    "seconds": wall,
                    "cpu_seconds": cpu,
                    "mib_per_s": {k: size_mib / v for k, v in wall.items()},
                    "ratio": ratio,
                    "paired_ratio": paired,
                    "cpu_ratio": cpu_ratio,
                    "same_info_hash": len(hashes) == 1,
                }
            )
    if args.json:
        print(json.dumps({"size": args.size, "cores": cores, "results": results}))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
