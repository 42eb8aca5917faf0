"""Shared pytest set-up: hypothesis profiles, real-swarm fixtures, and a leaked-process check.

* Hypothesis: profile ``ci`` (default) and ``long``, chosen by ``HYPOTHESIS_PROFILE``.  Neither
  has a deadline: timing must never decide whether a test passes (DESIGN.md §4).
* Swarm fixtures (``tracker``, ``lt_seeder_factory``, ``lt_leecher_factory``) come from
  ``tests/swarm.py``.  They fail at once, with the reason, unless the tests run in a network
  namespace with only ``lo`` (``scripts/test``); ``TORRENTFS_ALLOW_HOST_NET=1`` overrides.  Every
  process they start is stopped at teardown, pass or fail.
* At the end of the session, any child process still running is listed, killed, and fails the
  run: a test that leaks a process would otherwise leak it into the next test's swarm.
* The harness figures (cases run, hypothesis examples, faults injected, bytes verified, peak
  memory) are summed by ``tests/figures.py`` and printed at the end (JSON: ``TORRENTFS_FIGURES``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from figures import pytest_runtest_makereport, pytest_terminal_summary
from hypothesis import HealthCheck, settings
from swarm import (
    LibtorrentPeer,
    Opentracker,
    PeerFactory,
    TorrentFile,
    isolation_problem,
)

settings.register_profile(
    "ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", deadline=None, max_examples=5000, suppress_health_check=[HealthCheck.too_slow]
)
__all__ = ["pytest_runtest_makereport", "pytest_terminal_summary"]  # hooks of tests/figures.py

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# --------------------------------------------------------------------------- swarm fixtures


@pytest.fixture(scope="session")
def isolated_network() -> None:
    """Fail (not skip) when the tests can see a network beyond loopback."""
    problem = isolation_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def tracker(isolated_network: None, tmp_path: Path) -> Iterator[Opentracker]:
    """A running opentracker on 127.0.0.1 (HTTP and UDP on one port); ``allow()`` torrents."""
    with Opentracker(tmp_path / "tracker") as t:
        yield t


def _peer_args(
    tracker_less: bool,
    peers: Sequence[LibtorrentPeer | tuple[str, int]],
    extra_args: Sequence[str],
) -> list[str]:
    args: list[str] = ["--tracker-less"] if tracker_less else []
    for p in peers:
        host, port = p.address if isinstance(p, LibtorrentPeer) else p
        args += ["--peer", f"{host}:{port}"]
    return args + list(extra_args)


@pytest.fixture
def lt_seeder_factory(isolated_network: None, tmp_path: Path) -> Iterator[PeerFactory]:
    """``make(torrent, data_dir, *, check=False, trust=False, corrupt=False, tracker_less=False,
    peers=(), extra_args=(), host=None) -> LibtorrentPeer`` — a started libtorrent seeder.

    Plain seeding uses seed_mode (lazy verification); ``check`` hashes everything first;
    ``trust`` never hashes; ``corrupt`` serves whatever bytes ``data_dir`` holds.
    """
    started: list[LibtorrentPeer] = []

    def make(
        torrent: TorrentFile | Path | str,
        data_dir: Path,
        *,
        check: bool = False,
        trust: bool = False,
        corrupt: bool = False,
        tracker_less: bool = False,
        peers: Sequence[LibtorrentPeer | tuple[str, int]] = (),
        extra_args: Sequence[str] = (),
        host: str | None = None,
    ) -> LibtorrentPeer:
        path = torrent.path if isinstance(torrent, TorrentFile) else torrent
        flags = [
            f for f, on in (("--check", check), ("--trust", trust), ("--corrupt", corrupt)) if on
        ]
        peer = LibtorrentPeer(
            "seed",
            path,
            data_dir,
            host=host,
            extra_args=flags + _peer_args(tracker_less, peers, extra_args),
            log_dir=tmp_path / "logs",
        )
        started.append(peer)
        peer.start()
        return peer

    try:
        yield make
    finally:
        for p in started:
            p.stop()


@pytest.fixture
def lt_leecher_factory(isolated_network: None, tmp_path: Path) -> Iterator[PeerFactory]:
    """``make(torrent_or_magnet, out_dir, *, sequential=False, recheck=True, keep_seeding=False,
    tracker_less=False, peers=(), extra_args=(), host=None) -> LibtorrentPeer`` — a started
    libtorrent leecher; ``wait_done()`` gives its JSON stats once it completed and verified.
    """
    started: list[LibtorrentPeer] = []

    def make(
        torrent: TorrentFile | Path | str,
        out_dir: Path,
        *,
        sequential: bool = False,
        recheck: bool = True,
        keep_seeding: bool = False,
        tracker_less: bool = False,
        peers: Sequence[LibtorrentPeer | tuple[str, int]] = (),
        extra_args: Sequence[str] = (),
        host: str | None = None,
    ) -> LibtorrentPeer:
        path = torrent.path if isinstance(torrent, TorrentFile) else torrent
        flags = [
            f
            for f, on in (
                ("--sequential", sequential),
                ("--no-recheck", not recheck),
                ("--keep-seeding", keep_seeding),
            )
            if on
        ]
        peer = LibtorrentPeer(
            "leech",
            path,
            out_dir,
            host=host,
            extra_args=flags + _peer_args(tracker_less, peers, extra_args),
            log_dir=tmp_path / "logs",
        )
        started.append(peer)
        peer.start()
        return peer

    try:
        yield make
    finally:
        for p in started:
            p.stop()


# --------------------------------------------------------------------------- leaked processes


def _live_children() -> dict[int, str]:
    """Direct children of this process that are not zombies: pid -> command line."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            continue
    alive: dict[int, str] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if state != "Z":
            alive[pid] = cmd
    return alive


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = _live_children()
    if not leaked:
        return
    for pid in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    lines = "\n".join(f"  {pid}: {cmd}" for pid, cmd in sorted(leaked.items()))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    msg = f"tests left child processes running (now killed):\n{lines}"
    if reporter is not None:
        reporter.write_line(msg, red=True)
    else:
        print(msg)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
