"""``torrentfs status`` without a mount: the document's pages, reading them back, rendering,
states, and finding torrentfs mounts. (Against live mounts: tests/test_production.py.)"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from torrentfs.status import (
    MAX_PAGE,
    STATUS_XATTR,
    StatusError,
    paginate,
    read_status,
    render,
    state_of,
    torrentfs_mounts,
)


def doc(count: int, name_len: int = 10) -> dict[str, Any]:
    return {
        "version": 1,
        "pid": 1,
        "budget": {"limit": 100 << 20, "used": 25 << 20, "evicted_pieces": 0, "evicted_bytes": 0},
        "totals": {"torrents": count, "peers": 0, "download_rate": 0, "upload_rate": 0},
        "torrents": [
            {
                "name": f"{i:05d}" + "n" * name_len,
                "info_hash": f"{i:040x}",
                "state": "idle",
                "progress": 0.5,
                "download_rate": 1024,
                "upload_rate": 0,
                "peers": 1,
                "disk_used": 1 << 20,
                "pinned": i == 0,
                "error": "disk full" if i == 1 else None,
            }
            for i in range(count)
        ],
    }


def test_pages_stay_under_the_xattr_limit_and_merge_back() -> None:
    original = doc(1000, name_len=200)
    pages = paginate(original)
    assert len(pages) > 1
    assert all(len(p) <= MAX_PAGE for p in pages)
    values = {STATUS_XATTR: pages[0]} | {f"{STATUS_XATTR}.{i}": p for i, p in enumerate(pages)}

    def getxattr(path: str, name: str) -> bytes:
        assert path == "/mnt/x"
        try:
            return values[name]
        except KeyError:
            raise OSError(errno.ENODATA, "No data") from None

    merged = read_status(Path("/mnt/x"), getxattr)
    assert [t["info_hash"] for t in merged["torrents"]] == [
        t["info_hash"] for t in original["torrents"]
    ]
    assert merged["budget"] == original["budget"] and merged["mountpoint"] == "/mnt/x"
    one = paginate(doc(2))
    assert len(one) == 1 and json.loads(one[0])["pages"] == 1


def test_not_a_torrentfs_mount_is_one_clear_error() -> None:
    def no_attr(path: str, name: str) -> bytes:
        raise OSError(errno.ENODATA, "No data available")

    with pytest.raises(StatusError, match="not a torrentfs mount"):
        read_status(Path("/"), no_attr)
    with pytest.raises(StatusError, match="not JSON"):
        read_status(Path("/"), lambda p, n: b"{oops")


def test_render_shows_bars_rates_state_and_budget() -> None:
    lines = render({**doc(2), "mountpoint": "/mnt/t"})
    assert lines[0].startswith("/mnt/t: 2 torrents, disk 25.0 MiB of 100 MiB [##--------]")
    assert "[##########----------]   50.0%  idle (pinned)" in lines[1]
    assert "down 1.00 KiB/s" in lines[1] and lines[1].endswith("00000nnnnnnnnnn")
    assert lines[-1].strip() == "error: disk full"
    no_budget = render({"torrents": [], "budget": {"limit": None, "used": 0}})
    assert "(no budget)" in no_budget[0]
    evil = render({"torrents": [{"name": "a\x1b[2Jb", "progress": 2.0}]})
    assert "\x1b" not in evil[1] and "[####################]" in evil[1]


def test_states() -> None:
    base = dict(placeholder=False, error=None, complete=False, upload=True, open_files=0,
                missing_wanted=0)  # fmt: skip
    assert state_of(**{**base, "placeholder": True}) == "fetching metadata"  # type: ignore[arg-type]
    assert state_of(**{**base, "error": "x"}) == "error"  # type: ignore[arg-type]
    assert state_of(**{**base, "complete": True}) == "seeding"  # type: ignore[arg-type]
    assert state_of(**{**base, "complete": True, "upload": False}) == "complete"  # type: ignore[arg-type]
    assert state_of(**{**base, "open_files": 1}) == "streaming"  # type: ignore[arg-type]
    assert state_of(**{**base, "missing_wanted": 3}) == "downloading"  # type: ignore[arg-type]
    assert state_of(**base) == "idle"  # type: ignore[arg-type]


def test_finds_torrentfs_mounts_with_escaped_names(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "proc /proc proc rw 0 0\n"
        "torrentfs /mnt/my\\040films fuse.torrentfs ro,nosuid 0 0\n"
        "sshfs /mnt/remote fuse.sshfs rw 0 0\n"
    )
    assert torrentfs_mounts(str(mounts)) == [Path("/mnt/my films")]
    with pytest.raises(StatusError):
        torrentfs_mounts(str(tmp_path / "missing"))
