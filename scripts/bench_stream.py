#!/usr/bin/env python3
"""Benchmark: streaming reads through the mount (``scripts/bench stream``), issue 4.

One torrent (default 1 GiB, 1 MiB pieces; the deterministic payload cached under /var/tmp, as
``bench download``), opentracker on 127.0.0.1:6969, and a *fresh* python3-libtorrent seeder on
a fresh loopback address (127.0.0.2, .3, ...) for every mount and every reference download, in
the network namespace ``scripts/bench`` makes.  Mounted clients:

* torrentfs: ``torrentfs META MNT --download-dir D --state-dir S --listen H:0 --no-dht`` with
  the .torrent put into META before the mount starts;
* btfs (Debian): ``btfs -f --data-directory=D TORRENT MNT`` (it finds the seeder through the
  tracker; it turns on DHT and LSD itself, harmless in the namespace).  btfs cannot bind to an
  address, so it connects from 127.0.0.1 - which is why no seeder ever sits on 127.0.0.1.

For each mounted client and run, two fresh mounts, each with a fresh, empty download dir:

1. *sequential*: the moment the file is visible in the mount ("mount up") starts the clock for
   the **first 64 KiB** (open + ``pread`` of 64 KiB at offset 0); then **cold sequential**
   ``dd if=FILE bs=1M of=/dev/null`` (MB/s = size / dd's wall time); then the **first
   re-read**, the same ``dd`` at once: it finds whatever the cold read left in the kernel's page
   cache (a torrentfs mount drops a streamed file's pages behind the reader, so its first
   re-read goes through the mount's read path); then the file's sha256 is taken through the
   mount, untimed (it must equal the source's, else the run fails; the references' downloads are
   checked after they end too: hashing during the timed read would take a core from the client
   on a loaded machine); then **warm re-read**, the same ``dd`` into /dev/null, from the page
   cache the two passes before it filled; then **uncached re-read**:
   the file's pages are dropped from the kernel's cache (``posix_fadvise(DONTNEED)`` on the
   mounted file) and the same ``dd`` runs again, so every byte goes through the filesystem's
   read path once more but nothing waits for the swarm - the cost of the read path alone (MB/s
   and CPU s/GiB);
2. *random*: 20 ``pread`` calls of 64 KiB at random offsets (fixed seed), on one open handle,
   each timed on its own: **median** and **p90**.  The first read also waits for the torrent's
   first connection (an idle torrent has none); with 1 MiB pieces one read of the 20 crosses a
   piece boundary and waits for two pieces (the report says how many);
3. *small* (only when asked, ``--phases sequential,random,small``): a cold ``dd bs=32K`` (into
   ``sha256sum``, checked) through a fresh mount: how an app that reads 32 KiB at a time (the
   coreutils digests) streams - the case ``--direct-io`` trades away (**cold 32K MB/s**, CPU).

``--phases random`` (or ``sequential``) runs one of the mounts only (the other's figures
are n/a): quicker rounds while working on one of them.  Client ``torrentfs-dio`` is the
torrentfs mount with ``--direct-io``.

Peak RSS is the kernel's high-water mark (``VmHWM``) of the mount process, the larger of the two
mounts.  **CPU**: user + system seconds of the mount process (all its threads, from
``/proc/PID/stat``) spent during the cold ``dd``, per GiB read - a figure that stays meaningful
when other work shares the machine and wall-clock rates do not; the references report theirs
(from ``wait4``) per GiB downloaded.  ``--profile DIR`` runs the torrentfs mount under cProfile
and leaves one ``.prof`` file per mount in DIR (``python -m pstats`` reads them).

Before every mount and every reference download the machine is let settle (``bench_lib.settle``:
the seeder's payload read into the page cache, ``sync``, then until it is quiet), so no client
pays for the one before it, nor for the seeder's disk.

References without a mount, on the same swarm set-up: ``torrentfs download`` and ``aria2c``,
driven exactly as ``bench download`` drives them (its ``measure`` function).

Then the goals of issue 4 as ratios: cold streaming >= 0.9x our own download rate and >= 1x
aria2c; first 64 KiB within 0.5 s; random-read median within 2 piece-transfer times (piece size
/ our download rate); warm re-read >= 1 GB/s; peak RSS under 200 MB.  Speed is reported, never
judged: the exit status is 1 only if data read through a mount (or downloaded) was wrong, or a
measurement failed.  Every read has a deadline: a hung mount is detached (``fusermount3 -uz``)
and its process killed, and the run is reported as failed.  Logs stay in
``<cache>/work-stream``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_download
from bench_lib import (
    MB,
    ROOT,
    GiB,
    HarnessError,
    LibtorrentPeer,
    MiB,
    Opentracker,
    TorrentFile,
    cached_single_file,
    format_table,
    median,
    next_loopback,
    require_isolated_network,
    settle,
    vm_hwm,
)

MOUNTS = ("torrentfs", "torrentfs-dio", "btfs")
REFERENCES = ("download", "aria2c")  # torrentfs download, aria2c
CLIENTS = MOUNTS + REFERENCES
TRACKER_PORT = 6969
HEAD = 64 * 1024
RANDOM_READS = 20
RANDOM_SEED = 4
SEEDER_ARGS = os.environ.get("BENCH_SEEDER_ARGS", "").split()
FOREGROUND: list[str] = []  # set by main(): torrentfs_foreground_flag()
MOUNT_ARGS = os.environ.get("BENCH_TORRENTFS_ARGS", "").split()  # e.g. "-v" or readahead bounds
TORRENTFS = ROOT / ".venv" / "bin" / "torrentfs"
PROFILE_DIR: Path | None = None  # set by main(): --profile
PHASES = ("sequential", "random")  # set by main(): --phases
ALL_PHASES = ("sequential", "random", "small")
SMALL_BS = 32 * 1024
"""The ``small`` phase reads like ``sha256sum`` (coreutils' digest tools read 32 KiB at a time)."""

T = TypeVar("T")


class PhaseError(Exception):
    """One measurement failed (timeout, a mount that never came up, wrong data)."""


# --------------------------------------------------------------------------- results


@dataclass
class MountResult:
    client: str
    run: int
    ok: bool = False
    error: str | None = None
    size: int = 0
    mount_up: float | None = None  # s, spawn -> file visible (sequential mount)
    first_64k: float | None = None  # s, open + 64 KiB read after the mount is up
    cold_seconds: float | None = None
    reread_seconds: float | None = None  # the first re-read after the cold one
    warm_seconds: float | None = None
    random_reads: list[float] = field(default_factory=list)  # s each
    peak_rss: int | None = None  # bytes, max over both mounts
    cold_cpu: float | None = None  # s, user + system of the mount process during the cold dd
    uncached_seconds: float | None = None  # dd after the file's page cache was dropped
    uncached_cpu: float | None = None  # s, mount process CPU during that dd
    small_seconds: float | None = None  # cold ``dd bs=32K`` on a fresh mount (``small`` phase)
    small_cpu: float | None = None  # s, mount process CPU during it
    sha256_ok: bool | None = None

    def _rate(self, seconds: float | None) -> float | None:
        """MB/s of reading the whole file in ``seconds``."""
        return self.size / seconds / MB if seconds else None

    def _per_gib(self, cpu: float | None) -> float | None:
        """CPU seconds per GiB of the file."""
        return cpu / (self.size / GiB) if cpu is not None else None

    cold_rate = property(lambda self: self._rate(self.cold_seconds))
    warm_rate = property(lambda self: self._rate(self.warm_seconds))
    reread_rate = property(lambda self: self._rate(self.reread_seconds))
    uncached_rate = property(lambda self: self._rate(self.uncached_seconds))
    cold_cpu_per_gib = property(lambda self: self._per_gib(self.cold_cpu))
    uncached_cpu_per_gib = property(lambda self: self._per_gib(self.uncached_cpu))
    small_rate = property(lambda self: self._rate(self.small_seconds))
    small_cpu_per_gib = property(lambda self: self._per_gib(self.small_cpu))

    @property
    def random_median(self) -> float | None:
        return statistics.median(self.random_reads) if self.random_reads else None

    @property
    def random_p90(self) -> float | None:
        if len(self.random_reads) < 2:
            return self.random_reads[0] if self.random_reads else None
        return statistics.quantiles(self.random_reads, n=10, method="inclusive")[8]


# --------------------------------------------------------------------------- mounts


def is_mounted(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:  # ENOTCONN on a dead FUSE mount: still in the mount table
        return True


def detach(path: Path) -> None:
    """Unmount ``path``: ``fusermount3 -u``, then ``fusermount -u`` (FUSE 2), then lazily."""
    for cmd in (
        ["fusermount3", "-u", str(path)],
        ["fusermount", "-u", str(path)],
        ["fusermount3", "-uz", str(path)],
        ["umount", "-l", str(path)],
    ):
        if not is_mounted(path):
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)


class MountProc:
    """One FUSE client process serving ``mountpoint``; ``stop()`` always leaves it unmounted."""

    def __init__(self, cmd: list[str], mountpoint: Path, file: Path, stderr_path: Path) -> None:
        self.cmd = cmd
        self.mountpoint = mountpoint
        self.file = file
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.hwm = 0
        self._done = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self, timeout: float) -> float:
        """Spawn, and wait until the file is visible; returns the seconds that took."""
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("wb") as err:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                self.cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL
            )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise PhaseError(f"exited {self.proc.returncode} before mounting: {self.tail()}")
            try:
                if is_mounted(self.mountpoint) and self.file.stat().st_size > 0:
                    return time.monotonic() - t0
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PhaseError(f"{self.file.name} not visible within {timeout:.0f} s")
            time.sleep(0.005)

    def cpu(self) -> float:
        """User + system seconds the process (every thread) has used so far; 0 if gone."""
        return proc_cpu(self.proc.pid) if self.proc is not None else 0.0

    def _sample(self) -> None:
        assert self.proc is not None
        while not self._done.wait(0.02):
            self.hwm = max(self.hwm, vm_hwm(self.proc.pid))

    def kill_now(self) -> None:
        """For a hung read: detach the mount and kill the process (the read then fails)."""
        subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.hwm = max(self.hwm, vm_hwm(self.proc.pid))
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # torrentfs unmounts itself on SIGTERM
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        detach(self.mountpoint)  # btfs ignores SIGTERM until unmounted; a dead mount stays
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._done.set()
        if self._sampler is not None:
            self._sampler.join()

    def tail(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " / ".join(lines[-3:])[-300:]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process, all threads (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def torrentfs_foreground_flag() -> list[str]:
    """``["-f"]`` if this torrentfs daemonises by default (it has ``--foreground``), else ``[]``.

    The mount process must stay our child: its RSS is measured and it is stopped by pid.
    """
    try:
        out = subprocess.run(
            [str(TORRENTFS), "META", "MNT", "--help"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--foreground"] if "--foreground" in out else []


def profile_download_reference(out_dir: Path) -> None:
    """Run the ``torrentfs download`` reference under cProfile too (``--profile``)."""
    plain = bench_download.JOBS["torrentfs"]

    def profiled(
        torrent: TorrentFile, out: Path, host: str, seeder: str, t: float
    ) -> bench_download.Job:
        job = plain(torrent, out, host, seeder, t)
        out_dir.mkdir(parents=True, exist_ok=True)
        prof = out_dir / f"download-{out.name}.prof"
        python = str(ROOT / ".venv" / "bin" / "python")
        return dataclasses.replace(job, cmd=[python, "-m", "cProfile", "-o", str(prof), *job.cmd])

    bench_download.JOBS["torrentfs"] = profiled


def torrentfs_mount(torrent: TorrentFile, name: str, d: Path, host: str, mnt: Path) -> MountProc:
    meta = d / "meta"
    meta.mkdir(parents=True)
    shutil.copyfile(torrent.path, meta / torrent.path.name)
    cmd = [str(TORRENTFS), str(meta), str(mnt), "--download-dir", str(d / "data"),
           "--state-dir", str(d / "state"), "--listen", f"{host}:0", "--no-dht",
           *FOREGROUND, *MOUNT_ARGS]  # fmt: skip
    if PROFILE_DIR is not None:
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        out = PROFILE_DIR / f"{d.name}.prof"
        cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "cProfile", "-o", str(out), *cmd]
    return MountProc(cmd, mnt, mnt / name, d / "torrentfs.stderr")


def torrentfs_dio_mount(
    torrent: TorrentFile, name: str, d: Path, host: str, mnt: Path
) -> MountProc:
    """The torrentfs mount with ``--direct-io`` (files still downloading skip the page cache)."""
    mount = torrentfs_mount(torrent, name, d, host, mnt)
    mount.cmd.append("--direct-io")
    return mount


def btfs_mount(torrent: TorrentFile, name: str, d: Path, host: str, mnt: Path) -> MountProc:
    (d / "data").mkdir(parents=True)
    cmd = ["btfs", "-f", f"--data-directory={d / 'data'}", str(torrent.path), str(mnt)]
    return MountProc(cmd, mnt, mnt / name, d / "btfs.stderr")


MOUNT_CMDS: dict[str, Callable[[TorrentFile, str, Path, str, Path], MountProc]] = {
    "torrentfs": torrentfs_mount,
    "torrentfs-dio": torrentfs_dio_mount,
    "btfs": btfs_mount,
}


def missing_tool(client: str) -> str | None:
    if client.startswith("torrentfs") and not TORRENTFS.exists():
        return ".venv/bin/torrentfs missing (run scripts/bootstrap)"
    if client == "btfs" and not shutil.which("btfs"):
        return "btfs not installed (Debian package btfs)"
    if not shutil.which("fusermount3"):
        return "fusermount3 missing (Debian package fuse3)"
    return None


# --------------------------------------------------------------------------- guarded I/O


def guarded(fn: Callable[[], T], timeout: float, mount: MountProc, what: str) -> T:
    """Run ``fn`` in a thread; past ``timeout`` kill the mount (which ends the read), fail."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as exc:
            box.append(("err", exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        mount.kill_now()
        t.join(15)
        raise PhaseError(f"{what}: no answer within {timeout:.0f} s (mount killed)")
    kind, value = box[0]
    if kind == "err":
        raise PhaseError(f"{what}: {value}")
    return value


def read_at(path: Path, offset: int, size: int) -> float:
    """Open, ``pread`` exactly ``size`` bytes at ``offset``, close; the seconds it took."""
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    if len(got) != size:
        raise PhaseError(f"short read: {len(got)} of {size} bytes at {offset}")
    return time.monotonic() - t0


def drop_page_cache(path: Path) -> None:
    """Drop the kernel's cached pages of ``path`` (the next read goes to the filesystem)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def dd(
    path: Path, timeout: float, mount: MountProc, digest: str | None, *, bs: int = 1 << 20
) -> float:
    """``dd if=path bs=BS`` (into ``sha256sum`` if ``digest`` is given); its wall seconds."""
    t0 = time.monotonic()
    src = subprocess.Popen(
        ["dd", f"if={path}", f"bs={bs}", "status=none"] + ([] if digest else ["of=/dev/null"]),
        stdout=subprocess.PIPE if digest else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    summer = None
    if digest:
        assert src.stdout is not None
        summer = subprocess.Popen(["sha256sum"], stdin=src.stdout, stdout=subprocess.PIPE)
        src.stdout.close()
    try:
        src.wait(timeout)
    except subprocess.TimeoutExpired:
        mount.kill_now()
        src.kill()
        src.wait()
        if summer is not None:
            summer.kill()
            summer.wait()
        raise PhaseError(f"dd: not done within {timeout:.0f} s (mount killed)") from None
    seconds = time.monotonic() - t0
    err = src.stderr.read().decode(errors="replace").strip() if src.stderr else ""
    if summer is not None:
        out, _ = summer.communicate(timeout=60)
        got = out.decode().split()[0] if out else ""
        if src.returncode == 0 and got != digest:
            raise PhaseError("WRONG DATA: sha256 through the mount differs from the source")
    if src.returncode != 0:
        raise PhaseError(f"dd exit {src.returncode}: {err[-200:]}")
    return seconds


# --------------------------------------------------------------------------- one mount run


def with_mount(
    client: str,
    torrent: TorrentFile,
    source: Path,
    tracker: Opentracker,
    d: Path,
    timeout: float,
    body: Callable[[MountProc, float], None],
) -> int:
    """Fresh seeder + fresh dirs + mount; run ``body(mount, mount_up_seconds)``; peak RSS."""
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    seeder = LibtorrentPeer(
        "seed", torrent.path, source.parent, host=next_loopback(),
        extra_args=["--trust", *SEEDER_ARGS], log_dir=d,
    )  # fmt: skip
    mount = MOUNT_CMDS[client](torrent, source.name, d, next_loopback(), d / "mnt")
    settle(source)  # the seeder's data in memory; not the previous client's writeback
    try:
        seeder.start()
        tracker.wait_seeders(torrent.info_hash)
        up = mount.start(min(timeout, 120.0))
        body(mount, up)
    except HarnessError as exc:
        raise PhaseError(f"harness: {str(exc).splitlines()[0]}") from None
    finally:
        mount.stop()
        seeder.stop()
    return mount.hwm


def random_offsets(total_size: int) -> list[int]:
    """Where the random phase reads (the same offsets in every run and for every client)."""
    rng = random.Random(RANDOM_SEED)
    return [rng.randrange(0, total_size - HEAD) for _ in range(RANDOM_READS)]


def spanning_reads(total_size: int, piece_length: int) -> int:
    """How many of the random reads cross a piece boundary (each waits for two pieces)."""
    return sum(
        off // piece_length != (off + HEAD - 1) // piece_length
        for off in random_offsets(total_size)
    )


def measure_mount(
    client: str,
    run: int,
    torrent: TorrentFile,
    source: Path,
    digest: str,
    tracker: Opentracker,
    work: Path,
    timeout: float,
) -> MountResult:
    res = MountResult(client, run, size=torrent.total_size)
    why = missing_tool(client)
    if why:
        res.error = why
        return res
    rss = 0
    phase = "sequential"
    try:

        def sequential(mount: MountProc, up: float) -> None:
            res.mount_up = up
            res.first_64k = guarded(
                lambda: read_at(mount.file, 0, HEAD), timeout, mount, "first 64 KiB"
            )
            cpu0 = mount.cpu()
            res.cold_seconds = dd(mount.file, timeout, mount, None)
            res.cold_cpu = mount.cpu() - cpu0
            res.reread_seconds = dd(mount.file, timeout, mount, None)
            dd(mount.file, timeout, mount, digest)  # untimed: the check of every byte read
            res.sha256_ok = True
            res.warm_seconds = dd(mount.file, timeout, mount, None)
            guarded(lambda: drop_page_cache(mount.file), timeout, mount, "drop page cache")
            cpu0 = mount.cpu()
            res.uncached_seconds = dd(mount.file, timeout, mount, None)
            res.uncached_cpu = mount.cpu() - cpu0

        if "sequential" in PHASES:
            rss = with_mount(client, torrent, source, tracker, work / f"{client}-{run}-seq",
                             timeout, sequential)  # fmt: skip
        phase = "random"
        offsets = random_offsets(torrent.total_size)

        def random_reads(mount: MountProc, up: float) -> None:
            fd = guarded(lambda: os.open(mount.file, os.O_RDONLY), timeout, mount, "open")
            try:
                for off in offsets:

                    def one(off: int = off) -> float:
                        t0 = time.monotonic()
                        got = os.pread(fd, HEAD, off)
                        if len(got) != HEAD:
                            raise PhaseError(f"short read: {len(got)} of {HEAD} at {off}")
                        return time.monotonic() - t0

                    res.random_reads.append(guarded(one, timeout, mount, f"read at {off}"))
            finally:
                os.close(fd)

        rand_dir = work / f"{client}-{run}-rand"
        if "random" in PHASES:
            rss = max(
                rss, with_mount(client, torrent, source, tracker, rand_dir, timeout, random_reads)
            )
        phase = "small"

        def small_reads(mount: MountProc, up: float) -> None:
            guarded(lambda: read_at(mount.file, 0, HEAD), timeout, mount, "first 64 KiB")
            cpu0 = mount.cpu()
            res.small_seconds = dd(mount.file, timeout, mount, digest, bs=SMALL_BS)
            res.small_cpu = mount.cpu() - cpu0

        if "small" in PHASES:
            small_dir = work / f"{client}-{run}-small"
            rss = max(
                rss, with_mount(client, torrent, source, tracker, small_dir, timeout, small_reads)
            )
        res.ok = True
    except PhaseError as exc:
        res.error = f"{phase}: {exc}"
        if "WRONG DATA" in str(exc):
            res.sha256_ok = False
    except OSError as exc:
        res.error = f"{phase}: {exc}"
    res.peak_rss = rss or None
    if res.ok:
        for sub in ("seq", "rand", "small"):
            shutil.rmtree(work / f"{client}-{run}-{sub}" / "data", ignore_errors=True)
    return res


# --------------------------------------------------------------------------- report


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.0f}"


def goal(value: float | None, spec: str, unit: str, met: Callable[[float], bool]) -> str:
    """``"0.93x (met)"`` / ``"4.40 s (MISSED)"`` / ``"n/a"``."""
    if value is None:
        return "n/a"
    return f"{format(value, spec)}{unit} ({'met' if met(value) else 'MISSED'})"


def report(
    mounts: list[MountResult],
    refs: list[bench_download.Result],
    piece_length: int,
) -> tuple[str, dict[str, Any]]:
    rows = []
    for r in mounts:
        rows.append([
            r.client, str(r.run), fmt(r.cold_rate), ms(r.first_64k), ms(r.random_median),
            ms(r.random_p90), fmt(r.reread_rate, ".0f"), fmt(r.warm_rate, ".0f"),
            fmt(r.cold_cpu_per_gib, ".2f"),
            fmt(r.uncached_rate, ".0f"), fmt(r.uncached_cpu_per_gib, ".2f"),
            fmt(r.small_rate), fmt(r.small_cpu_per_gib, ".2f"),
            fmt(r.peak_rss / MB if r.peak_rss else None, ".0f"), ms(r.mount_up),
            "ok" if r.ok else (r.error or "failed"),
        ])  # fmt: skip
    for d in refs:
        name = "torrentfs download" if d.client == "torrentfs" else d.client
        rows.append([
            name, str(d.run), fmt(d.total_rate), "-", "-", "-", "-", "-",
            fmt(d.cpu_per_gib, ".2f"),
            "-", "-", "-", "-",
            fmt(d.peak_rss / MB if d.peak_rss and d.ok else None, ".0f"), "-",
            "ok" if d.ok else (d.error or "failed"),
        ])  # fmt: skip
    table = format_table(
        ["client", "run", "cold MB/s", "1st 64K ms", "rand med ms", "rand p90 ms",
         "1st re-read MB/s", "warm MB/s", "CPU s/GiB", "uncached MB/s", "uncached CPU s/GiB",
         "cold 32K MB/s", "32K CPU s/GiB", "peak RSS MB", "mount up ms", "result"],
        rows,
    )  # fmt: skip

    def med_mount(client: str, attr: str) -> float | None:
        return median([getattr(r, attr) for r in mounts if r.client == client and r.ok])

    own = median([d.total_rate for d in refs if d.client == "torrentfs"])
    aria = median([d.total_rate for d in refs if d.client == "aria2c"])
    summary: dict[str, Any] = {"download_mb_s": own, "aria2c_mb_s": aria, "goals": {}}
    goal_rows = []
    for c in MOUNTS:
        if not any(r.client == c for r in mounts):
            continue
        cold = med_mount(c, "cold_rate")
        first = med_mount(c, "first_64k")
        rmed = med_mount(c, "random_median")
        warm = med_mount(c, "warm_rate")
        rss = median([r.peak_rss for r in mounts if r.client == c and r.ok and r.peak_rss])
        rate = own or cold  # piece-transfer time at our own download rate
        piece_t = piece_length / (rate * MB) if rate else None
        g = {
            "cold_vs_download": cold / own if cold and own else None,
            "cold_vs_aria2c": cold / aria if cold and aria else None,
            "first_64k_s": first,
            "random_median_piece_times": rmed / piece_t if rmed and piece_t else None,
            "warm_mb_s": warm,
            "peak_rss_mb": rss / MB if rss else None,
        }
        summary["goals"][c] = g
        goal_rows.append(
            [
                c,
                goal(g["cold_vs_download"], ".2f", "x", lambda v: v >= 0.9),
                goal(g["cold_vs_aria2c"], ".2f", "x", lambda v: v >= 1.0),
                goal(first, ".3f", " s", lambda v: v <= 0.5),
                goal(g["random_median_piece_times"], ".2f", "", lambda v: v <= 2),
                goal(warm, ".0f", " MB/s", lambda v: v >= 1000),
                goal(g["peak_rss_mb"], ".0f", " MB", lambda v: v < 200),
            ]
        )
    goals = format_table(
        ["mount", "cold / own download (>=0.9)", "cold / aria2c (>=1)", "1st 64K (<=0.5 s)",
         "rand median / piece time (<=2)", "warm (>=1000 MB/s)", "peak RSS (<200 MB)"],
        goal_rows,
    )  # fmt: skip
    pt = piece_length / (own * MB) if own else None
    note = (
        f"\nOwn download rate {fmt(own)} MB/s, aria2c {fmt(aria)} MB/s; one piece "
        f"({piece_length // 1024} KiB) takes {ms(pt)} ms at our rate."
    )
    return f"{table}\n\n{goals}{note}", summary


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    global FOREGROUND, PROFILE_DIR, PHASES
    from bench_lib import parse_clients, swarm_bench_parser

    p = swarm_bench_parser(
        __doc__.split("\n\n")[0],
        CLIENTS,
        "comma list of: torrentfs,torrentfs-dio,btfs (mounts; torrentfs-dio is the mount with "
        "--direct-io), download (torrentfs download), aria2c",
        "per read/dd/download, seconds",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the torrentfs mount under cProfile; one .prof per mount in DIR",
    )
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma list of the mount phases to run: sequential,random (default), small (a "
        "cold dd bs=32K through a fresh mount: how an app reading 32 KiB at a time streams)",
    )
    args = p.parse_args(argv)
    clients = parse_clients(p, args.clients, CLIENTS)
    phases = tuple(x.strip() for x in args.phases.split(",") if x.strip())
    if not phases or any(x not in ALL_PHASES for x in phases):
        p.error(f"--phases: expected some of {','.join(ALL_PHASES)}, got {args.phases!r}")
    try:
        require_isolated_network()
    except HarnessError as exc:
        print(f"bench stream: {exc}", file=sys.stderr)
        return 2

    PROFILE_DIR = args.profile
    PHASES = phases
    if PROFILE_DIR is not None:
        profile_download_reference(PROFILE_DIR)
    if any(c.startswith("torrentfs") for c in clients):
        FOREGROUND = torrentfs_foreground_flag()
    tracker_url = f"http://127.0.0.1:{TRACKER_PORT}/announce"
    payload, torrent, digest = cached_single_file(
        args.size, args.piece_length, tracker_url, seed=args.seed
    )
    print(
        f"bench stream: {torrent.total_size / MiB:.0f} MiB, {torrent.num_pieces} pieces of "
        f"{torrent.piece_length // 1024} KiB; clients {', '.join(clients)}; {args.runs} run(s)",
        file=sys.stderr,
    )
    work = payload.root.parent / "work-stream"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    mounts: list[MountResult] = []
    refs: list[bench_download.Result] = []
    with Opentracker(work / "tracker", port=TRACKER_PORT) as tracker:
        tracker.allow(torrent.info_hash)
        for run in range(1, args.runs + 1):
            for client in clients:
                t0 = time.monotonic()
                if client in MOUNTS:
                    m = measure_mount(client, run, torrent, payload.root, digest, tracker, work,
                                      args.timeout)  # fmt: skip
                    mounts.append(m)
                    ok, err = m.ok, m.error
                else:
                    name = "torrentfs" if client == "download" else client
                    settle(payload.root)
                    r = bench_download.measure(name, run, torrent, payload.root, digest, tracker,
                                               work, args.timeout)  # fmt: skip
                    refs.append(r)
                    ok, err = r.ok, r.error
                print(
                    f"bench stream: {client} run {run}: {'ok' if ok else err} "
                    f"({time.monotonic() - t0:.1f} s)",
                    file=sys.stderr,
                )
    text, summary = report(mounts, refs, torrent.piece_length)
    print(text)
    if "random" in PHASES and mounts:
        spanning = spanning_reads(torrent.total_size, torrent.piece_length)
        print(
            f"Random reads: {spanning} of {RANDOM_READS} cross a piece boundary (two pieces); the "
            "first one also waits for the mount's first connection to the seeder."
        )
    print(f"\n(logs: {work})")
    if args.json is not None:
        out = {
            "size": torrent.total_size,
            "piece_length": torrent.piece_length,
            "mounts": [
                {
                    **asdict(m),
                    "cold_mb_s": m.cold_rate,
                    "warm_mb_s": m.warm_rate,
                    "random_median_s": m.random_median,
                    "random_p90_s": m.random_p90,
                    "cold_cpu_s_per_gib": m.cold_cpu_per_gib,
                    "uncached_mb_s": m.uncached_rate,
                    "uncached_cpu_s_per_gib": m.uncached_cpu_per_gib,
                    "small_mb_s": m.small_rate,
                    "small_cpu_s_per_gib": m.small_cpu_per_gib,
                }
                for m in mounts
            ],
            "references": [{**asdict(r), "total_mb_s": r.total_rate} for r in refs],
            **summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if all(m.ok for m in mounts) and all(r.ok for r in refs) else 1


if __name__ == "__main__":
    sys.exit(main())
