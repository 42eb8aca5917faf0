"""Unit tests for torrentfs.metainfo: fields, validation, path safety, pads, hybrids (BEP 3/12/19/
47/52)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.bencode import encode
from torrentfs.errors import MetainfoError, UnsupportedTorrent
from torrentfs.geometry import Geometry
from torrentfs.metainfo import (
    MAX_COMPONENT_BYTES,
    MAX_PIECE_LENGTH,
    Metainfo,
    parse_info,
    parse_metainfo,
    sanitize_component,
)

PL = 16384


def _pieces(total: int, piece_length: int = PL) -> bytes:
    n = -(-total // piece_length)
    return b"".join(hashlib.sha1(i.to_bytes(4, "big")).digest() for i in range(n))


def single(
    length: int = 40000,
    name: object = b"file.bin",
    extra: dict[bytes, Any] | None = None,
    **kw: Any,
) -> dict[bytes, Any]:
    info = {b"name": name, b"piece length": PL, b"length": length}
    info[b"pieces"] = _pieces(length) if length > 0 else b""
    info.update(extra or {})
    info.update({k.encode(): v for k, v in kw.items()})
    return info


def multi(
    *files: tuple[list[Any], int] | dict[bytes, Any],
    extra: dict[bytes, Any] | None = None,
    **kw: Any,
) -> dict[bytes, Any]:
    entries: list[dict[bytes, Any]] = [
        f if isinstance(f, dict) else {b"path": f[0], b"length": f[1]} for f in files
    ]
    lengths = [e.get(b"length") for e in entries if b"l" not in e.get(b"attr", b"")]
    total = sum(n for n in lengths if isinstance(n, int) and n > 0)
    info = {b"name": b"root", b"piece length": PL, b"files": entries, b"pieces": _pieces(total)}
    info.update(extra or {})
    info.update({k.encode(): v for k, v in kw.items()})
    return info


_OUTER_KEYS = {
    "announce_list": b"announce-list",
    "url_list": b"url-list",
    "creation_date": b"creation date",
    "created_by": b"created by",
    "piece_layers": b"piece layers",
}


def torrent(info: dict[bytes, Any], **outer: Any) -> bytes:
    top = {_OUTER_KEYS.get(k, k.encode()): v for k, v in outer.items()}
    top[b"info"] = info
    return encode(top)


def parse(info: dict[bytes, Any], **outer: Any) -> Metainfo:
    return parse_metainfo(torrent(info, **outer))


def paths(m: Metainfo) -> list[tuple[str, ...]]:
    return [f.path for f in m.visible_files()]


def file_paths(*components: list[bytes]) -> list[tuple[str, ...]]:
    return paths(parse(multi(*[(c, 1) for c in components])))


# -- the basics -----------------------------------------------------------------------------


def test_single_file() -> None:
    info = single(40000)
    m = parse(info, announce=b"http://t/a", creation_date=1234, comment=b"hi", created_by=b"me")
    assert m.info_hash == hashlib.sha1(encode(info)).digest()
    assert m.info_hash_v2 is None
    assert m.info_bytes == encode(info)
    assert (m.name, m.multi_file, m.private) == ("file.bin", False, False)
    assert (m.piece_length, m.total_size, m.num_pieces) == (PL, 40000, 3)
    assert [m.piece_size(i) for i in range(3)] == [PL, PL, 40000 - 2 * PL]
    assert m.piece_hash(2) == info[b"pieces"][40:60]
    with pytest.raises(IndexError):
        m.piece_hash(3)
    with pytest.raises(IndexError):
        m.piece_size(-1)
    (f,) = m.files
    assert (f.index, f.path, f.length, f.offset, f.pad, f.attr, f.mtime) == (
        0,
        ("file.bin",),
        40000,
        0,
        False,
        "",
        None,
    )
    assert m.trackers == (("http://t/a",),)
    assert (m.creation_date, m.comment, m.created_by) == (1234, "hi", "me")
    assert m.web_seeds == () and m.dht_nodes == ()


def test_multi_file_offsets_and_geometry() -> None:
    m = parse(multi(([b"a", b"x.txt"], 100), ([b"empty"], 0), ([b"b"], 20000)))
    assert m.multi_file and m.name == "root"
    assert [(f.path, f.offset, f.length) for f in m.files] == [
        (("a", "x.txt"), 0, 100),
        (("empty",), 100, 0),
        (("b",), 100, 20000),
    ]
    g = m.geometry
    assert isinstance(g, Geometry)
    assert m.geometry is g  # built once
    assert (g.num_pieces, g.total_size) == (2, 20100)
    assert [s.file_index for s in g.piece_file_slices(0)] == [0, 2]


def test_non_canonical_info_hash_uses_original_bytes() -> None:
    pieces = _pieces(5)
    info = b"d4:name1:x6:lengthi5e12:piece lengthi16384e6:pieces20:" + pieces + b"e"
    data = b"d8:announce3:url4:info" + info + b"e\n"
    m = parse_metainfo(data)
    assert m.info_hash == hashlib.sha1(info).digest()
    assert m.info_bytes == info
    assert m.info_hash != hashlib.sha1(encode({b"name": b"x", b"length": 5})).digest()
    assert m.total_size == 5


def test_private_flag() -> None:
    assert parse(single(private=1)).private
    assert not parse(single(private=0)).private
    assert not parse(single(private=b"1")).private


def test_utf8_variants_preferred_and_invalid_utf8_replaced() -> None:
    m = parse(single(name=b"raw", extra={b"name.utf-8": "caf\u00e9".encode()}))
    assert m.name == "caf\u00e9"
    m = parse(single(name=b"\xff\xfeabc"))
    assert m.name == "\ufffd\ufffdabc"
    m = parse(
        multi({b"path": [b"\xe9t\xe9"], b"path.utf-8": ["\u00e9t\u00e9".encode()], b"length": 1})
    )
    assert paths(m) == [("\u00e9t\u00e9",)]
    m = parse(multi(([b"\xe9t\xe9"], 1), ([b"\xe8t\xe9"], 1)))
    assert paths(m) == [("\ufffdt\ufffd",), ("\ufffdt\ufffd.1",)]  # lossy, so deduplicated
    m = parse(single(comment=b"x"), comment=b"\xff", **{"comment.utf-8": b"ok"})
    assert m.comment == "ok"


def test_attributes_and_mtime() -> None:
    m = parse(multi({b"path": [b"run.sh"], b"length": 5, b"attr": b"x", b"mtime": 1700000000}))
    (f,) = m.files
    assert (f.attr, f.mtime, f.pad) == ("x", 1700000000, False)


def test_symlink_takes_no_space_and_keeps_a_safe_target() -> None:
    m = parse(
        multi(
            ([b"a", b"bar"], 10),
            {
                b"path": [b"a", b"foo"],
                b"length": 425,
                b"attr": b"l",
                b"symlink path": [b"a", b"bar"],
            },
            {b"path": [b"evil"], b"attr": b"l", b"symlink path": [b"..", b"..", b"etc"]},
        )
    )
    assert [(f.path, f.length, f.offset, f.symlink_path) for f in m.files] == [
        (("a", "bar"), 10, 0, None),
        (("a", "foo"), 0, 10, ("a", "bar")),
        (("evil",), 0, 10, ("etc",)),
    ]
    assert m.total_size == 10


# -- trackers, web seeds, nodes ---------------------------------------------------------------


def test_announce_list_tiers_deduplicated() -> None:
    m = parse(
        single(),
        announce=b"http://ignored/a",
        announce_list=[
            [b"http://a/1", b" http://a/2\t", b"http://a/1"],
            [],
            [b"http://a/2", 7, b"", b"udp://b/3"],
            b"http://flat/4",
            [b"http://bad url/", b"http://\x00/", b"\xff\xfe"],
        ],
    )
    assert m.trackers == (
        ("http://a/1", "http://a/2"),
        ("udp://b/3",),
        ("http://flat/4",),
    )


def test_announce_alone_and_fallback() -> None:
    assert parse(single(), announce=b"  udp://t:80/announce ").trackers == (
        ("udp://t:80/announce",),
    )
    assert parse(single(), announce=b"http://t/a", announce_list=[[b""]]).trackers == (
        ("http://t/a",),
    )
    assert parse(single(), announce=5).trackers == ()
    assert parse(single()).trackers == ()


def test_url_list_string_or_list() -> None:
    assert parse(single(), url_list=b"http://ws/file").web_seeds == ("http://ws/file",)
    m = parse(
        single(),
        url_list=[
            b"http://ws/a",
            b"",
            [b"x"],
            -20,
            b"http://ws/a",
            b"http://ws/b c",
            b"http://w/b",
        ],
    )
    assert m.web_seeds == ("http://ws/a", "http://ws/b c", "http://w/b")
    assert parse(single(), url_list={b"a": b"b"}).web_seeds == ()


def test_dht_nodes() -> None:
    m = parse(
        single(),
        nodes=[
            [b"127.0.0.1", 6881],
            [b"router.example", 1],
            [b"127.0.0.1", 6881],
            [b"host", 0],
            [b"host", 65536],
            [b"", 5],
            [6881, b"h"],
            [b"h", 1, 2],
            b"junk",
        ],
    )
    assert m.dht_nodes == (("127.0.0.1", 6881), ("router.example", 1))
    assert parse(single(), nodes=b"x").dht_nodes == ()


# -- pad files (BEP 47) -------------------------------------------------------------------------


def test_pad_files_kept_in_geometry_hidden_from_visible_files() -> None:
    m = parse(
        multi(
            ([b"a"], 100),
            {b"path": [b".pad", b"16284"], b"length": PL - 100, b"attr": b"p"},
            ([b"b"], 10),
            {b"path": [b".____padding_file", b"1"], b"length": PL - 10},
            ([b"c"], 10),
            {b"path": [b"_____padding_file_0_please upgrade"], b"length": 5},
            {b"length": 7, b"attr": b"p"},  # BEP 47 pad without a path
            ([b"d"], 1),
        )
    )
    assert [f.pad for f in m.files] == [False, True, False, True, False, True, True, False]
    assert paths(m) == [("a",), ("b",), ("c",), ("d",)]
    assert m.files[6].path == (".pad", "7")
    assert [f.offset for f in m.visible_files()] == [0, PL, 2 * PL, 2 * PL + 22]
    assert m.total_size == 2 * PL + 23
    assert m.geometry.num_files == 8


def test_pads_do_not_take_names_from_visible_files() -> None:
    m = parse(multi({b"path": [b"x"], b"length": 5, b"attr": b"p"}, ([b"x"], 5)))
    assert paths(m) == [("x",)]


# -- path safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ([b"/etc", b"passwd"], ("_etc", "passwd")),
        ([b"..", b"..", b"etc", b"passwd"], ("etc", "passwd")),
        ([b"a", b".", b"", b"b"], ("a", "b")),
        ([b"a\\..\\b"], ("a_.._b",)),
        ([b"foo/../../bar"], ("foo_.._.._bar",)),
        (
            [b"new\nline", b"tab\there", b"del\x7f", b"nul\x00"],
            ("new_line", "tab_here", "del_", "nul_"),
        ),
        ([b"", b".", b".."], ("_",)),
        ([], ("_",)),
        ([b"...", b"..x"], ("...", "..x")),
        ([b" spaced "], (" spaced ",)),
    ],
)
def test_path_sanitisation(raw: list[bytes], safe: tuple[str, ...]) -> None:
    assert file_paths(raw) == [safe]


def test_name_sanitisation_and_fallback() -> None:
    assert parse(single(name=b"../../x")).name == ".._.._x"
    m = parse(multi(([b"f"], 1), name=b".."))
    assert m.name == m.info_hash.hex()
    assert parse(single(name=b"")).files[0].path == (parse(single(name=b"")).name,)


def test_long_components_cut_to_255_bytes_keeping_extension() -> None:
    long = "a" * 300 + ".mkv"
    (path,) = file_paths([long.encode()])
    assert path == ("a" * 251 + ".mkv",)
    # Multi-byte characters are never split.
    euro = "\u20ac" * 100 + ".txt"  # 300 bytes of stem
    (path,) = file_paths([euro.encode()])
    assert len(path[0].encode()) <= MAX_COMPONENT_BYTES and path[0].endswith(".txt")
    assert path[0] == "\u20ac" * 83 + ".txt"
    # No extension, or an overlong one: plain cut.
    (path,) = file_paths([b"b" * 400])
    assert path == ("b" * 255,)
    (path,) = file_paths([b"c." + b"d" * 400])
    assert path == ("c." + "d" * 253,)
    # The single-file name too.
    assert len(parse(single(name=b"n" * 1000 + b".iso")).name.encode()) == 255


def test_duplicates_get_numbered_names() -> None:
    assert file_paths([b"a.txt"], [b"a.txt"], [b"a.txt"], [b"b"], [b"b"]) == [
        ("a.txt",),
        ("a.1.txt",),
        ("a.2.txt",),
        ("b",),
        ("b.1",),
    ]
    # A name taken by a real file is skipped.
    assert file_paths([b"a.txt"], [b"a.1.txt"], [b"a.txt"]) == [
        ("a.txt",),
        ("a.1.txt",),
        ("a.2.txt",),
    ]
    # Names that only collide after sanitising.
    assert file_paths([b"x/y"], [b"x\\y"], [b"x", b".", b"y"]) == [
        ("x_y",),
        ("x_y.1",),
        ("x", "y"),
    ]


def test_duplicate_names_at_the_length_limit_stay_within_255_bytes() -> None:
    name = b"z" * 300 + b".bin"
    got = file_paths([name], [name])
    assert [len(p[0].encode()) for p in got] == [255, 255]
    assert got[1][0].endswith(".1.bin") and got[0] != got[1]


def test_file_that_is_also_a_directory() -> None:
    # File first: the directory of the later file is renamed, consistently for its siblings.
    assert file_paths([b"x"], [b"x", b"1"], [b"x", b"2"], [b"x", b"sub", b"3"]) == [
        ("x",),
        ("x.1", "1"),
        ("x.1", "2"),
        ("x.1", "sub", "3"),
    ]
    # Directory first: the file is renamed.
    assert file_paths([b"d", b"f"], [b"d"], [b"d", b"g"]) == [
        ("d", "f"),
        ("d.1",),
        ("d", "g"),
    ]


def test_sanitize_component() -> None:
    assert sanitize_component("ok.txt") == "ok.txt"
    assert sanitize_component("..") is None
    assert sanitize_component(".") is None
    assert sanitize_component("") is None
    assert sanitize_component("a/b\\c\x01") == "a_b_c_"


_component = st.one_of(
    st.sampled_from(
        [b"", b".", b"..", b"/", b"a", b"a.1", b"a.txt", b"a.1.txt", b"\\", b"x" * 300]
    ),
    st.binary(max_size=12),
)


@settings(max_examples=300)
@given(st.lists(st.lists(_component, max_size=4), min_size=1, max_size=12))
def test_paths_are_always_safe_and_unique(raw_paths: list[list[bytes]]) -> None:
    got = file_paths(*raw_paths)
    assert len(got) == len(raw_paths)
    assert len(set(got)) == len(got)
    prefixes = {p[:i] for p in got for i in range(1, len(p))}
    assert not prefixes & set(got), "a file is also a directory"
    for p in got:
        assert p
        for c in p:
            assert c not in ("", ".", "..")
            assert "/" not in c and "\\" not in c and "\x00" not in c
            assert len(c.encode()) <= MAX_COMPONENT_BYTES


# -- validation ----------------------------------------------------------------------------------


def _without(d: dict[bytes, Any], key: bytes) -> dict[bytes, Any]:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (multi(([b"a", b"b"], -5)), "invalid file length -5 for 'a/b'"),
        (multi({b"path": [b"a"], b"length": b"5"}), "invalid file length (a bytes) for 'a'"),
        (multi({b"path": [b"a"]}), "invalid file length (missing) for 'a'"),
        (single(-1), "invalid file length -1 for 'file.bin'"),
        (_without(single(), b"length"), "invalid file length (missing) for 'file.bin'"),
        (single(extra={b"piece length": 0}), "invalid or missing 'piece length' 0"),
        (single(extra={b"piece length": -16384}), "invalid or missing 'piece length' -16384"),
        (_without(single(), b"piece length"), "invalid or missing 'piece length' (missing)"),
        (
            single(extra={b"piece length": MAX_PIECE_LENGTH * 2}),
            f"piece length {MAX_PIECE_LENGTH * 2} is larger than the supported {MAX_PIECE_LENGTH}",
        ),
        (single(pieces=b"x" * 21), "'pieces' length 21 is not a multiple of 20"),
        (single(pieces=b"x" * 40), "incorrect number of piece hashes: 2 for 3 pieces"),
        (single(pieces=5), "invalid or missing 'pieces'"),
        (_without(single(), b"name"), "missing or invalid 'name'"),
        (single(name=7), "missing or invalid 'name'"),
        (multi(), "no files in torrent"),
        (single(files=b"x"), "'files' is not a list"),
        (single(files=[5]), "file #0 is not a dictionary"),
        (multi({b"length": 5}), "missing or invalid 'path' for file #0"),
        (multi(([b"a", 5], 5)), "missing or invalid 'path' for file #0"),
        (multi({b"path": b"a", b"length": 5}), "missing or invalid 'path' for file #0"),
        (single(0), "torrent contains no data (total size is 0)"),
        (multi(([b"a"], 0), ([b"b"], 0)), "torrent contains no data (total size is 0)"),
        (single(extra={b"meta version": b"2"}), "invalid 'meta version' (a bytes)"),
    ],
)
def test_invalid_torrents(info: dict[bytes, Any], message: str) -> None:
    with pytest.raises(MetainfoError) as exc:
        parse(info)
    assert str(exc.value) == message
    assert "\n" not in str(exc.value)


def test_invalid_files() -> None:
    for data, message in [
        (b"", "not a valid torrent file: empty input"),
        (b"d4:infoi5ee", "missing or invalid 'info' dictionary"),
        (b"d1:ai5ee", "missing or invalid 'info' dictionary"),
        (b"le", "not a valid torrent file: torrent file is not a dictionary"),
        (torrent(single())[:-1], "not a valid torrent file: truncated input"),
    ]:
        with pytest.raises(MetainfoError) as exc:
            parse_metainfo(data)
        assert str(exc.value) == message


# -- v2 and hybrids (BEP 52) ---------------------------------------------------------------------


def _leaf(length: int) -> dict[bytes, Any]:
    return {b"": {b"length": length, b"pieces root": b"r" * 32}}


def hybrid(extra: dict[bytes, Any] | None = None) -> dict[bytes, Any]:
    info = multi(
        ([b"a"], 100),
        {b"path": [b".pad", b"16284"], b"length": PL - 100, b"attr": b"p"},
        ([b"d", b"b"], 50),
    )
    info[b"meta version"] = 2
    info[b"file tree"] = {b"a": _leaf(100), b"d": {b"b": _leaf(50)}}
    info.update(extra or {})
    return info


def test_hybrid_works_as_v1_and_reports_the_v2_hash() -> None:
    info = hybrid()
    m = parse(info, piece_layers={})
    assert m.info_hash == hashlib.sha1(encode(info)).digest()
    assert m.info_hash_v2 == hashlib.sha256(encode(info)).digest()
    assert paths(m) == [("a",), ("d", "b")]
    assert m.total_size == PL + 50


def test_hybrid_single_file() -> None:
    info = single(40000, extra={b"meta version": 2, b"file tree": {b"file.bin": _leaf(40000)}})
    m = parse(info)
    assert m.info_hash_v2 == hashlib.sha256(encode(info)).digest()
    with pytest.raises(MetainfoError, match="do not match"):
        parse(single(40000, extra={b"meta version": 2, b"file tree": {b"other": _leaf(40000)}}))


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({b"a": _leaf(100), b"d": {b"b": _leaf(51)}}, "v1 and v2 file lists do not match"),
        ({b"a": _leaf(100)}, "v1 and v2 file lists do not match"),
        (
            {b"a": _leaf(100), b"d": {b"b": {b"length": 50}}},
            "invalid 'file tree' entry 'd/b/length'",
        ),
        ({b"a": _leaf(100), b"d": {}}, "invalid 'file tree' entry 'd'"),
        (b"tree", "invalid 'file tree'"),
        ({b"a": {b"": {b"length": -1}}}, "invalid file length -1 in 'file tree'"),
    ],
)
def test_hybrid_mismatch(tree: object, message: str) -> None:
    with pytest.raises(MetainfoError, match=message):
        parse(hybrid(extra={b"file tree": tree}))


def test_hybrid_must_be_piece_aligned() -> None:
    info = multi(([b"a"], 100), ([b"b"], 50))
    info[b"meta version"] = 2
    info[b"file tree"] = {b"a": _leaf(100), b"b": _leaf(50)}
    with pytest.raises(MetainfoError, match="file 'b' is not piece-aligned"):
        parse(info)


def test_v2_only_is_unsupported() -> None:
    info = {
        b"name": b"x",
        b"piece length": PL,
        b"meta version": 2,
        b"file tree": {b"x": _leaf(5)},
    }
    with pytest.raises(UnsupportedTorrent) as exc:
        parse(info)
    assert str(exc.value) == "BitTorrent v2-only torrents are not supported yet"
    with pytest.raises(UnsupportedTorrent, match="unsupported metainfo version 3"):
        parse(single(extra={b"meta version": 3}))


def test_meta_version_without_file_tree_is_plain_v1() -> None:
    assert parse(single(extra={b"meta version": 2})).info_hash_v2 is None


# -- parse_info (magnets, BEP 9) -----------------------------------------------------------------


def test_parse_info() -> None:
    info = single()
    raw = encode(info)
    ih = hashlib.sha1(raw).digest()
    m = parse_info(
        raw,
        expected_info_hash=ih,
        trackers=[["http://a", " http://b "], [], ["http://a", "udp://c"]],
        web_seeds=["http://ws", "http://ws"],
        dht_nodes=[("10.0.0.1", 1)],
        comment="c",
    )
    assert m.info_hash == ih and m.info_bytes == raw
    assert m.trackers == (("http://a", "http://b"), ("udp://c",))
    assert m.web_seeds == ("http://ws",)
    assert m.dht_nodes == (("10.0.0.1", 1),)
    assert m.comment == "c"
    assert parse_info(raw) == parse_metainfo(torrent(info))


def test_parse_info_errors() -> None:
    raw = encode(single())
    with pytest.raises(MetainfoError, match="does not match the expected info-hash"):
        parse_info(raw, expected_info_hash=b"\0" * 20)
    with pytest.raises(MetainfoError, match="not a valid info dictionary"):
        parse_info(raw + b"x")
    with pytest.raises(MetainfoError, match="info is not a dictionary"):
        parse_info(b"le")
