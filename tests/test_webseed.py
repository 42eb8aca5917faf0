"""Web seeds (BEP 19): URL mapping (pure), strict HTTP range answers against a real local HTTP
server with fault modes (tier 3), and the engine downloading from a web seed alone, from a broken
one (never bad data), and together with a python3-libtorrent seeder (tier 4)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from fsutil import make_metainfo
from swarm import Payload, PeerFactory, make_payload, make_torrent
from webseed_server import WebSeedServer

from torrentfs.bencode import encode
from torrentfs.errors import ReadTimeout
from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.net.webseed import (
    FileRange,
    UrlLayout,
    WebSeedConfig,
    WebSeedError,
    backoff_delay,
    coalesce,
    fetch_range,
    file_urls,
    parse_web_seed_url,
)
from torrentfs.session import SessionConfig, open_session
from torrentfs.torrent import Torrent, TorrentConfig
from torrentfs.types import PeerAddress

KiB = 1024
MiB = 1 << 20

# A tree whose names need escaping in URLs: spaces, '#', '?', '%', '+', '&', non-ASCII.
ODD_LAYOUT: tuple[tuple[str, int], ...] = (
    ("plain.bin", 40_000),
    ("empty", 0),
    ("dir with space/a#b?c%d+e&f.bin", 70_001),
    ("dir with space/ünï ✓/файл.txt", 33_000),
    ("z.bin", 5),
)


# --------------------------------------------------------------------------- URL mapping (pure)


def _torrent(info: dict[bytes, object]) -> Metainfo:
    return parse_metainfo(encode({b"info": info}))


def test_single_file_url_used_as_is_unless_it_ends_in_a_slash() -> None:
    meta = make_metainfo("my file #1.bin", length=100)
    assert file_urls("http://h/x/data.bin", meta) == ["http://h/x/data.bin"]
    assert file_urls("http://h/x/", meta) == ["http://h/x/my%20file%20%231.bin"]


def test_multi_file_urls_append_name_and_escaped_path() -> None:
    meta = make_metainfo("top dir", [("a b/c?d.bin", 10), ("x%y+z&ü.txt", 5)])
    expected = [
        "http://h/seed/top%20dir/a%20b/c%3Fd.bin",
        "http://h/seed/top%20dir/x%25y%2Bz%26%C3%BC.txt",
    ]
    assert file_urls("http://h/seed", meta) == expected
    assert file_urls("http://h/seed/", meta) == expected


def test_pad_files_have_no_url_and_are_zeros() -> None:
    meta = make_metainfo("t", [("a", 10), ("b", 20)], pads={0: 16374})
    assert [f.pad for f in meta.files] == [False, True, False]
    urls = file_urls("http://h/", meta)
    assert urls[1] is None and urls[0] == "http://h/t/a" and urls[2] == "http://h/t/b"
    ranges = UrlLayout("http://h/", meta).ranges(5, 16384 + 10)
    assert ranges == [
        FileRange("http://h/t/a", 5, 9, 10),
        FileRange(None, 0, 16373, 16374),
        FileRange("http://h/t/b", 0, 14, 20),
    ]


def test_urls_come_from_the_torrent_bytes_not_the_sanitised_names() -> None:
    # "a\\b" is shown as "a_b" by the mount, but the server has it as "a\\b"; utf-8 fields win.
    info = {
        b"name": b"n\xffame",
        b"name.utf-8": "nämé".encode(),
        b"piece length": 16384,
        b"pieces": b"\0" * 20,
        b"files": [
            {b"length": 3, b"path": [b"a\\b"]},
            {b"length": 4, b"path": [b"old"], b"path.utf-8": ["néw".encode()]},
        ],
    }
    meta = _torrent(info)
    assert meta.files[0].path == ("a_b",)
    assert file_urls("https://h/", meta) == [
        "https://h/n%C3%A4m%C3%A9/a%5Cb",
        "https://h/n%C3%A4m%C3%A9/n%C3%A9w",
    ]


def test_layout_splits_ranges_at_file_boundaries_and_skips_empty_files() -> None:
    meta = make_metainfo("t", [("a", 10), ("e", 0), ("b", 5), ("c", 20)])
    layout = UrlLayout("http://h/", meta)
    assert layout.ranges(8, 10) == [
        FileRange("http://h/t/a", 8, 9, 10),
        FileRange("http://h/t/b", 0, 4, 5),
        FileRange("http://h/t/c", 0, 2, 20),
    ]
    assert layout.ranges(15, 20) == [FileRange("http://h/t/c", 0, 19, 20)]
    with pytest.raises(ValueError):
        layout.ranges(30, 10)


def test_coalesce_merges_only_adjacent_blocks() -> None:
    blocks = [(0, 0, 16384), (0, 16384, 16384), (1, 0, 16384), (3, 0, 100), (2, 0, 16384)]
    runs = coalesce(blocks, 32768)
    assert [(o, n) for o, n, _ in runs] == [(0, 49152), (98304, 100), (65536, 16384)]
    assert runs[0][2] == blocks[:3]


def test_backoff_doubles_up_to_the_cap_and_honours_retry_after() -> None:
    c = WebSeedConfig(backoff_base=2, backoff_max=60)
    assert [backoff_delay(n, c) for n in range(7)] == [0, 2, 4, 8, 16, 32, 60]
    assert backoff_delay(1, c, retry_after=30) == 30
    assert backoff_delay(1, c, retry_after=3600) == 60
    assert backoff_delay(10_000, c) == 60


def test_only_http_urls_are_web_seeds() -> None:
    assert parse_web_seed_url(" http://h/x ") == "http://h/x"
    assert parse_web_seed_url("https://h:8443/") == "https://h:8443/"
    for bad in ("ftp://h/x", "file:///etc/passwd", "http://", "h/x", "http://[::1/"):
        assert parse_web_seed_url(bad) is None


# --------------------------------------------------------------------------- HTTP answers


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[WebSeedServer, bytes]]:
    data = hashlib.sha256(b"x").digest() * 4096  # 128 KiB
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f.bin").write_bytes(data)
    with WebSeedServer(tmp_path / "www") as server:
        yield server, data


FAST = WebSeedConfig(timeout=2.0)


async def test_fetch_range_returns_exactly_the_range(served: tuple[WebSeedServer, bytes]) -> None:
    server, data = served
    url = server.url_for("f.bin")
    async with httpx.AsyncClient() as client:
        assert await fetch_range(client, FileRange(url, 100, 199, len(data)), FAST) == data[100:200]
        whole = FileRange(url, 0, len(data) - 1, len(data))
        server.fault = "ignore-range"  # a 200 is fine when the whole file was asked for
        assert await fetch_range(client, whole, FAST) == data
        server.fault = "redirect"
        assert await fetch_range(client, FileRange(url, 5, 9, len(data)), FAST) == data[5:10]
    assert server.requests[-1] == ("/moved/f.bin", "bytes=5-9")


@pytest.mark.parametrize(
    "fault",
    ["404", "416", "500", "503", "truncate", "oversize", "wrong-range", "ignore-range", "hang",
     "redirect-loop"],
)  # fmt: skip
async def test_fetch_range_refuses_bad_answers(
    fault: str, served: tuple[WebSeedServer, bytes]
) -> None:
    server, data = served
    server.fault = fault
    async with httpx.AsyncClient() as client:
        with pytest.raises(WebSeedError) as info:
            await fetch_range(client, FileRange(server.url_for("f.bin"), 10, 20, len(data)), FAST)
    if fault == "503":
        assert info.value.retry_after == 1


async def test_fetch_range_refuses_a_file_of_another_size(
    served: tuple[WebSeedServer, bytes],
) -> None:
    server, _ = served
    async with httpx.AsyncClient() as client:
        with pytest.raises(WebSeedError, match="bytes on the server"):
            await fetch_range(client, FileRange(server.url_for("f.bin"), 0, 9, 999), FAST)


# --------------------------------------------------------------------------- the engine


def _config(tmp: Path, **web: float) -> SessionConfig:
    seed = WebSeedConfig(timeout=3.0, backoff_base=0.5, backoff_max=2.0)
    for key, value in web.items():
        setattr(seed, key, value)
    return SessionConfig(
        download_dir=tmp / "dl",
        state_dir=tmp / "state",
        listen_host="127.0.0.1",
        listen_port=0,
        trackers=False,
        torrent=TorrentConfig(web_seed=seed),
    )


def _web_torrent(
    tmp: Path, server_root: Path, layout: int | tuple[tuple[str, int], ...], url: str, name: str
) -> tuple[Payload, Metainfo]:
    payload = make_payload(server_root, layout, name=name)
    t = make_torrent(payload.root, tmp / f"{name}.torrent", web_seeds=[url])
    return payload, parse_metainfo(t.path.read_bytes())


def _payload_bytes(payload: Payload, meta: Metainfo) -> bytes:
    """The source bytes in the torrent's file order (mktorrent sorts the files)."""
    return b"".join(payload.path_of("/".join(f.path)).read_bytes() for f in meta.files if f.length)


