"""Real-swarm test harness: third-party peers and a tracker on loopback, in a network namespace.

Interop tests (DESIGN.md §4, tier 4) prove torrentfs against implementations it does not share
code with: Debian's ``opentracker`` (BEP 3 HTTP and BEP 15 UDP announces) and a python3-libtorrent
peer (``tests/peers/lt_peer.py``).  This module gives them as plain Python objects; ``conftest.py``
wraps them as fixtures.

Guarantees:

* Isolation first: everything here refuses to start unless the process sits in a network
  namespace whose only interface is ``lo`` (``scripts/test`` makes one), so no test can reach
  beyond the machine even by mistake.  ``TORRENTFS_ALLOW_HOST_NET=1`` overrides, for debugging.
* Each third-party peer gets its own loopback address (``next_loopback()``: 127.0.0.2, .3, ...),
  as ``LOOPBACK-SWARMS.md`` advises: libtorrent and other clients key peers by IP.
* Nothing sleeps for a guessed time: a tracker is ready when its port accepts, a peer when it
  printed its ``ready`` line, a seeder is announced when the tracker's scrape counts it.
* Every subprocess is stopped (SIGTERM, then SIGKILL) when its context exits, even on failure,
  and a peer's stderr is kept for the failure message.
* Payloads are deterministic functions of ``(layout, seed)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import fastbencode
import figures

TESTS_DIR = Path(__file__).resolve().parent
LT_PEER = TESTS_DIR / "peers" / "lt_peer.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian's python3-libtorrent lives (not the venv)
ISOLATION_HINT = "run through scripts/test (network namespace)"


# Test files import this module as ``swarm`` (pytest puts tests/ on sys.path) or as
# ``tests.swarm`` (``python -m pytest`` from the checkout).  Either way it must be one module
# object, or two copies would hand out the same loopback addresses twice.
sys.modules.setdefault("swarm", sys.modules[__name__])
sys.modules.setdefault("tests.swarm", sys.modules[__name__])


class HarnessError(Exception):
    """A third-party process of the harness failed to start, answer or finish."""


# --------------------------------------------------------------------------- isolation


def network_interfaces() -> list[str]:
    """Names of the network interfaces in this process's network namespace.

    Asked of the kernel (``if_nameindex``, i.e. netlink), not read from ``/sys/class/net``:
    sysfs shows the namespace of whoever mounted it, and ``unshare --net`` does not remount it.
    """
    return sorted(name for _, name in socket.if_nameindex())


def isolation_problem() -> str | None:
    """None if we run in a loopback-only namespace (or the override is set), else why not."""
    if os.environ.get("TORRENTFS_ALLOW_HOST_NET") == "1":
        return None
    others = [n for n in network_interfaces() if n != "lo"]
    if others:
        return (
            f"network interfaces other than lo are visible ({', '.join(others)}): "
            f"{ISOLATION_HINT}, or set TORRENTFS_ALLOW_HOST_NET=1 to debug"
        )
    return None


def require_isolated_network() -> None:
    """Raise HarnessError unless only ``lo`` is visible (see ``isolation_problem``)."""
    problem = isolation_problem()
    if problem is not None:
        raise HarnessError(problem)


# --------------------------------------------------------------------------- addresses, ports

_loopback_counter = itertools.count(2)
_loopback_lock = threading.Lock()


def next_loopback() -> str:
    """A loopback address not handed out before in this process: 127.0.0.2, 127.0.0.3, ...

    127.0.0.1 is never returned (the tracker's and our own default), nor .0/.255 host parts;
    the whole 127.0.0.0/8 answers on ``lo``.
    """
    while True:
        with _loopback_lock:
            n = next(_loopback_counter)
        if n >= 1 << 16:
            raise HarnessError("out of loopback addresses")
        if n % 256 not in (0, 255):
            return f"127.0.{n // 256}.{n % 256}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both TCP and UDP on ``host`` right now.

    Trackers and peers listen on TCP and UDP with the same number (BEP 15, uTP, DHT).
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
            return port
    raise HarnessError(f"no port free for TCP and UDP on {host}")


def wait_port(
    host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until a TCP connect to ``host:port`` succeeds (or ``proc`` died, or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"process exited with {proc.returncode} before {host}:{port} opened")
        if time.monotonic() > deadline:
            raise HarnessError(f"{host}:{port} did not accept connections within {timeout} s")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> int:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps.  Returns the status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return int(proc.returncode)


# --------------------------------------------------------------------------- payloads

# A multi-file tree for 32 KiB pieces (mktorrent's smallest): nested directories, non-ASCII
# names, a zero-length file, files smaller than a piece, exactly a piece, and crossing several
# piece boundaries, so piece <-> file mapping is exercised in every way.
MULTI_LAYOUT: tuple[tuple[str, int], ...] = (
    ("a.bin", 40_000),
    ("empty.txt", 0),
    ("sub/b.bin", 32_768),
    ("sub/deeper/c.bin", 1),
    ("sub/deeper/ünïcødé ✓ файл.txt", 100_001),
    ("sub/x.bin", 7),
    ("z/last.bin", 70_000),
)


@dataclass(frozen=True)
class Payload:
    """Files written by ``make_payload``.

    ``root`` is what a torrent is made from (a file for a single-file payload, else a directory);
    ``files`` are ``(relative posix path, size)``; for a single file the path is its name.
    """

    root: Path
    files: tuple[tuple[str, int], ...]
    multi_file: bool

    @property
    def total_size(self) -> int:
        return sum(size for _, size in self.files)

    def path_of(self, rel: str) -> Path:
        return self.root if not self.multi_file else self.root / rel

    def digests(self) -> dict[str, str]:
        """sha256 of every file, by relative path."""
        return {rel: sha256_file(self.path_of(rel)) for rel, _ in self.files}


def deterministic_bytes(seed: int, label: str, size: int, chunk: int = 16 << 20) -> Iterator[bytes]:
    """``size`` pseudo-random bytes, a pure function of ``(seed, label)``, in chunks."""
    import random

    rng = random.Random(hashlib.sha256(f"{seed}\0{label}".encode()).digest())
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def make_payload(
    directory: Path,
    layout: int | str | Sequence[tuple[str, int]] = "multi",
    seed: int = 0,
    name: str = "payload",
) -> Payload:
    """Write a deterministic payload under ``directory`` and describe it.

    ``layout``: an int N is one file ``<name>.bin`` of N bytes; ``"multi"`` is ``MULTI_LAYOUT``;
    a sequence of ``(relative path, size)`` is a custom tree.  Multi-file payloads go to
    ``directory/<name>/``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(layout, int):
        path = directory / f"{name}.bin"
        with path.open("wb") as f:
            for block in deterministic_bytes(seed, path.name, layout):
                f.write(block)
        return Payload(path, ((path.name, layout),), multi_file=False)
    if isinstance(layout, str):
        if layout != "multi":
            raise ValueError(f"unknown layout {layout!r}")
        files = MULTI_LAYOUT
    else:
        files = tuple(layout)
    root = directory / name
    for rel, size in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            for block in deterministic_bytes(seed, rel, size):
                f.write(block)
    return Payload(root, tuple((rel, size) for rel, size in files), multi_file=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def assert_same_tree(payload: Payload, download_dir: Path) -> None:
    """Every payload file exists under ``download_dir/<root name>`` with identical bytes."""
    base = download_dir / payload.root.name
    for rel, size in payload.files:
        got = base if not payload.multi_file else base / rel
        assert got.is_file(), f"missing {got}"
        assert got.stat().st_size == size, f"{got}: size {got.stat().st_size} != {size}"
        assert sha256_file(got) == sha256_file(payload.path_of(rel)), f"{got}: content differs"
        figures.record("bytes verified", size)


# --------------------------------------------------------------------------- torrents


@dataclass(frozen=True)
class TorrentFile:
    """A .torrent written by ``make_torrent``; ``info_hash`` is the v1 SHA-1 (BEP 3)."""

    path: Path
    info_hash: bytes
    piece_length: int
    total_size: int
    num_pieces: int

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()

    def magnet(self, trackers: Sequence[str] = ()) -> str:
        """A BEP 9 magnet link for this torrent (``xt=urn:btih:<hex>``, optional ``tr``)."""
        parts = [f"xt=urn:btih:{self.info_hash_hex}"]
        parts += [f"tr={urllib.parse.quote(t, safe='')}" for t in trackers]
        return "magnet:?" + "&".join(parts)


def read_torrent(path: Path) -> TorrentFile:
    """Summarise a .torrent (canonical bencoding assumed, as mktorrent and we write it)."""
    meta = fastbencode.bdecode(path.read_bytes())
    info = meta[b"info"]
    if b"files" in info:
        total = sum(int(f[b"length"]) for f in info[b"files"])
    else:
        total = int(info[b"length"])
    plen = int(info[b"piece length"])
    return TorrentFile(
        path=path,
        info_hash=hashlib.sha1(fastbencode.bencode(info)).digest(),
        piece_length=plen,
        total_size=total,
        num_pieces=len(info[b"pieces"]) // 20,
    )


def make_torrent(
    content: Path,
    out: Path | None = None,
    *,
    piece_length: int = 32768,
    trackers: Sequence[str | Sequence[str]] = (),
    private: bool = False,
    name: str | None = None,
    web_seeds: Sequence[str] = (),
) -> TorrentFile:
    """Make a v1 .torrent of ``content`` with ``mktorrent`` (Debian; 32 KiB .. 256 MiB pieces).

    ``trackers``: one entry per BEP 12 tier, each a URL or a sequence of URLs.  No creation
    date is written, so the result is a pure function of the arguments and the content.
    """
    if piece_length & (piece_length - 1) or not (1 << 15) <= piece_length <= (1 << 28):
        raise ValueError("mktorrent needs a power-of-two piece length in [32 KiB, 256 MiB]")
    out = out if out is not None else content.parent / f"{content.name}.torrent"
    if out.exists():
        out.unlink()
    cmd = ["mktorrent", "-d", "-l", str(piece_length.bit_length() - 1), "-o", str(out)]
    for tier in trackers:
        cmd += ["-a", tier if isinstance(tier, str) else ",".join(tier)]
    for url in web_seeds:
        cmd += ["-w", url]
    if private:
        cmd.append("-p")
    if name is not None:
        cmd += ["-n", name]
    cmd.append(str(content))
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise HarnessError(f"mktorrent failed ({res.returncode}): {res.stdout}{res.stderr}")
    return read_torrent(out)


# --------------------------------------------------------------------------- opentracker


class Opentracker:
    """Debian's opentracker on ``host:port`` for HTTP (BEP 3) and UDP (BEP 15) announces.

    Debian builds it whitelist-only, so ``allow()`` each torrent before a client announces it;
    ``allow`` returns once the tracker really accepts the hash (it reloads on SIGHUP).
    Use as a context manager; the process is killed on exit.
    """

    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        require_isolated_network()
        self.workdir = workdir
        self.host = host
        self.port = port if port is not None else free_port(host)
        # Run as root, opentracker drops to "nobody" after start-up and re-reads the whitelist
        # as nobody on SIGHUP: keep it in a world-readable directory of its own (pytest's
        # tmp_path is 0700).
        self._whitelist_dir = Path(tempfile.mkdtemp(prefix="torrentfs-opentracker-"))
        os.chmod(self._whitelist_dir, 0o755)
        self.whitelist = self._whitelist_dir / "whitelist"
        self.log_path = workdir / "opentracker.log"
        self._allowed: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}/announce"

    @property
    def udp_url(self) -> str:
        return f"udp://{self.host}:{self.port}/announce"

    def __enter__(self) -> Opentracker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_whitelist()
        with self.log_path.open("wb") as log:
            # cwd "/": opentracker chroots to its working directory when run as root, and the
            # whitelist is re-read by absolute path on SIGHUP.
            self._proc = subprocess.Popen(
                ["opentracker", "-i", self.host, "-p", str(self.port), "-P", str(self.port),
                 "-w", str(self.whitelist)],
                stdout=log, stderr=subprocess.STDOUT, cwd="/",
            )  # fmt: skip
        try:
            wait_port(self.host, self.port, proc=self._proc)
        except HarnessError as exc:
            self.stop()
            raise HarnessError(f"opentracker: {exc}; log: {self.log()}") from None

    def _write_whitelist(self) -> None:
        # Never empty: opentracker mmaps the file and cannot load a zero-length one.
        self.whitelist.write_text("".join(h + "\n" for h in ["0" * 40, *self._allowed]))
        self.whitelist.chmod(0o644)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, grace=2)
            self._proc = None
        shutil.rmtree(self._whitelist_dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def allow(self, info_hash: bytes | str, timeout: float = 10.0) -> None:
        """Whitelist a v1 info-hash and wait until announces for it are authorised."""
        hexhash = info_hash.hex() if isinstance(info_hash, bytes) else info_hash.lower()
        if hexhash in self._allowed:
            return
        self._allowed.append(hexhash)
        self._write_whitelist()
        if self._proc is None:
            return
        # SIGHUP makes opentracker re-read the whitelist. Only its whitelist thread leaves
        # SIGHUP unblocked, and it takes the signal with sigwait(); the signal's disposition is
        # the default one, so a SIGHUP that arrives while that thread is anywhere else (still
        # starting, or re-reading after an earlier SIGHUP) kills the tracker (CI: a tracker
        # gone mid-announce, "connection reset"). Send one only while the thread waits.
        deadline = time.monotonic() + timeout
        while True:
            self._wait_sigwait(deadline)
            self._proc.send_signal(signal.SIGHUP)
            for _ in range(10):
                if self._authorised(bytes.fromhex(hexhash)):
                    return
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise HarnessError(f"opentracker did not accept {hexhash} after SIGHUP")

    def _wait_sigwait(self, deadline: float) -> None:
        """Return once a thread of opentracker that does not block SIGHUP sits in sigwait()."""
        assert self._proc is not None
        tasks = Path(f"/proc/{self._proc.pid}/task")
        while True:
            if self._proc.poll() is not None:
                raise HarnessError(f"opentracker exited ({self._proc.returncode}): {self.log()}")
            for task in tasks.glob("*"):
                with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
                    status = (task / "status").read_text()
                    blocked = next(ln for ln in status.splitlines() if ln.startswith("SigBlk:"))
                    hup_blocked = int(blocked.split()[1], 16) & (1 << (signal.SIGHUP - 1))
                    if not hup_blocked and "sigtimedwait" in (task / "wchan").read_text():
                        return
            if time.monotonic() > deadline:
                raise HarnessError("opentracker's whitelist thread never waited for SIGHUP")
            time.sleep(0.002)

    def _get(self, path: str, params: dict[str, str | int | bytes]) -> dict[bytes, Any]:
        # quote, not quote_plus: opentracker does not read '+' as a space (0x20) in a hash.
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        url = f"http://{self.host}:{self.port}/{path}?{query}"
        # A connection reset or cut (seen now and then under load) is retried: every request
        # here is idempotent, and one lost connection must not end a test that polls the
        # tracker hundreds of times. An HTTP error status is an answer, never retried.
        # Resets came in bursts right after a start or a SIGHUP reload (seen in scripts/bench
        # stream; likely the SIGHUP deaths ``allow`` now avoids): keep retrying for up to 15 s.
        deadline = time.monotonic() + 15
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = resp.read()
                break
            except urllib.error.HTTPError:
                raise
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                dead = self._proc is not None and self._proc.poll() is not None
                if dead or time.monotonic() > deadline:
                    raise HarnessError(f"opentracker {path}: {exc}; log: {self.log()}") from exc
                attempt += 1
                time.sleep(min(0.1 * attempt, 1.0))
        decoded = fastbencode.bdecode(body)
        assert isinstance(decoded, dict)
        return decoded

    def _authorised(self, info_hash: bytes) -> bool:
        # A real announce is the only request opentracker checks against the whitelist (a
        # 'stopped' one is not).  It registers 127.0.0.1:1 as a seed, removed right after.
        params: dict[str, str | int | bytes] = {
            "info_hash": info_hash, "peer_id": b"-HARNESS-00000000000", "port": 1,
            "uploaded": 0, "downloaded": 0, "left": 0, "compact": 1, "numwant": 0,
        }  # fmt: skip
        reply = self._get("announce", params)
        if b"failure reason" in reply:
            return False
        self._get("announce", {**params, "event": "stopped"})
        return True

    def scrape(self, info_hash: bytes) -> dict[str, int]:
        """BEP 48 scrape: ``{"complete", "incomplete", "downloaded"}`` for one torrent."""
        reply = self._get("scrape", {"info_hash": info_hash})
        entry = reply.get(b"files", {}).get(info_hash, {})
        return {k.decode(): int(v) for k, v in entry.items() if isinstance(v, int)}

    def wait_seeders(self, info_hash: bytes, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until the tracker counts at least ``count`` seeders for ``info_hash``."""
        deadline = time.monotonic() + timeout
        while self.scrape(info_hash).get("complete", 0) < count:
            if time.monotonic() > deadline:
                raise HarnessError(f"tracker never saw {count} seeder(s); log: {self.log()}")
            time.sleep(0.05)


# --------------------------------------------------------------------------- libtorrent peer


class LibtorrentPeer:
    """``tests/peers/lt_peer.py`` (python3-libtorrent 2.0) as a subprocess on its own address.

    ``start()`` returns once the peer printed its ``ready`` line (``self.port`` then holds the
    listen port); ``wait_done()`` waits for a leecher's result; ``stop()`` terminates it.  All of
    its stdout JSON lines are kept in ``events``, its stderr in ``stderr_text()``.
    """

    def __init__(
        self,
        mode: str,
        torrent: Path | str,
        directory: Path,
        *,
        host: str | None = None,
        port: int = 0,
        extra_args: Sequence[str] = (),
        log_dir: Path | None = None,
    ) -> None:
        require_isolated_network()
        if mode not in ("seed", "leech", "dht"):
            raise ValueError(mode)
        self.mode = mode
        self.host = host if host is not None else next_loopback()
        self.port = port
        self.torrent = str(torrent)
        self.directory = directory
        self.extra_args = list(extra_args)
        self.log_dir = log_dir if log_dir is not None else directory.parent
        self.stderr_path = self.log_dir / f"lt_peer-{mode}-{self.host}.stderr"
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def address_text(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.mode == "dht":  # a pure DHT node: no torrent, no directory
            listen = ["--listen", f"{self.host}:{self.port}"]
            return [SYSTEM_PYTHON, str(LT_PEER), "dht", *listen, *self.extra_args]
        where = ["--data" if self.mode == "seed" else "--out", str(self.directory)]
        return [
            SYSTEM_PYTHON, str(LT_PEER), self.mode, self.torrent, *where,
            "--listen", f"{self.host}:{self.port}", *self.extra_args,
        ]  # fmt: skip

    def __enter__(self) -> LibtorrentPeer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
            )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        ready = self.wait_event("ready", timeout)
        self.port = int(ready["port"])

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"event": "garbage", "line": raw.decode(errors="replace")}
            self._lines.put(obj)
        self._lines.put(None)

    def wait_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next stdout JSON object whose ``event`` is ``name`` (error events raise)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(
                    f"lt_peer {self.mode}: no {name!r} within {timeout} s" + self._ctx()
                )
            try:
                obj = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if obj is None:
                self._lines.put(None)  # keep the end-of-stream marker for later waits
                code = self._proc.wait() if self._proc is not None else None
                raise HarnessError(
                    f"lt_peer {self.mode} exited ({code}) before {name!r}" + self._ctx()
                )
            self.events.append(obj)
            if obj.get("event") == name:
                return obj
            if obj.get("event") == "error":
                raise HarnessError(f"lt_peer {self.mode} failed: {obj}" + self._ctx())

    def wait_done(self, timeout: float = 120.0) -> dict[str, Any]:
        """A leecher's final stats; raises unless it completed and exited 0."""
        done = self.wait_event("done", timeout)
        if "--keep-seeding" not in self.extra_args:
            assert self._proc is not None
            try:
                code = self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise HarnessError("lt_peer leech did not exit after done" + self._ctx()) from None
            if code != 0:
                raise HarnessError(f"lt_peer leech exited {code}: {done}" + self._ctx())
        return done

    def drain_events(self) -> list[dict[str, Any]]:
        """Collect the stdout JSON lines received so far (without waiting); all of ``events``."""
        while True:
            try:
                obj = self._lines.get_nowait()
            except queue.Empty:
                return self.events
            if obj is None:
                self._lines.put(None)
                return self.events
            self.events.append(obj)

    def wait_stderr(self, text: str, timeout: float = 60.0) -> None:
        """Wait until ``text`` appears in the peer's stderr (libtorrent's log of an alert)."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr_text():
            if time.monotonic() > deadline:
                raise HarnessError(f"lt_peer {self.mode}: {text!r} not logged" + self._ctx())
            if self._proc is not None and self._proc.poll() is not None:
                if text in self.stderr_text():
                    return
                raise HarnessError(f"lt_peer {self.mode} exited before {text!r}" + self._ctx())
            time.sleep(0.05)

    def stop(self) -> int | None:
        """Terminate (SIGTERM, then SIGKILL) and reap; the exit status, or None if never run."""
        if self._proc is None:
            return None
        code = stop_process(self._proc)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        return code

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _ctx(self) -> str:
        tail = self.stderr_text()[-4000:]
        return f"\n  command: {' '.join(self.command())}\n  stderr:\n{tail}"


PeerFactory = Callable[..., LibtorrentPeer]
"""The type of the ``lt_seeder_factory`` / ``lt_leecher_factory`` fixtures."""
