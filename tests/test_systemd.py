"""The systemd units (issue 6): ``systemd-analyze verify`` on each, sd_notify, and the template
service's real ``ExecStart`` with a ``NOTIFY_SOCKET`` this test listens on.

``systemd-analyze verify`` checks that ``ExecStart`` binaries exist, so it runs in a child mount
namespace (``unshare --mount``) where a temp dir holding ``torrentfs`` is bind-mounted over
``/usr/local/bin``: nothing outside that child process sees it.
"""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from swarm import make_payload, make_torrent

from torrentfs.daemon import Readiness, sd_notify, status_line

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
VENV_BIN = Path(sys.executable).parent
ALL_UNITS = sorted(p for p in UNITS.rglob("*") if p.suffix in (".service", ".mount"))


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def unit_section(path: Path, section: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return dict(parser[section])


def test_every_unit_is_there() -> None:
    names = {str(p.relative_to(UNITS)) for p in ALL_UNITS}
    assert names == {"torrentfs@.service", "user/torrentfs@.service", "mnt-torrents.mount"}


@pytest.mark.parametrize("unit", ALL_UNITS, ids=lambda p: str(p.relative_to(UNITS)))
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "torrentfs").symlink_to(VENV_BIN / "torrentfs")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    user = ["--user"] if unit.parent.name == "user" else []
    script = (
        f"mount --bind {shlex.quote(str(fake_bin))} /usr/local/bin && "
        f"exec systemd-analyze {' '.join(user)} verify --man=no {shlex.quote(str(unit))}"
    )
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr  # unknown keys are warnings only


def test_template_unit_contract() -> None:
    service = unit_section(UNITS / "torrentfs@.service", "Service")
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert "--clear-stale" in service["ExecStartPre"] and service["ExecStartPre"].startswith("-")
    assert "/etc/torrentfs/%i.toml" in service["ExecStart"]
    assert "--foreground" in shlex.split(service["ExecStart"])
    assert service["DeviceAllow"] == "/dev/fuse rw"
    assert "CAP_SYS_ADMIN" in service["CapabilityBoundingSet"]
    assert service["NoNewPrivileges"] == "yes"
    # A private mount namespace would hide the FUSE mount from the host: none of these.
    for hides in ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "PrivateMounts",
                  "PrivateDevices", "ProtectKernelTunables", "ProtectControlGroups"):  # fmt: skip
        assert hides not in service, hides
    mount = unit_section(UNITS / "mnt-torrents.mount", "Mount")
    assert mount["Type"] == "fuse.torrentfs" and mount["Where"] == "/mnt/torrents"


# --------------------------------------------------------------------------- sd_notify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_sd_notify_path_and_abstract_namespace(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    assert sd_notify("READY=1", environ={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1"
    name = f"torrentfs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(10)
        assert sd_notify("STATUS=x", environ={"NOTIFY_SOCKET": "@" + name})
        assert abstract.recv(4096) == b"STATUS=x"
    assert not sd_notify("READY=1", environ={})
    assert not sd_notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1"})


def test_readiness_pipe_says_ok_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from torrentfs.daemon import read_verdict

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    r, w = os.pipe()
    ready = Readiness(w)
    ready.ready()
    ready.failed(2, "too late")  # ignored: the verdict was given
    assert read_verdict(r) == (0, "")
    r, w = os.pipe()
    Readiness(w).failed(2, "mnt: not\na directory")
    assert read_verdict(r) == (2, "mnt: not a directory")
    r, w = os.pipe()
    os.close(w)  # died without a word
    assert read_verdict(r)[0] == 1


def test_status_line_sums_the_torrents() -> None:
    from torrentfs.torrent import TorrentStats

    def stats(peers: int, have: int) -> TorrentStats:
        return TorrentStats("ab" * 20, "x", "downloading", peers, 0, 2048.0, 1024.0, 0, 0,
                            have, 1 << 20, have / (1 << 20), 0, 4, 0, 0)  # fmt: skip

    line = status_line([stats(3, 1 << 20), stats(2, 0)])
    assert line == (
        "2 torrents (1 complete), 5 peers, down 4.0 KiB/s, up 2.0 KiB/s, "
        "1.0 MiB of 2.0 MiB verified"
    )


# --------------------------------------------------------------------------- the ExecStart


def test_execstart_notifies_ready_only_when_mounted_then_status_then_stopping(
    tmp_path: Path, isolated_network: None, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, sock_path = notify_socket
    meta, mnt = tmp_path / "meta", tmp_path / "mnt"
    meta.mkdir()
    mnt.mkdir()
    payload = make_payload(tmp_path / "src", 50_000, name="show")
    torrent = make_torrent(payload.root, meta / "show.torrent")
    os.utime(torrent.path, (1, 1))  # long settled
    cfg = tmp_path / "media.toml"
    cfg.write_text(
        f'metainfo_dir = "{meta}"\nmountpoint = "{mnt}"\nlisten = "127.0.0.1:0"\ndht = false\n'
    )
    service = unit_section(UNITS / "torrentfs@.service", "Service")

    def command(line: str) -> list[str]:
        line = line.lstrip("-")
        line = line.replace("/usr/local/bin/torrentfs", str(VENV_BIN / "torrentfs"))
        line = line.replace("/etc/torrentfs/%i.toml", str(cfg))
        line = line.replace("/var/cache/torrentfs/%i", str(tmp_path / "cache"))
        line = line.replace("/var/lib/torrentfs/%i", str(tmp_path / "state"))
        assert "%" not in line, line
        return shlex.split(line)

    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    pre = subprocess.run(command(service["ExecStartPre"]), env=env, timeout=60)
    assert pre.returncode == 0
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(command(service["ExecStart"]), env=env, stderr=log)
    try:
        messages: list[bytes] = []
        while not any(b"READY=1" in m for m in messages):
            msg = sock.recv(4096)
            if b"READY=1" in msg:
                # At READY=1 the mount is live and the folder is in the tree.
                assert is_mounted(mnt)
                assert os.listdir(mnt) == ["show.bin"]
            messages.append(msg)
        assert proc.poll() is None
        # Progress arrives as STATUS= lines while it runs (every STATUS_INTERVAL seconds).
        while True:
            msg = sock.recv(4096)
            assert b"STOPPING=1" not in msg
            if msg.startswith(b"STATUS="):
                break
        assert b"1 torrents (0 complete)" in msg and b"of 48.8 KiB verified" in msg, msg
        proc.send_signal(signal.SIGTERM)
        while True:
            msg = sock.recv(4096)
            if b"STOPPING=1" in msg:
                break
        assert proc.wait(30) == 0
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
    assert (tmp_path / "state").is_dir() and (tmp_path / "cache").is_dir()