async def _read_all(torrent: Torrent, timeout: float) -> bytes:
    return await torrent.read(0, torrent.metainfo.total_size, timeout=timeout)


@pytest.mark.parametrize("layout", ["single", "multi"])
async def test_a_torrent_served_only_by_http_downloads_exactly(tmp_path: Path, layout: str) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        if layout == "single":
            payload, meta = _web_torrent(tmp_path, www, 300_001, server.url, "odd name #1%")
        else:
            payload, meta = _web_torrent(tmp_path, www, ODD_LAYOUT, server.url, "top dir")
        async with open_session(_config(tmp_path)) as session:
            torrent = await session.add_torrent(meta)
            assert await _read_all(torrent, timeout=60) == _payload_bytes(payload, meta)
            assert torrent.web_seeds[0].download.total >= meta.total_size
    paths = set(server.paths_requested())
    if layout == "single":
        assert paths == {"/odd%20name%20%231%25.bin"}
    else:
        assert "/top%20dir/dir%20with%20space/a%23b%3Fc%25d%2Be%26f.bin" in paths
        assert "/top%20dir/empty" not in paths


@pytest.mark.parametrize(
    "fault", ["404", "416", "500", "truncate", "oversize", "wrong-range", "ignore-range", "hang"]
)
async def test_a_failing_web_seed_never_yields_data_and_recovers(
    tmp_path: Path, fault: str
) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        payload, meta = _web_torrent(tmp_path, www, ODD_LAYOUT, server.url, "top dir")
        server.fault = fault
        async with open_session(_config(tmp_path, timeout=1.0)) as session:
            torrent = await session.add_torrent(meta)
            with pytest.raises(ReadTimeout, match=r"web seed .* backing off"):
                await torrent.read(0, 1000, timeout=3)
            assert torrent.web_seeds[0].failures >= 1 and not torrent.have.any()
            server.fault = None  # the server is fixed: after its back-off the seed works again
            assert await _read_all(torrent, timeout=60) == _payload_bytes(payload, meta)


