"""Magnets in a real mount (DESIGN.md §4 tier 6): a ``.magnet`` file with only ``x.pe`` pointing
at a python3-libtorrent seeder shows at once as a directory ("fetching metadata"), fills in
when the metadata is verified (BEP 9) without a remount, serves byte-exact content, comes back
after a restart without asking any peer, and gives way to a ``.torrent`` of the same info-hash.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from swarm import (
    MULTI_LAYOUT,
    LibtorrentPeer,
    free_port,
    make_payload,
    make_torrent,
    next_loopback,
    sha256_file,
)
from test_mount import mount_factory, wait_for

pytestmark = [pytest.mark.mount, pytest.mark.interop]

__all__ = ["mount_factory"]  # the fixture, imported for these tests


def status(path: Path) -> str:
    return os.getxattr(path, "user.torrentfs.status").decode()


def test_magnet_fills_in_while_mounted_and_survives_a_restart(
    tmp_path: Path, mount_factory: Any, isolated_network: None
) -> None:
    payload = make_payload(tmp_path / "src", "multi", seed=11)
    torrent = make_torrent(payload.root, tmp_path / "t.torrent", piece_length=32768)
    host = next_loopback()
    port = free_port(host)
    seeder = LibtorrentPeer("seed", torrent.path, payload.root.parent, host=host, port=port,
                            log_dir=tmp_path / "logs")  # fmt: skip
    try:
        m = mount_factory("--read-timeout", "60")
        uri = f"{torrent.magnet()}&dn=Magnetic&x.pe={host}:{port}"
        (m.metainfo_dir / "film.magnet").write_text(uri + "\n")
        top = m.wait_entry("Magnetic")
        # No peer is listening yet: the directory is there, empty, fetching metadata.
        assert os.listdir(top) == [] and status(top) == "fetching metadata"
        assert os.getxattr(top, "user.torrentfs.magnet").decode() == uri
        # A lookup inside it waits for the metadata instead of failing.
        first = MULTI_LAYOUT[0][0]
        found: dict[str, str] = {}

        def read_first() -> None:
            found["sha"] = sha256_file(top / first)

        reader = threading.Thread(target=read_first)
        reader.start()
        seeder.start()
        reader.join(120)
        assert found.get("sha") == sha256_file(payload.root / first), m.log()[-3000:]
        assert status(top) in ("ready", "downloading")
        for rel, size in MULTI_LAYOUT:
            assert (top / rel).stat().st_size == size
            out = subprocess.run(["sha256sum", str(top / rel)], capture_output=True, check=True)
            assert out.stdout.split()[0].decode() == sha256_file(payload.root / rel), rel
        assert "metadata (" in m.log() and "verified" in m.log()
        # Restart with no peer at all: the metadata comes from the state dir.
        m.stop()
        seeder.stop()
        m.start()
        top = m.wait_entry("Magnetic")
        wait_for("the magnet to fill in", lambda: os.listdir(top) != [])
        assert status(top) != "fetching metadata"
        assert sha256_file(top / first) == sha256_file(payload.root / first)  # on disk already
        # A .torrent of the same info-hash supersedes the magnet.
        m.add(torrent.path)
        m.wait_entry("payload")
        m.wait_entry("Magnetic", present=False)
        assert sha256_file(m.mountpoint / "payload" / first) == sha256_file(payload.root / first)
    finally:
        seeder.stop()


def test_magnet_whose_metadata_never_comes_times_out_lookups(
    tmp_path: Path, mount_factory: Any, isolated_network: None
) -> None:
    m = mount_factory("--read-timeout", "2")
    h = "cd" * 20
    (m.metainfo_dir / "x.magnet").write_text(f"magnet:?xt=urn:btih:{h}\n")
    top = m.wait_entry(h)
    assert status(top) == "fetching metadata"
    with pytest.raises(FileNotFoundError):
        (top / "anything").stat()
    (m.metainfo_dir / "x.magnet").unlink()
    m.wait_entry(h, present=False)
    assert m.proc is not None and m.proc.poll() is None
