"""Web seeds through a real mount (tier 6): a torrent whose only source is a local HTTP server
(BEP 19 ``url-list``) streams through ``torrentfs`` with every byte equal to the source; a broken
server gives EIO after the read timeout, never wrong bytes; with a libtorrent seeder as well, reads
succeed whatever the server does."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from swarm import Opentracker, PeerFactory, make_payload, make_torrent, sha256_file
from test_mount import TorrentfsMount
from test_mount import mount_factory as mount_factory  # the fixture: one real-mount harness
from webseed_server import WebSeedServer

pytestmark = [pytest.mark.mount, pytest.mark.interop]

ODD_TREE: tuple[tuple[str, int], ...] = (
    ("a b#1.bin", 100_000),
    ("empty", 0),
    ("sub dir/ünï ✓ %41+&?.txt", 70_001),
    ("sub dir/x.bin", 7),
)


@pytest.mark.parametrize("layout", ["single", "multi"])
def test_a_torrent_served_only_over_http_streams_through_the_mount(
    tmp_path: Path, mount_factory: Callable[..., TorrentfsMount], layout: str
) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        if layout == "single":
            payload = make_payload(www, 3 * 1024 * 1024 + 5, name="odd #name 100%")
        else:
            payload = make_payload(www, ODD_TREE, name="my tree")
        t = make_torrent(payload.root, tmp_path / "w.torrent", web_seeds=[server.url])
        m = mount_factory("--read-timeout", "60")
        m.add(t.path)
        top = m.wait_entry(payload.root.name)
        for rel, size in payload.files:
            got = top if not payload.multi_file else top / rel
            assert got.stat().st_size == size
            assert sha256_file(got) == sha256_file(payload.path_of(rel)), rel
        assert server.requests, "nothing was fetched over HTTP"


@pytest.mark.parametrize("fault", ["404", "corrupt"])
def test_a_broken_web_seed_gives_eio_never_wrong_bytes(
    tmp_path: Path, mount_factory: Callable[..., TorrentfsMount], fault: str
) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        payload = make_payload(www, 300_000, name="broken")
        t = make_torrent(payload.root, tmp_path / "b.torrent", web_seeds=[server.url])
        server.fault = fault
        m = mount_factory("--read-timeout", "4")
        m.add(t.path)
        path = m.wait_entry("broken.bin")
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as info:
                os.pread(fd, 65536, 0)
            assert info.value.errno == errno.EIO
        finally:
            os.close(fd)
        assert "web seed" in m.log()


@pytest.mark.parametrize("fault", [None, "500"])
def test_web_seed_and_libtorrent_seeder_together(
    tmp_path: Path,
    mount_factory: Callable[..., TorrentfsMount],
    tracker: Opentracker,
    lt_seeder_factory: PeerFactory,
    fault: str | None,
) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        payload = make_payload(www, ODD_TREE, name="both")
        t = make_torrent(
            payload.root, tmp_path / "both.torrent", web_seeds=[server.url],
            trackers=[tracker.http_url],
        )  # fmt: skip
        tracker.allow(t.info_hash)
        lt_seeder_factory(t, www)
        tracker.wait_seeders(t.info_hash)
        server.fault = fault
        server.rate = 200_000
        m = mount_factory("--read-timeout", "60")
        m.add(t.path)
        top = m.wait_entry("both")
        for rel, _ in payload.files:
            assert sha256_file(top / rel) == sha256_file(payload.path_of(rel)), rel