async def test_wrong_bytes_fail_the_hash_and_drop_the_web_seed(tmp_path: Path) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        _, meta = _web_torrent(tmp_path, www, 200_000, server.url, "c")
        server.fault = "corrupt"
        async with open_session(_config(tmp_path)) as session:
            torrent = await session.add_torrent(meta)
            with pytest.raises(ReadTimeout):
                await torrent.read(0, meta.total_size, timeout=8)
            seed = torrent.web_seeds[0]
            assert seed.disabled is not None and seed.hash_failures >= 3
            assert not torrent.have.any() and torrent.hash_failures >= 3
            # Dropped for good: a later read does not reach the server any more.
            before = len(server.requests)
            with pytest.raises(ReadTimeout, match="disabled"):
                await torrent.read(0, 1000, timeout=1)
            assert len(server.requests) == before


async def test_web_seeds_start_only_when_something_is_wanted(tmp_path: Path) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        _, meta = _web_torrent(tmp_path, www, 100_000, server.url, "idle")
        async with open_session(_config(tmp_path)) as session:
            torrent = await session.add_torrent(meta)
            await trio.sleep(1.5)
            assert server.requests == [] and torrent.web_seeds == []
            assert len(await torrent.read(50_000, 10, timeout=30)) == 10
            assert len(server.requests) >= 1


# --------------------------------------------------------------------------- with libtorrent


@pytest.mark.interop
async def test_web_seed_and_libtorrent_seeder_share_the_download(
    tmp_path: Path, lt_seeder_factory: PeerFactory
) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        payload, meta = _web_torrent(tmp_path, www, 8 * MiB, server.url, "both")
        server.rate = 1 * MiB
        torrent_path = tmp_path / "both.torrent"
        seeder = lt_seeder_factory(
            torrent_path,
            www,
            tracker_less=True,
            extra_args=["--upload-limit", str(1 * MiB), "--limit-local"],
        )
        async with open_session(_config(tmp_path)) as session:
            torrent = await session.add_torrent(meta, download_all=True)
            torrent.add_peers([PeerAddress(seeder.host, seeder.port)], source="test")
            with trio.fail_after(120):
                await torrent.wait_complete()
            data = await _read_all(torrent, timeout=10)
            from_web = torrent.web_seeds[0].download.total
            assert data == _payload_bytes(payload, meta)
            assert from_web > 0, "the web seed contributed nothing"
            assert torrent.downloaded - from_web > 0, "the libtorrent seeder contributed nothing"
            assert torrent.hash_failures == 0


async def test_broken_web_seed_with_libtorrent_seeder_still_reads(
    tmp_path: Path, lt_seeder_factory: PeerFactory
) -> None:
    www = tmp_path / "www"
    with WebSeedServer(www) as server:
        payload, meta = _web_torrent(tmp_path, www, ODD_LAYOUT, server.url, "top dir")
        server.fault = "corrupt"
        seeder = lt_seeder_factory(tmp_path / "top dir.torrent", www, tracker_less=True)
        async with open_session(_config(tmp_path)) as session:
            torrent = await session.add_torrent(meta)
            torrent.add_peers([PeerAddress(seeder.host, seeder.port)], source="test")
            assert await _read_all(torrent, timeout=60) == _payload_bytes(payload, meta)
