#!/usr/bin/env python3
"""Benchmark: ``torrentfs make`` against mktorrent on one large file (``scripts/bench make``).

Creates (once, then reuses) a file of random bytes in a cache directory under $TMPDIR (or
/tmp), reads it once so that every run finds it in the page cache (dropping the cache between
runs would need root and would disturb the whole machine, so all runs are measured *warm*),
then times, best of N, for each piece length:

* ``mktorrent`` with its default thread count (one per CPU core) and with ``-t 2``;
* ``torrentfs make`` (default: one hashing thread per core, plus the reading thread).

Both are run as the commands a user runs (wall time of the whole process, Python start-up
included; the CPU time, user + sys, is shown too because it is far less disturbed by other
load on the machine). It prints MiB/s for each and the ratio torrentfs/mktorrent, and checks
that both produced the same info dictionary (same info-hash) for the same name and settings;
the exit status is 1 if they differ, 0 otherwise -- speed is reported, never judged here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
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


def best_time(argv: list[str], out: Path, repeat: int) -> tuple[float, float]:
    """Best wall-clock time and best CPU time (user + sys) of `repeat` runs of `argv`."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            sys.exit(f"bench_make: {argv[0]} failed: {r.stderr.decode(errors='replace').strip()}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best_wall = min(best_wall, elapsed)
        best_cpu = min(best_cpu, cpu)
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench make", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=512 * MiB, help="file size (512M)")
    parser.add_argument(
        "--piece-lengths",
        default="1M,256K",
        help="comma-separated piece lengths, powers of two (default: 1M,256K)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (best counts)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "torrentfs-bench",
        help="where the test file is kept between runs",
    )
    parser.add_argument("--threads", type=int, default=None, help="torrentfs make --threads")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary line")
    args = parser.parse_args(argv)

    mktorrent = shutil.which("mktorrent")
    if mktorrent is None:
        sys.exit("bench_make: mktorrent is not installed (Debian package mktorrent)")
    torrentfs = str(ROOT / ".venv" / "bin" / "torrentfs")
    source = ensure_file(args.cache_dir, args.size)
    warm(source)
    cores = os.cpu_count() or 1
    size_mib = args.size / MiB
    print(f"file: {source} ({size_mib:.0f} MiB, page-cache warm), {cores} CPU cores")
    print(f"best of {args.repeat}; mktorrent's default thread count is the core count ({cores})")
    results: list[dict[str, object]] = []
    same = True
    with tempfile.TemporaryDirectory(prefix="bench-make-") as tmp:
        work = Path(tmp)
        for piece_length in (parse_size(p) for p in args.piece_lengths.split(",")):
            log2 = piece_length.bit_length() - 1
            if piece_length != 1 << log2:
                sys.exit(f"bench_make: piece length {piece_length} is not a power of two")
            mk_out, mk2_out, tf_out = work / "mk.torrent", work / "mk2.torrent", work / "tf.torrent"
            runs = {
                "mktorrent": best_time(
                    [mktorrent, "-d", "-l", str(log2), "-o", str(mk_out), str(source)],
                    mk_out,
                    args.repeat,
                ),
                "mktorrent -t 2": best_time(
                    [mktorrent, "-d", "-t", "2", "-l", str(log2), "-o", str(mk2_out), str(source)],
                    mk2_out,
                    args.repeat,
                ),
                "torrentfs make": best_time(
                    [torrentfs, "make", str(source), "-o", str(tf_out), "--no-date"]
                    + ["--piece-length", str(piece_length)]
                    + (["--threads", str(args.threads)] if args.threads else []),
                    tf_out,
                    args.repeat,
                ),
            }
            hashes = {info_hash(mk_out), info_hash(mk2_out), info_hash(tf_out)}
            same = same and len(hashes) == 1
            print(f"\npiece length {piece_length // 1024} KiB (-l {log2}):")
            for tool, (wall, cpu) in runs.items():
                print(
                    f"  {tool:<16} {wall:7.3f} s  {size_mib / wall:8.0f} MiB/s   (CPU {cpu:6.3f} s)"
                )
            tf_wall = runs["torrentfs make"][0]
            ratio = runs["mktorrent"][0] / tf_wall
            ratio2 = runs["mktorrent -t 2"][0] / tf_wall
            print(f"  throughput torrentfs/mktorrent: {ratio:.2f}x (default), {ratio2:.2f}x (-t 2)")
            cpu_ratio = runs["mktorrent"][1] / runs["torrentfs make"][1]
            print(
                f"  CPU efficiency torrentfs/mktorrent: {cpu_ratio:.2f}x (less sensitive to load)"
            )
            verdict = "same" if len(hashes) == 1 else "DIFFERENT"
            print(f"  info-hash: {verdict} ({', '.join(sorted(hashes))})")
            results.append(
                {
                    "piece_length": piece_length,
                    "seconds": {k: v[0] for k, v in runs.items()},
                    "cpu_seconds": {k: v[1] for k, v in runs.items()},
                    "mib_per_s": {k: size_mib / v[0] for k, v in runs.items()},
                    "ratio": ratio,
                    "ratio_t2": ratio2,
                    "cpu_ratio": cpu_ratio,
                    "same_info_hash": len(hashes) == 1,
                }
            )
    if args.json:
        print(json.dumps({"size": args.size, "cores": cores, "results": results}))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
