"""fstab and ``mount``: the real ``mount -t fuse.torrentfs`` and ``mount.fuse3`` paths (issue 6).

``mount(8)`` runs ``mount.fuse3``, which runs ``/bin/sh -c 'torrentfs SOURCE MOUNTPOINT -o OPTS'``.
mount(8) drops ``PATH`` from the environment, so the shell finds ``torrentfs`` on its built-in
standard path only: for the ``mount -t`` tests a temp dir holding a ``torrentfs`` symlink to
the venv's script is bind-mounted on ``/usr/local/sbin`` (empty on Debian) inside the test's
mount namespace, and detached at teardown. ``mount.fuse3`` called directly keeps ``PATH``.

Every test checks an observable verdict: the torrent is listed the moment ``mount`` returns
(no polling), a bad option fails with one line and exit status 2, ``umount`` ends the process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from swarm import make_payload, make_torrent

pytestmark = [pytest.mark.mount]

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
STD_SBIN = Path("/usr/local/sbin")


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def mount_pids(mountpoint: Path) -> list[int]:
    """Processes (not zombies) whose command line names ``mountpoint``: the daemon."""
    pids = []
    needle = str(mountpoint).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if needle in argv and state != "Z" and any(b"torrentfs" in a for a in argv):
            pids.append(int(entry))
    return pids


def wait_gone(pids: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:  # our child when pytest is the namespace's init: reap it
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rpartition(")")[2].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"process {pid} still running after umount")
            time.sleep(0.05)


class Place:
    """A metainfo dir holding one settled .torrent, a mount point, data and state dirs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.metainfo = tmp / "meta"
        self.mnt = tmp / "mnt"
        self.data = tmp / "data"
        self.state = tmp / "state"
        self.log = tmp / "torrentfs.log"
        for d in (self.metainfo, self.mnt):
            d.mkdir()
        payload = make_payload(tmp / "src", 100_000, name="movie")
        torrent = make_torrent(payload.root, self.metainfo / "movie.torrent")
        old = time.time() - 60  # settled: the first pass of the folder takes it
        os.utime(torrent.path, (old, old))

    def options(self, *extra: str) -> str:
        return ",".join(
            [
                *extra,
                f"download_dir={self.data}",
                f"state_dir={self.state}",
                "listen=127.0.0.1:0",
                "dht=false",
                f"log_file={self.log}",
            ]
        )


@pytest.fixture
def place(tmp_path: Path, isolated_network: None) -> Iterator[Place]:
    p = Place(tmp_path)
    try:
        yield p
    finally:
        pids = mount_pids(p.mnt)
        if is_mounted(p.mnt):
            subprocess.run(["umount", "-l", str(p.mnt)], check=False)
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        wait_gone(pids)


@pytest.fixture
def torrentfs_on_std_path(tmp_path: Path, isolated_network: None) -> Iterator[None]:
    """``torrentfs`` on the shell's standard PATH, in this mount namespace only."""
    if any(STD_SBIN.iterdir()):
        pytest.fail(f"{STD_SBIN} is not empty; refusing to hide it", pytrace=False)
    shadow = tmp_path / "sbin"
    shadow.mkdir()
    (shadow / "torrentfs").symlink_to(VENV_BIN / "torrentfs")
    subprocess.run(["mount", "--bind", str(shadow), str(STD_SBIN)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(STD_SBIN)], check=True)


def test_mount_t_fuse_torrentfs_returns_with_the_tree_visible_and_umount_ends_it(
    place: Place, torrentfs_on_std_path: None
) -> None:
    out = subprocess.run(
        ["mount", "-t", "fuse.torrentfs", str(place.metainfo), str(place.mnt),
         "-o", place.options("allow_other", "nofail", "_netdev", "x-systemd.automount")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + place.log.read_text(errors="replace")
    # No waiting: mount returned only once the folder's first pass was in the tree.
    assert os.listdir(place.mnt) == ["movie.bin"]
    assert (place.mnt / "movie.bin").stat().st_size == 100_000
    line = next(
        ln for ln in Path("/proc/self/mounts").read_text().splitlines() if str(place.mnt) in ln
    )
    fields = line.split()
    assert fields[0] == "torrentfs" and fields[2] == "fuse.torrentfs"
    assert "allow_other" in fields[3].split(",") and "ro" in fields[3].split(",")
    pids = mount_pids(place.mnt)
    assert len(pids) == 1, pids
    subprocess.run(["umount", str(place.mnt)], check=True, timeout=30)
    wait_gone(pids)
    assert not is_mounted(place.mnt)
    assert "unmounted from outside" in place.log.read_text()


def test_fstab_line_via_mount_fuse3(place: Place) -> None:
    # /srv/torrents /mnt/torrents fuse.torrentfs defaults,allow_other,download_dir=... 0 0
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    out = subprocess.run(
        ["mount.fuse3", str(place.metainfo), str(place.mnt), "-t", "fuse.torrentfs",
         "-o", place.options("defaults", "allow_other", "rw", "dev", "suid", "noatime")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + place.log.read_text(errors="replace")
    assert os.listdir(place.mnt) == ["movie.bin"]
    assert (place.data).is_dir() and (place.state).is_dir()  # the -o settings were used
    pids = mount_pids(place.mnt)
    subprocess.run(["umount", str(place.mnt)], check=True, timeout=30)
    wait_gone(pids)
    assert not is_mounted(place.mnt)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("bogus", "torrentfs: -o bogus: unknown mount option"),
        ("read_timeout=soon", "torrentfs: -o read_timeout=soon: not a number: 'soon'"),
        ("download_dir", "torrentfs: -o download_dir: needs a value (download_dir=...)"),
    ],
)
def test_bad_option_fails_with_one_line(place: Place, option: str, message: str) -> None:
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    out = subprocess.run(
        ["mount.fuse3", str(place.metainfo), str(place.mnt), "-t", "fuse.torrentfs",
         "-o", place.options(option)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [message]
    assert not is_mounted(place.mnt)


def test_daemon_reports_a_failed_mount_to_the_caller(place: Place) -> None:
    # The mount point is a file: the child fails after forking; the parent says why.
    target = place.tmp / "file"
    target.write_text("")
    out = subprocess.run(
        [str(VENV_BIN / "torrentfs"), str(place.metainfo), str(target), "-o", place.options()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"torrentfs: {target}: not a directory"]
    wait_gone(mount_pids(target))  # the child ends too


def test_foreground_keeps_running_in_the_same_process(place: Place) -> None:
    proc = subprocess.Popen(
        [str(VENV_BIN / "torrentfs"), str(place.metainfo), str(place.mnt), "-f",
         "-o", place.options()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(place.mnt):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no mount after 30 s"
            time.sleep(0.05)
        assert mount_pids(place.mnt) == [proc.pid]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert not is_mounted(place.mnt)
    shutil.rmtree(place.data, ignore_errors=True)
