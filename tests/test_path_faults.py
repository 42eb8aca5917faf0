"""Unit regressions for path faults found by the mount tests (issue 7): a symlink planted in the
download dir must not break adding a torrent; a magnet's ``dn`` must not break the listing."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from test_storage import build_torrent, write_all

from torrentfs.fs.tree import FsTree
from torrentfs.storage.files import FileStore, UnsafePath
from torrentfs.storage.resume import recheck


async def test_recheck_treats_a_planted_symlink_as_missing_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"precious" * 100)
    m, data = build_torrent([("x", 500), ("y", 300)], 256)
    good = tmp_path / "good"
    store = FileStore(good, m)
    await write_all(store, m, data)
    await store.aclose()
    root = tmp_path / "root"
    (root / "t").mkdir(parents=True)
    os.rename(good / "t" / "y", root / "t" / "y")
    (root / "t" / "x").symlink_to(victim)  # was: recheck raised (an ExceptionGroup) out of add
    store = FileStore(root, m)
    with caplog.at_level(logging.WARNING, logger="torrentfs.storage.resume"):
        found = await recheck(store, m)
    await store.aclose()
    # Pieces 0 and 1 lie in x (the link): not found; pieces 2 and 3 (only in y) verify.
    assert [i for i in range(m.num_pieces) if found[i]] == [2, 3]
    assert len(caplog.records) == 1 and "not a regular file" in caplog.records[0].getMessage()
    assert victim.read_bytes() == b"precious" * 100


@pytest.mark.parametrize(
    ("dn", "shown"),
    [("../../x", ".._.._x"), ("a/b", "a_b"), ("..", "ab" * 20), ("", "ab" * 20), ("ok", "ok")],
)
def test_a_magnet_dn_becomes_one_safe_name(dn: str, shown: str) -> None:
    tree = FsTree(mount_time=0)
    top = tree.add_placeholder(bytes.fromhex("ab" * 20), dn)
    assert top.name == shown.encode()


async def test_a_directory_symlink_is_refused_with_eloop(tmp_path: Path) -> None:
    """A reader must see "too many levels of symbolic links", not ENOTDIR ("not a directory")."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "t").symlink_to(outside, target_is_directory=True)
    m, data = build_torrent([("x", 500), ("y", 300)], 256)
    store = FileStore(root, m)
    with pytest.raises(UnsafePath) as info:
        await store.write_piece(0, data[:256])
    await store.aclose()
    assert info.value.errno == errno.ELOOP
    assert list(outside.iterdir()) == []
