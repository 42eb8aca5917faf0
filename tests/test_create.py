"""Making torrents (torrentfs.create): layout, piece hashes, piece-length choice, errors."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from torrentfs import create
from torrentfs.bencode import decode, encode
from torrentfs.create import (
    CreateError,
    SourceFile,
    check_piece_length,
    choose_piece_length,
    hash_pieces,
    make_torrent,
    scan_source,
    torrent_dict,
)

KiB = 1024
MiB = 1024 * KiB


def naive_pieces(data: bytes, piece_length: int) -> bytes:
    return b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def as_dict(obj: object) -> dict[bytes, object]:
    assert isinstance(obj, dict)
    return obj


# -- piece length -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, 16 * KiB),
        (2000 * 16 * KiB, 16 * KiB),
        (2000 * 16 * KiB + 1, 32 * KiB),
        (512 * MiB, 512 * KiB),
        (4 * 1024 * MiB, 4 * MiB),
        (1024**4, 16 * MiB),  # 1 TiB: the 16 MiB cap wins over the piece count
    ],
)
def test_choose_piece_length_table(total: int, expected: int) -> None:
    assert choose_piece_length(total) == expected


def test_choose_piece_length_aims_for_1000_to_2000_pieces() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        total = rng.randrange(64 * MiB, 2000 * 16 * MiB)
        length = choose_piece_length(total)
        assert length & (length - 1) == 0
        assert 16 * KiB <= length <= 16 * MiB
        assert 1000 < -(-total // length) <= 2000


@pytest.mark.parametrize("bad", [0, 8 * KiB, 16 * KiB + 1, 3 * 16 * KiB, 128 * MiB, -16 * KiB])
def test_check_piece_length_rejects(bad: int) -> None:
    with pytest.raises(CreateError, match="power of two"):
        check_piece_length(bad)


@pytest.mark.parametrize("good", [16 * KiB, 256 * KiB, 16 * MiB, 64 * MiB])
def test_check_piece_length_accepts(good: int) -> None:
    check_piece_length(good)


# -- hashing ------------------------------------------------------------------------------


def make_files(tmp_path: Path, sizes: list[int], seed: int = 1) -> tuple[list[SourceFile], bytes]:
    rng = random.Random(seed)
    files, blob = [], b""
    for i, size in enumerate(sizes):
        data = rng.randbytes(size)
        p = write(tmp_path / f"f{i}", data)
        files.append(SourceFile((f"f{i}",), str(p), size))
        blob += data
    return files, blob


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("piece_length", [16 * KiB, 32 * KiB, 1 * MiB])
def test_hash_pieces_spans_files_like_a_concatenation(
    tmp_path: Path, threads: int, piece_length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks force many buffers through few workers and the buffer pool to recycle.
    monkeypatch.setattr(create, "_CHUNK_TARGET", 64 * KiB)
    sizes = [0, 70_000, 1, 0, 16 * KiB, 200_001, 0, 33_333, 5]
    files, blob = make_files(tmp_path, sizes)
    seen: list[int] = []
    pieces = hash_pieces(files, piece_length, threads=threads, progress=seen.append)
    assert pieces == naive_pieces(blob, piece_length)
    assert seen == sorted(seen)
    assert seen[-1] == len(blob)


def test_hash_pieces_exact_multiple_and_single_byte(tmp_path: Path) -> None:
    files, blob = make_files(tmp_path, [64 * KiB])
    assert hash_pieces(files, 16 * KiB, threads=2) == naive_pieces(blob, 16 * KiB)
    files, blob = make_files(tmp_path / "one", [1])
    assert hash_pieces(files, 16 * KiB) == hashlib.sha1(blob).digest()
    assert hash_pieces([], 16 * KiB) == b""


def test_hash_pieces_file_shrank(tmp_path: Path) -> None:
    p = write(tmp_path / "a", b"x" * 1000)
    with pytest.raises(CreateError, match=r"a: file shrank"):
        hash_pieces([SourceFile(("a",), str(p), 2000)], 16 * KiB)


def test_hash_pieces_file_grew(tmp_path: Path) -> None:
    p = write(tmp_path / "a", b"x" * 1000)
    with pytest.raises(CreateError, match=r"a: file changed size"):
        hash_pieces([SourceFile(("a",), str(p), 500)], 16 * KiB)


def test_hash_pieces_unreadable_and_missing(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(CreateError, match=r"dir: Is a directory"):
        hash_pieces([SourceFile(("dir",), str(d), 10)], 16 * KiB)
    with pytest.raises(CreateError, match=r"gone: No such file"):
        hash_pieces([SourceFile(("gone",), str(tmp_path / "gone"), 10)], 16 * KiB)


# -- scanning -----------------------------------------------------------------------------


def test_scan_single_file(tmp_path: Path) -> None:
    p = write(tmp_path / "movie.mkv", b"abc")
    tree = scan_source(p)
    assert tree.name == "movie.mkv"
    assert not tree.multi_file
    assert [(f.path, f.length) for f in tree.files] == [(("movie.mkv",), 3)]
    assert scan_source(p, name="other").files[0].path == ("other",)


def test_scan_directory_order_hidden_empty_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "Album"
    write(root / "b.txt", b"bb")
    write(root / "a" / "z", b"z")
    write(root / "a.txt", b"a")
    write(root / ".hidden", b"h")
    write(root / "sub" / "empty", b"")
    write(root / "Ünïcode ☃" / "ファイル.bin", b"u" * 10)
    (root / "empty_dir" / "deeper").mkdir(parents=True)
    os.symlink(root / "b.txt", root / "link_to_file")
    os.symlink(tmp_path, root / "link_to_dir")
    os.mkfifo(root / "fifo")
    tree = scan_source(root)
    assert tree.name == "Album"
    assert tree.multi_file
    assert [f.path for f in tree.files] == [
        (".hidden",),
        ("a.txt",),  # mktorrent's order: "a.txt" < "a/z" because "." < "/"
        ("a", "z"),
        ("b.txt",),
        ("sub", "empty"),
        ("Ünïcode ☃", "ファイル.bin"),
    ]
    assert tree.total_size == 1 + 1 + 1 + 2 + 0 + 10
    assert [(Path(p).name, why) for p, why in tree.skipped] == [
        ("fifo", "not a regular file"),
        ("link_to_dir", "symbolic link"),
        ("link_to_file", "symbolic link"),
    ]


def test_scan_directory_with_one_file_is_multi_file(tmp_path: Path) -> None:
    write(tmp_path / "d" / "only", b"1")
    tree = scan_source(tmp_path / "d")
    assert tree.multi_file
    assert tree.files[0].path == ("only",)


def test_scan_follows_a_top_level_symlink(tmp_path: Path) -> None:
    p = write(tmp_path / "real", b"data")
    os.symlink(p, tmp_path / "alias")
    tree = scan_source(tmp_path / "alias")
    assert tree.name == "alias"
    assert tree.files[0].length == 4


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(CreateError, match=r"missing: No such file or directory"):
        scan_source(tmp_path / "missing")
    write(tmp_path / "empty", b"")
    with pytest.raises(CreateError, match=r"empty: file is empty"):
        scan_source(tmp_path / "empty")
    (tmp_path / "emptydir" / "x").mkdir(parents=True)
    with pytest.raises(CreateError, match=r"emptydir: no files to share"):
        scan_source(tmp_path / "emptydir")
    write(tmp_path / "zeros" / "a", b"")
    with pytest.raises(CreateError, match=r"zeros: all files are empty"):
        scan_source(tmp_path / "zeros")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CreateError, match=r"fifo: not a regular file or directory"):
        scan_source(tmp_path / "fifo")
    p = write(tmp_path / "ok", b"1")
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(CreateError, match="unusable name"):
            scan_source(p, name=bad)


def test_scan_rejects_names_that_are_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    write(Path(os.fsdecode(bytes(root) + b"/bad\xff")), b"1")
    with pytest.raises(CreateError, match="not valid UTF-8"):
        scan_source(root)


# -- the torrent --------------------------------------------------------------------------


def test_make_single_file_torrent(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(100_000)
    p = write(tmp_path / "file.bin", data)
    seen: list[tuple[int, int]] = []
    raw, tree = make_torrent(
        p,
        trackers=["http://127.0.0.1:1/announce"],
        web_seeds=["http://127.0.0.1:2/files/"],
        piece_length=32 * KiB,
        comment="hello",
        creation_date=1_700_000_000,
        progress=lambda done, total: seen.append((done, total)),
    )
    top = as_dict(decode(raw))
    info = as_dict(top[b"info"])
    assert info == {
        b"name": b"file.bin",
        b"length": 100_000,
        b"piece length": 32 * KiB,
        b"pieces": naive_pieces(data, 32 * KiB),
    }
    assert top[b"announce"] == b"http://127.0.0.1:1/announce"
    assert b"announce-list" not in top
    assert top[b"url-list"] == [b"http://127.0.0.1:2/files/"]
    assert top[b"comment"] == b"hello"
    assert top[b"creation date"] == 1_700_000_000
    assert top[b"created by"] == create.DEFAULT_CREATED_BY.encode()
    assert seen[-1] == (100_000, 100_000)
    assert tree.total_size == 100_000


def test_make_multi_file_torrent(tmp_path: Path) -> None:
    root = tmp_path / "Tree ☃"
    write(root / "b", b"B" * 40_000)
    write(root / "a" / "é", b"A" * 30_000)
    write(root / "a" / "zero", b"")
    raw, _ = make_torrent(
        root,
        trackers=["udp://127.0.0.1:6969", "http://127.0.0.2/a", "wss://127.0.0.3/t"],
        private=True,
        piece_length=16 * KiB,
        created_by=None,
    )
    top = as_dict(decode(raw))
    info = as_dict(top[b"info"])
    assert info[b"name"] == "Tree ☃".encode()
    assert info[b"private"] == 1
    assert info[b"files"] == [
        {b"length": 0, b"path": [b"a", b"zero"]},  # "z" < "é" in code-point order
        {b"length": 30_000, b"path": [b"a", "é".encode()]},
        {b"length": 40_000, b"path": [b"b"]},
    ]
    assert info[b"pieces"] == naive_pieces(b"A" * 30_000 + b"B" * 40_000, 16 * KiB)
    assert top[b"announce"] == b"udp://127.0.0.1:6969"
    assert top[b"announce-list"] == [
        [b"udp://127.0.0.1:6969"],
        [b"http://127.0.0.2/a"],
        [b"wss://127.0.0.3/t"],
    ]
    assert b"created by" not in top
    assert b"creation date" not in top
    assert b"url-list" not in top


def test_make_is_deterministic_and_name_changes_the_hash(tmp_path: Path) -> None:
    p = write(tmp_path / "x", b"123" * 10_000)
    a, _ = make_torrent(p, creation_date=None)
    b, _ = make_torrent(p, creation_date=None)
    c, _ = make_torrent(p, name="y")
    assert a == b
    assert as_dict(decode(a))[b"info"] != as_dict(decode(c))[b"info"]


@pytest.mark.parametrize(
    ("trackers", "web_seeds", "message"),
    [
        (["not a url"], [], "tracker 'not a url' is not a URL"),
        (["ftp://x/announce"], [], "tracker 'ftp://x/announce' is not a URL"),
        (["http://"], [], "is not a URL"),
        ([], ["udp://x/"], "web seed 'udp://x/' is not a URL"),
    ],
)
def test_bad_urls_fail_before_hashing(
    tmp_path: Path, trackers: list[str], web_seeds: list[str], message: str
) -> None:
    p = write(tmp_path / "x", b"1")
    called = []
    with pytest.raises(CreateError, match=message):
        make_torrent(
            p, trackers=trackers, web_seeds=web_seeds, progress=lambda *a: called.append(a)
        )
    assert called == []


def test_torrent_dict_single_web_seed_and_no_trackers(tmp_path: Path) -> None:
    tree = scan_source(write(tmp_path / "x", b"1"))
    top = as_dict(decode(encode(torrent_dict(tree, 16 * KiB, b"\0" * 20))))
    assert set(top) == {b"info", b"created by"}
