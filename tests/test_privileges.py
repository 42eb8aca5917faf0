"""Paths and privileges (issue 7), on real mounts.

* Nothing a torrent, magnet or peer sends makes torrentfs read or write outside its download and
  state dirs, symlinks planted in the download dir included (file and directory links, planted
  before the start or while mounted).
* The mount is private to its owner unless ``allow_other`` is given (``setpriv`` as nobody).
* Running as root is not required: an unprivileged user mounts through ``fusermount3`` when
  ``/dev/fuse`` lets it (mode 0666, Debian's default). This machine's ``/dev/fuse`` is 0600; the
  test shows the precise failure that gives, then gives the test's private mount namespace a
  Debian-like 0666 node (bind-mounted over ``/dev/fuse``, invisible outside) and mounts as
  ``nobody``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swarm import Opentracker, PeerFactory, make_payload, make_torrent
from test_faults import log_lines, mounts, private_mount_namespace, read_errno, tmpfs
from test_mount import REPO, TorrentfsMount, is_mounted, wait_for

from torrentfs.magnet import parse_magnet
from torrentfs.metainfo import parse_metainfo

pytestmark = [pytest.mark.mount, pytest.mark.interop]
__all__ = ["mounts"]  # the fixture, shared with test_faults

MiB = 1 << 20
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def fingerprint(path: Path) -> tuple[str, int, int]:
    """Content hash, mtime and size of a file outside our dirs (to prove it was not touched)."""
    st = os.stat(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size


def tree_of(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="torrentfs-priv-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for mnt in path.rglob("mnt"):
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def seeded(
    tmp: Path, tracker: Opentracker, seeder_factory: PeerFactory, layout: Any, name: str
) -> tuple[Path, Path]:
    payload = make_payload(tmp / "src", layout, name=name)
    torrent = make_torrent(payload.root, tmp / f"{name}.torrent", trackers=[tracker.http_url])
    tracker.allow(torrent.info_hash)
    seeder_factory(torrent, payload.root.parent)
    tracker.wait_seeders(torrent.info_hash)
    return payload.root, torrent.path


# --------------------------------------------------------------------------- symlinks


def test_symlinks_planted_in_the_download_dir_are_never_followed(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary"
    canary.write_bytes(b"precious, not to be overwritten\n" * 100)
    before = {p: fingerprint(p) for p in (canary, Path("/etc/passwd"))}
    single, single_t = seeded(tmp_path / "s", tracker, lt_seeder_factory, 200_000, "single")
    passwd, passwd_t = seeded(tmp_path / "p", tracker, lt_seeder_factory, 3000, "passwd")
    multi, multi_t = seeded(
        tmp_path / "d", tracker, lt_seeder_factory, [("a.bin", 70_000), ("sub/b.bin", 9)], "multi"
    )
    m = TorrentfsMount(tmp_path / "m", "--read-timeout", "30")
    # Planted before the start: the data file of "passwd.bin" is a link to /etc/passwd.
    (m.download_dir / "passwd.bin").symlink_to("/etc/passwd")
    mounts.append(m)
    m.start()
    for t in (single_t, passwd_t, multi_t):
        m.add(t)
    m.wait_entry("multi")
    # Planted while mounted, before any data arrived: a file link and a directory link.
    (m.download_dir / "single.bin").symlink_to(canary)
    (m.download_dir / "multi").symlink_to(outside, target_is_directory=True)
    codes = {
        name: read_errno(m.wait_entry(name.split("/")[0]) / "/".join(name.split("/")[1:]), 0, 100)
        if "/" in name
        else read_errno(m.wait_entry(name), 0, 100)
        for name in ("single.bin", "passwd.bin", "multi/a.bin", "multi/sub/b.bin")
    }
    assert codes == dict.fromkeys(codes, errno.ELOOP), (codes, m.log())
    assert len(log_lines(m, "refusing")) >= 1 and "Traceback" not in m.log()
    m.stop()
    assert {p: fingerprint(p) for p in before} == before  # not one byte written outside
    assert tree_of(outside) == ["canary"]
    # Nothing was read through the links either: no byte of /etc/passwd reached the mount.
    assert all(os.path.islink(m.download_dir / n) for n in ("single.bin", "passwd.bin", "multi"))
    # Links removed: the same mount serves the real data.
    for n in ("single.bin", "passwd.bin", "multi"):
        os.unlink(m.download_dir / n)
    m.start()
    assert (m.wait_entry("single.bin")).read_bytes() == single.read_bytes()
    assert (m.wait_entry("passwd.bin")).read_bytes() == passwd.read_bytes()
    assert (m.mountpoint / "multi/sub/b.bin").read_bytes() == (multi / "sub/b.bin").read_bytes()


def test_hostile_names_stay_inside_the_download_and_state_dirs(
    tmp_path: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory, mounts: Any
) -> None:
    """A torrent whose name and paths try ``..``, absolute paths and separators, and a magnet
    whose ``dn`` does: whatever shows in the mount, everything on disk is under our dirs."""
    import fastbencode

    from torrentfs.create import make_torrent as make

    src = tmp_path / "src" / "x.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(50_000))
    data, _ = make(src, trackers=[tracker.http_url])
    meta = fastbencode.bdecode(data)
    hostile = []
    for name in (b"..", b"../../escape", b"/etc/cron.d/evil", b"a/../../b", b".\\..\\win"):
        info = dict(meta[b"info"])
        info[b"name"] = name
        hostile.append(fastbencode.bencode({**meta, b"info": info}))
    info = dict(meta[b"info"])
    del info[b"length"]
    info[b"name"] = b"multi"
    info[b"files"] = [
        {b"length": 25_000, b"path": [b"..", b"..", b"up.bin"]},
        {b"length": 25_000, b"path": [b"/", b"etc", b"abs.bin"]},
    ]
    hostile.append(fastbencode.bencode({**meta, b"info": info}))
    m = TorrentfsMount(tmp_path / "work" / "m", "--read-timeout", "3")
    mounts.append(m)
    m.start()
    for i, blob in enumerate(hostile):
        (m.metainfo_dir / f"h{i}.torrent").write_bytes(blob)
        with contextlib.suppress(Exception):
            parse_metainfo(blob)  # what the parser makes of it (or refuses)
    magnet = "magnet:?xt=urn:btih:" + "cd" * 20 + "&dn=..%2F..%2Fdn-escape"
    (m.metainfo_dir / "dn.magnet").write_text(magnet + "\n")
    assert parse_magnet(magnet).display_name is not None
    wait_for("the magnet", lambda: len(os.listdir(m.mountpoint)) >= 1)
    for entry in os.listdir(m.mountpoint):
        assert "/" not in entry and entry not in (".", "..")
        target = m.mountpoint / entry
        if target.is_file():
            read_errno(target, 0, 100)  # no seeder has these: EIO after 3 s, or data
    m.stop()
    before = tmp_path / "work"
    everything = {str(p) for p in before.rglob("*")}
    for path in everything:
        assert path.startswith(
            tuple(str(d) for d in (m.metainfo_dir, m.mountpoint, m.download_dir, m.state_dir))
        ) or path in {str(m.log_path), str(m.metainfo_dir.parent)}, path
    assert {p.name for p in tmp_path.iterdir()} <= {"src", "work", "tracker", "logs"}
    for base in (tmp_path, tmp_path.parent):
        for name in ("escape", "up.bin", "abs.bin", "b", "evil", "dn-escape", "win"):
            assert not (base / name).exists(), base / name
    assert not Path("/etc/cron.d/evil").exists() and not Path("/etc/abs.bin").exists()


# --------------------------------------------------------------------------- privacy


@pytest.mark.parametrize("allow_other", [False, True])
def test_the_mount_is_private_unless_allow_other(
    public_tmp: Path, mounts: Any, allow_other: bool
) -> None:
    extra = ["-o", "allow_other"] if allow_other else []
    m = TorrentfsMount(public_tmp / "m", *extra)
    for d in (m.metainfo_dir.parent, m.mountpoint):
        d.chmod(0o755)
    mounts.append(m)
    m.start()
    src = public_tmp / "one.bin"
    src.write_bytes(b"x" * 1000)
    from torrentfs.create import make_torrent as make

    data, _ = make(src, trackers=[])
    (m.metainfo_dir / "one.torrent").write_bytes(data)
    m.wait_entry("one.bin")
    out = subprocess.run([*AS_NOBODY, "ls", str(m.mountpoint)], capture_output=True, text=True)
    if allow_other:
        assert out.returncode == 0 and out.stdout.split() == ["one.bin"], out
    else:
        assert out.returncode != 0 and "Permission denied" in out.stderr, out
        stat_ = subprocess.run([*AS_NOBODY, "stat", str(m.mountpoint / "one.bin")],
                               capture_output=True, text=True)  # fmt: skip
        assert stat_.returncode != 0 and "Permission denied" in stat_.stderr, stat_


# --------------------------------------------------------------------------- no root needed


@contextlib.contextmanager
def debian_dev_fuse(scratch: Path) -> Iterator[None]:
    """Give this private mount namespace a 0666 ``/dev/fuse`` (Debian's default), as a bind
    mount of a fresh node over the real one; the host's ``/dev/fuse`` is not touched."""
    if not private_mount_namespace():
        pytest.fail("needs a private mount namespace: run through scripts/test", pytrace=False)
    dev = scratch / "dev"
    with tmpfs(dev, "1m"):
        node = dev / "fuse"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(10, 229))
        node.chmod(0o666)
        subprocess.run(["mount", "--bind", str(node), "/dev/fuse"], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", "/dev/fuse"], check=False)


def unprivileged_command(m: TorrentfsMount) -> list[str]:
    return [
        *AS_NOBODY, sys.executable, "-m", "torrentfs", str(m.metainfo_dir), str(m.mountpoint),
        "--download-dir", str(m.download_dir), "--state-dir", str(m.state_dir),
        "--listen", "127.0.0.1:0", "--no-dht", "-f",
    ]  # fmt: skip


def test_an_unprivileged_user_mounts_through_fusermount3(
    public_tmp: Path, tracker: Opentracker, lt_seeder_factory: PeerFactory
) -> None:
    source, torrent = seeded(public_tmp, tracker, lt_seeder_factory, 300_000, "mine")
    m = TorrentfsMount(public_tmp / "m")
    for d in (m.metainfo_dir, m.mountpoint, m.download_dir, m.state_dir):
        os.chown(d, NOBODY, NOBODY)
    m.metainfo_dir.parent.chmod(0o755)
    shutil.copyfile(torrent, m.metainfo_dir / "mine.torrent")
    os.chmod(m.metainfo_dir / "mine.torrent", 0o644)
    env = {**os.environ, "HOME": str(public_tmp)}
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if mode & 0o006 != 0o006:
        # This machine: /dev/fuse is for root only, so libfuse cannot even open it.
        out = subprocess.run(unprivileged_command(m), capture_output=True, text=True,
                             env=env, cwd=REPO, timeout=60)  # fmt: skip
        print(f"/dev/fuse mode {mode:o}: {out.stderr.strip()}")
        assert out.returncode == 2, out
        assert "failed to open /dev/fuse: Permission denied" in out.stderr, out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith("torrentfs: "), out.stderr
    with debian_dev_fuse(public_tmp):
        with m.log_path.open("wb") as log:
            proc = subprocess.Popen(unprivileged_command(m), stdout=log,
                                    stderr=subprocess.STDOUT, env=env, cwd=REPO)  # fmt: skip
        try:
            wait_for("the mount", lambda: "mounted at" in m.log() or proc.poll() is not None)
            assert proc.poll() is None, m.log()
            with open("/proc/self/mountinfo") as f:
                line = next(x for x in f if x.split()[4] == str(m.mountpoint))
            assert f"user_id={NOBODY}" in line and "fuse.torrentfs" in line, line
            # The owner reads it; root, not being allowed (no allow_other), cannot even list it.
            wait_for(
                "the torrent",
                lambda: (
                    "mine.bin"
                    in subprocess.run(
                        [*AS_NOBODY, "ls", str(m.mountpoint)], capture_output=True, text=True
                    ).stdout
                ),
            )
            got = subprocess.run([*AS_NOBODY, "cat", str(m.mountpoint / "mine.bin")],
                                 capture_output=True, timeout=120)  # fmt: skip
            assert got.returncode == 0 and got.stdout == source.read_bytes(), (got.stderr, m.log())
            with pytest.raises(PermissionError):
                os.listdir(m.mountpoint)
            proc.terminate()
            assert proc.wait(30) == 0, m.log()
            assert not is_mounted(m.mountpoint)
            owners = {os.stat(p).st_uid for p in m.download_dir.rglob("*")}
            assert owners == {NOBODY}, owners
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if is_mounted(m.mountpoint):
                subprocess.run(["fusermount3", "-uz", str(m.mountpoint)], check=False)
