"""Session start-up on the way to the first piece: the HTTP client is built only when used
(off the event loop, once), and a torrent with no data on disk is not rechecked piece by piece
(while one with data is)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import fastbencode
import pytest
import trio

from torrentfs.metainfo import Metainfo, parse_metainfo
from torrentfs.session import SessionConfig, open_session
from torrentfs.storage.base import Presence
from torrentfs.storage.files import FileStore

PIECE = 16384


def torrent(data: bytes) -> Metainfo:
    pieces = b"".join(
        hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)
    )
    info = {b"name": b"f.bin", b"piece length": PIECE, b"pieces": pieces, b"length": len(data)}
    return parse_metainfo(fastbencode.bencode({b"info": info}))


def config(tmp_path: Path) -> SessionConfig:
    return SessionConfig(
        download_dir=tmp_path / "dl", state_dir=tmp_path / "state", listen_host="127.0.0.1",
        listen_port=0, dht=False,
    )  # fmt: skip


async def test_http_client_is_built_on_first_use_and_closed(tmp_path: Path) -> None:
    async with open_session(config(tmp_path)) as session:
        await session.add_torrent(torrent(random.randbytes(3 * PIECE)))
        assert session._http_client is None  # nothing needed it: no httpx import, no TLS set-up
        first, second = await concurrently(session.get_http_client, session.get_http_client)
        assert first is second is session.http_client
        assert not first.is_closed
    assert first.is_closed


async def concurrently(*fns: object) -> list[object]:
    """Run the coroutine functions concurrently (two first uses race for the one client)."""
    results: list[object] = [None] * len(fns)

    async def run(i: int) -> None:
        results[i] = await fns[i]()  # type: ignore[operator]

    async with trio.open_nursery() as nursery:
        for i in range(len(fns)):
            nursery.start_soon(run, i)
    return results


@pytest.mark.parametrize("on_disk", [False, True])
async def test_recheck_only_when_data_files_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: bool
) -> None:
    data = random.Random(3).randbytes(5 * PIECE)
    m = torrent(data)
    if on_disk:
        store = FileStore(tmp_path / "dl", m)
        await store.write_piece(2, data[2 * PIECE : 3 * PIECE])
        await store.aclose()
    calls: list[int] = []
    real = FileStore.pieces_presence

    async def counting_scan(self: FileStore, pieces: Sequence[int]) -> dict[int, Presence]:
        calls.append(1)  # the stored-data check's scan (torrentfs.stored_check)
        return await real(self, pieces)

    monkeypatch.setattr(FileStore, "pieces_presence", counting_scan)
    async with open_session(config(tmp_path)) as session:
        t = await session.add_torrent(m)
        assert len(calls) == int(on_disk)
        assert list(t.have.iter_set()) == ([2] if on_disk else [])


async def test_prepare_http_builds_the_client_in_the_background(tmp_path: Path) -> None:
    async with open_session(config(tmp_path)) as session:
        session.prepare_http()  # the mount does this at start: no import on the first read
        with trio.fail_after(60):
            while session._http_client is None:
                await trio.sleep(0.01)
        client = session._http_client
        assert await session.get_http_client() is client
    assert client.is_closed
