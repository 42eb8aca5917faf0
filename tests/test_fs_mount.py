"""fs/mount.py helpers without a FUSE mount: the kernel readahead of a mount's device."""

from __future__ import annotations

from pathlib import Path

from torrentfs.fs.mount import set_kernel_readahead


def root_device() -> str:
    """``MAJ:MIN`` of the last mount at ``/`` in /proc/self/mountinfo."""
    device = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                device = fields[2]
    assert device
    return device


def test_readahead_is_written_for_the_mounts_own_device(tmp_path: Path) -> None:
    knob = tmp_path / root_device() / "read_ahead_kb"
    knob.parent.mkdir()
    knob.write_text("128\n")
    assert set_kernel_readahead(Path("/"), 8 << 20, sysfs=tmp_path) == 8 << 20
    assert knob.read_text() == "8192\n"
    assert set_kernel_readahead(Path("/"), 100, sysfs=tmp_path) == 4096  # at least one page


def test_no_device_or_no_permission_is_none_not_an_error(tmp_path: Path) -> None:
    assert set_kernel_readahead(tmp_path / "not-a-mount", 8 << 20, sysfs=tmp_path) is None
    assert set_kernel_readahead(Path("/"), 8 << 20, sysfs=tmp_path / "no-sysfs") is None
