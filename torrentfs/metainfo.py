"""Metainfo (.torrent) parsing: validated, with safe file paths and the exact info-hash (L1).

What a `Metainfo` guarantees, whatever the input (only `MetainfoError` escapes the parsers):

* ``info_hash`` is the SHA-1 of the info dictionary's *original* bytes (BEP 3), also for files
  whose keys are not sorted; ``info_hash_v2`` is their SHA-256 for hybrid v1+v2 torrents
  (BEP 52). Hybrids are used through their v1 half, after checking that both halves describe
  the same files with v2's piece alignment. v2-only torrents raise `UnsupportedTorrent`.
* The piece layout is consistent: ``piece length`` is positive and at most
  `MAX_PIECE_LENGTH`, ``pieces`` holds exactly one 20-byte SHA-1 per piece, file lengths are
  non-negative integers and the torrent holds at least one byte (libtorrent refuses empty
  torrents too).
* ``files`` lists every file in torrent order with its byte offset, **including** BEP 47 pad
  files (``attr`` contains ``p``, or the legacy names: ``.____padding_file/…`` from old
  libtorrent, ``_____padding_file_…`` from BitComet), because pads occupy piece space;
  `Metainfo.visible_files` omits them.
  BEP 47 symlinks (``attr`` contains ``l``) take no space: their length is taken as 0, as
  libtorrent does, and their target is kept, sanitised, in ``symlink_path``.
* Every path is safe to join under a download directory: components are never empty, ``.``
  or ``..``; ``/``, ``\\`` and ASCII control characters inside a component become ``_``; each
  component is at most 255 bytes of UTF-8 (cut on a character boundary, keeping a short
  extension); no two visible files share a path and no visible file's path is a directory of
  another -- clashes are renamed deterministically in torrent order, ``name.1.ext``,
  ``name.2.ext``… (libtorrent's convention). ``name.utf-8``/``path.utf-8`` win over
  ``name``/``path``; bytes that are not UTF-8 are decoded with ``errors="replace"`` (U+FFFD),
  so names are always valid text -- a lossy choice, but collisions it causes are renamed like
  any other, and every consumer (FUSE, logs, JSON status) gets printable strings.
* Optional outer fields never make a torrent fail: bad trackers (BEP 12), web seeds (BEP 19)
  or DHT nodes (BEP 5) are skipped; tracker URLs are deduplicated across tiers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from . import bencode
from .errors import BencodeError, MetainfoError, UnsupportedTorrent
from .geometry import Geometry

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_PIECE_LENGTH",
    "FileEntry",
    "Metainfo",
    "parse_info",
    "parse_metainfo",
    "sanitize_component",
]

MAX_PIECE_LENGTH = 256 * 1024 * 1024
"""Largest ``piece length`` accepted. A piece is verified (and held) whole before any byte of it
is served, so huge pieces mean huge latency and memory; 256 MiB is the largest size common
clients offer. libtorrent allows up to 1 GiB (see tests/test_conformance.py)."""

MAX_COMPONENT_BYTES = 255
"""NAME_MAX of Linux file systems, in bytes of UTF-8."""

_MAX_EXT_CHARS = 16
"""A trailing ``.xyz`` no longer than this is an extension worth keeping when names are cut."""

_MAX_URL_CHARS = 4096

_LEGACY_PAD_DIR = b".____padding_file"  # old libtorrent: .____padding_file/<n>
_BITCOMET_PAD_PREFIX = b"_____padding_file_"  # BitComet: _____padding_file_<n>_<message>

_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a torrent (BEP 3 ``files`` entry, BEP 47 attributes).

    ``path`` is relative to the torrent root (without the torrent name for multi-file
    torrents; ``(name,)`` for a single-file torrent). ``offset`` is where the file's bytes start
    in the torrent's concatenated data.
    """

    index: int
    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool = False
    attr: str = ""
    mtime: int | None = None
    symlink_path: tuple[str, ...] | None = None
    """BEP 47 symlink target (``attr`` has ``l``), components relative to the torrent root."""


@dataclass(frozen=True)
class Metainfo:
    """A parsed, validated torrent. See the module docstring for the guarantees."""

    info_hash: bytes
    info_hash_v2: bytes | None
    name: str
    piece_length: int
    pieces: bytes = field(repr=False)
    num_pieces: int
    total_size: int
    files: tuple[FileEntry, ...] = field(repr=False)
    multi_file: bool
    private: bool
    trackers: tuple[tuple[str, ...], ...]
    web_seeds: tuple[str, ...]
    dht_nodes: tuple[tuple[str, int], ...]
    creation_date: int | None
    comment: str | None
    created_by: str | None
    info_bytes: bytes = field(repr=False)

    def piece_hash(self, index: int) -> bytes:
        """The expected SHA-1 of piece `index` (20 bytes)."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range (num_pieces={self.num_pieces})")
        return self.pieces[index * 20 : index * 20 + 20]

    def piece_size(self, index: int) -> int:
        """Bytes in piece `index`: ``piece_length`` except for a shorter last piece."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range (num_pieces={self.num_pieces})")
        if index == self.num_pieces - 1:
            return self.total_size - index * self.piece_length
        return self.piece_length

    def visible_files(self) -> tuple[FileEntry, ...]:
        """The files a user sees: every file except BEP 47 pad files."""
        return tuple(f for f in self.files if not f.pad)

    @cached_property
    def geometry(self) -> Geometry:
        """The file ⇄ piece ⇄ block layout (pad files included), built once."""
        return Geometry(
            self.piece_length, self.total_size, [(f.offset, f.length) for f in self.files]
        )


def parse_metainfo(data: bytes) -> Metainfo:
    """Parse a .torrent file. Raises `MetainfoError` (`UnsupportedTorrent` for v2-only)."""
    try:
        top, span = bencode.decode_torrent(data)
    except BencodeError as e:
        raise MetainfoError(f"not a valid torrent file: {e}") from None
    info = top.get(b"info")
    if span is None or not isinstance(info, dict):
        raise MetainfoError("missing or invalid 'info' dictionary")
    info_bytes = bytes(data[span[0] : span[1]])
    return _parse(
        info,
        info_bytes,
        trackers=_trackers(top),
        web_seeds=_web_seeds(top.get(b"url-list")),
        dht_nodes=_dht_nodes(top.get(b"nodes")),
        creation_date=_opt_int(top.get(b"creation date")),
        comment=_opt_text(top.get(b"comment.utf-8"), top.get(b"comment")),
        created_by=_opt_text(top.get(b"created by.utf-8"), top.get(b"created by")),
    )


def parse_info(
    info_bytes: bytes,
    *,
    expected_info_hash: bytes | None = None,
    trackers: Iterable[Iterable[str]] = (),
    web_seeds: Iterable[str] = (),
    dht_nodes: Iterable[tuple[str, int]] = (),
    creation_date: int | None = None,
    comment: str | None = None,
    created_by: str | None = None,
) -> Metainfo:
    """Parse a bare info dictionary (BEP 9: what ut_metadata delivers for a magnet).

    With `expected_info_hash`, the SHA-1 of `info_bytes` must equal it (metadata from peers is
    trusted only then). The keyword arguments carry what the magnet (not the info dict) knows.
    """
    info_bytes = bytes(info_bytes)
    if expected_info_hash is not None and hashlib.sha1(info_bytes).digest() != expected_info_hash:
        raise MetainfoError("info dictionary does not match the expected info-hash")
    try:
        info = bencode.decode(info_bytes)
    except BencodeError as e:
        raise MetainfoError(f"not a valid info dictionary: {e}") from None
    if not isinstance(info, dict):
        raise MetainfoError("info is not a dictionary")
    seen: set[str] = set()
    tiers: list[tuple[str, ...]] = []
    for tier in trackers:
        kept = []
        for url in tier:
            url = url.strip()
            if url and url not in seen:
                seen.add(url)
                kept.append(url)
        if kept:
            tiers.append(tuple(kept))
    return _parse(
        info,
        info_bytes,
        trackers=tuple(tiers),
        web_seeds=tuple(_dedup(str(u) for u in web_seeds if u)),
        dht_nodes=tuple((str(h), int(p)) for h, p in dht_nodes),
        creation_date=creation_date,
        comment=comment,
        created_by=created_by,
    )


# -- the info dictionary ------------------------------------------------------------------


@dataclass(slots=True)
class _RawFile:
    raw_path: tuple[bytes, ...]  # as in 'path' (or (name,) for single-file): for hybrid checks
    path: tuple[str, ...]  # sanitised, not yet unique
    length: int
    pad: bool
    attr: str
    mtime: int | None
    symlink_path: tuple[str, ...] | None


def _parse(
    info: dict[bytes, object],
    info_bytes: bytes,
    *,
    trackers: tuple[tuple[str, ...], ...],
    web_seeds: tuple[str, ...],
    dht_nodes: tuple[tuple[str, int], ...],
    creation_date: int | None,
    comment: str | None,
    created_by: str | None,
) -> Metainfo:
    info_hash = hashlib.sha1(info_bytes).digest()

    meta_version = info.get(b"meta version")
    if meta_version is not None and (type(meta_version) is not int or meta_version < 1):
        raise MetainfoError(f"invalid 'meta version' {_show_value(meta_version)}")
    if isinstance(meta_version, int) and meta_version > 2:
        raise UnsupportedTorrent(f"unsupported metainfo version {meta_version}")
    hybrid = meta_version == 2 and b"file tree" in info
    if meta_version == 2 and b"pieces" not in info:
        raise UnsupportedTorrent("BitTorrent v2-only torrents are not supported yet")

    raw_name = _bytes_field(info, b"name")
    if raw_name is None:
        raise MetainfoError("missing or invalid 'name'")
    name = sanitize_component(_text(_bytes_field(info, b"name.utf-8") or raw_name))
    if name is None:
        name = info_hash.hex()  # libtorrent's fallback for names like '..' or ''

    piece_length = info.get(b"piece length")
    if type(piece_length) is not int or piece_length <= 0:
        raise MetainfoError(f"invalid or missing 'piece length' {_show_value(piece_length)}")
    if piece_length > MAX_PIECE_LENGTH:
        raise MetainfoError(
            f"piece length {piece_length} is larger than the supported {MAX_PIECE_LENGTH}"
        )
    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes):
        raise MetainfoError("invalid or missing 'pieces'")
    if len(pieces) % 20:
        raise MetainfoError(f"'pieces' length {len(pieces)} is not a multiple of 20")

    raw_files = info.get(b"files")
    multi_file = raw_files is not None
    if multi_file:
        files = _parse_files(raw_files)
    else:
        length = info.get(b"length")
        if type(length) is not int or length < 0:
            raise MetainfoError(f"invalid file length {_show_value(length)} for {name!r}")
        files = [_RawFile((raw_name,), (name,), length, False, "", None, None)]

    total_size = sum(f.length for f in files)
    if total_size == 0:
        raise MetainfoError("torrent contains no data (total size is 0)")
    num_pieces = -(-total_size // piece_length)
    if len(pieces) != num_pieces * 20:
        raise MetainfoError(
            f"incorrect number of piece hashes: {len(pieces) // 20} for {num_pieces} pieces"
        )

    info_hash_v2 = None
    if hybrid:
        _check_hybrid(info.get(b"file tree"), files, piece_length, multi_file, raw_name)
        info_hash_v2 = hashlib.sha256(info_bytes).digest()

    entries: list[FileEntry] = []
    allocator = _PathAllocator()
    offset = 0
    for index, f in enumerate(files):
        path = f.path if f.pad or not multi_file else allocator.allocate(f.path)
        entries.append(
            FileEntry(index, path, f.length, offset, f.pad, f.attr, f.mtime, f.symlink_path)
        )
        offset += f.length

    return Metainfo(
        info_hash=info_hash,
        info_hash_v2=info_hash_v2,
        name=name,
        piece_length=piece_length,
        pieces=pieces,
        num_pieces=num_pieces,
        total_size=total_size,
        files=tuple(entries),
        multi_file=multi_file,
        private=_opt_int(info.get(b"private")) not in (None, 0),
        trackers=trackers,
        web_seeds=web_seeds,
        dht_nodes=dht_nodes,
        creation_date=creation_date,
        comment=comment,
        created_by=created_by,
        info_bytes=info_bytes,
    )


def _parse_files(raw_files: object) -> list[_RawFile]:
    if not isinstance(raw_files, list):
        raise MetainfoError("'files' is not a list")
    if not raw_files:
        raise MetainfoError("no files in torrent")
    files: list[_RawFile] = []
    for i, entry in enumerate(raw_files):
        if not isinstance(entry, dict):
            raise MetainfoError(f"file #{i} is not a dictionary")
        attr_raw = entry.get(b"attr")
        attr = _text(attr_raw) if isinstance(attr_raw, bytes) else ""
        raw_path = _path_list(entry.get(b"path"))
        pad = "p" in attr or (raw_path is not None and _legacy_pad(raw_path))
        if raw_path is None and not pad:
            raise MetainfoError(f"missing or invalid 'path' for file #{i}")
        symlink = "l" in attr
        length = entry.get(b"length")
        if symlink:
            length = 0  # BEP 47: a symlink's data is its target, not piece space (as libtorrent)
        elif type(length) is not int or length < 0:
            shown = _show_path(raw_path or ())
            raise MetainfoError(f"invalid file length {_show_value(length)} for {shown!r}")
        assert isinstance(length, int)
        utf8_path = _path_list(entry.get(b"path.utf-8"))
        shown_path = utf8_path if utf8_path is not None else (raw_path or ())
        path = _sanitize_path(shown_path)
        if pad and not path:
            path = (".pad", str(length))
        elif not path:
            path = (
                "_",
            )  # every component was empty or a dot: keep the data, name it like libtorrent
        symlink_path = None
        if symlink:
            target = _path_list(entry.get(b"symlink path"))
            symlink_path = _sanitize_path(target) if target is not None else None
        files.append(
            _RawFile(
                raw_path or (),
                path,
                length,
                pad,
                attr,
                _opt_int(entry.get(b"mtime")),
                symlink_path,
            )
        )
    return files


def _legacy_pad(raw_path: tuple[bytes, ...]) -> bool:
    """Pad files from before BEP 47's ``attr``, recognised by name as libtorrent does."""
    return raw_path[:1] == (_LEGACY_PAD_DIR,) or any(
        c.startswith(_BITCOMET_PAD_PREFIX) for c in raw_path
    )


def _check_hybrid(
    tree: object, files: Sequence[_RawFile], piece_length: int, multi_file: bool, raw_name: bytes
) -> None:
    """BEP 52 hybrids: the v1 file list must be the v2 file tree, piece-aligned by pad files."""
    v2 = _file_tree_files(tree)
    v1: list[tuple[tuple[bytes, ...], int]] = []
    offset = 0
    for f in files:
        if not f.pad:
            if f.length and offset % piece_length:
                raise MetainfoError(
                    f"hybrid torrent: file {_show_path(f.raw_path)!r} is not piece-aligned"
                )
            v1.append((f.raw_path if multi_file else (raw_name,), f.length))
        offset += f.length
    if v1 != v2:
        raise MetainfoError("hybrid torrent: the v1 and v2 file lists do not match")


def _file_tree_files(tree: object) -> list[tuple[tuple[bytes, ...], int]]:
    """The files of a BEP 52 ``file tree`` in tree order, iteratively (no recursion)."""
    if not isinstance(tree, dict):
        raise MetainfoError("invalid 'file tree'")
    out: list[tuple[tuple[bytes, ...], int]] = []
    stack: list[tuple[tuple[bytes, ...], Any]] = [((), iter(tree.items()))]
    while stack:
        prefix, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        key, node = item
        path = (*prefix, key)
        if not isinstance(node, dict) or not node:
            raise MetainfoError(f"invalid 'file tree' entry {_show_path(path)!r}")
        leaf = node.get(b"")
        if leaf is None:
            stack.append((path, iter(node.items())))
            continue
        if not isinstance(leaf, dict) or len(node) != 1:
            raise MetainfoError(f"invalid 'file tree' entry {_show_path(path)!r}")
        attr = leaf.get(b"attr")
        length = 0 if isinstance(attr, bytes) and b"l" in attr else leaf.get(b"length")
        if type(length) is not int or length < 0:
            raise MetainfoError(f"invalid file length {_show_value(length)} in 'file tree'")
        out.append((path, length))
    return out


# -- paths --------------------------------------------------------------------------------


def sanitize_component(raw: str) -> str | None:
    """One safe path component, or None if nothing usable is left (``""``, ``.``, ``..``)."""
    text = _UNSAFE_CHARS.sub("_", raw)
    if text in ("", ".", ".."):
        return None
    return _fit(text, "")


def _sanitize_path(components: Sequence[bytes]) -> tuple[str, ...]:
    out = []
    for c in components:
        s = sanitize_component(_text(c))
        if s is not None:
            out.append(s)
    return tuple(out)


def _split_ext(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot > 0 and len(name) - dot <= _MAX_EXT_CHARS:
        return name[:dot], name[dot:]
    return name, ""


def _fit(name: str, suffix: str) -> str:
    """`name` with `suffix` inserted before its extension, cut to `MAX_COMPONENT_BYTES`."""
    if not suffix and len(name.encode()) <= MAX_COMPONENT_BYTES:
        return name
    stem, ext = _split_ext(name)
    tail = suffix + ext
    budget = MAX_COMPONENT_BYTES - len(tail.encode())
    if budget < 1:  # pragma: no cover - extensions are short by construction
        stem, tail = name, suffix
        budget = MAX_COMPONENT_BYTES - len(tail.encode())
    # Cutting the UTF-8 bytes and dropping a partial last character keeps a character boundary.
    stem = stem.encode()[:budget].decode("utf-8", "ignore")
    return stem + tail


class _PathAllocator:
    """Makes file paths unique, in torrent order: no file equals, or is a directory of, another.

    A directory whose name is taken by an earlier file is renamed once (``dir.1``) and that
    rename is reused by every later file inside it; a file whose path is taken by an earlier
    file or directory becomes ``name.N.ext`` with the smallest free N. Linear overall: each
    clash key remembers the last N it tried.
    """

    __slots__ = ("_dir_alias", "_dirs", "_files", "_next")

    def __init__(self) -> None:
        self._files: set[tuple[str, ...]] = set()
        self._dirs: set[tuple[str, ...]] = set()
        self._dir_alias: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._next: dict[tuple[str, ...], int] = {}

    def allocate(self, path: tuple[str, ...]) -> tuple[str, ...]:
        parent: tuple[str, ...] = ()
        for component in path[:-1]:
            wanted = (*parent, component)
            alias = self._dir_alias.get(wanted)
            if alias is None:
                alias = wanted
                if wanted in self._files:
                    alias = self._free(parent, component, directory=True)
                    self._dir_alias[wanted] = alias
            parent = alias
            self._dirs.add(parent)
        wanted = (*parent, path[-1])
        if wanted in self._files or wanted in self._dirs:
            wanted = self._free(parent, path[-1], directory=False)
        self._files.add(wanted)
        return wanted

    def _free(self, parent: tuple[str, ...], name: str, *, directory: bool) -> tuple[str, ...]:
        key = (*parent, name)
        n = self._next.get(key, 1)
        while True:
            candidate = (*parent, _fit(name, f".{n}"))
            n += 1
            taken = candidate in self._files or (not directory and candidate in self._dirs)
            if not taken:
                self._next[key] = n
                return candidate


# -- small field readers ------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _bytes_field(d: dict[bytes, object], key: bytes) -> bytes | None:
    v = d.get(key)
    return v if isinstance(v, bytes) else None


def _path_list(v: object) -> tuple[bytes, ...] | None:
    if not isinstance(v, list) or not all(isinstance(c, bytes) for c in v):
        return None
    return tuple(v)


def _opt_int(v: object) -> int | None:
    return v if type(v) is int else None


def _opt_text(*candidates: object) -> str | None:
    for v in candidates:
        if isinstance(v, bytes):
            return _text(v)
    return None


def _show_path(path: Sequence[bytes]) -> str:
    shown = "/".join(_UNSAFE_CHARS.sub("_", _text(c)) for c in path)
    return shown if len(shown) <= 200 else shown[:200] + "…"


def _show_value(v: object) -> str:
    if type(v) is int:
        return str(v)
    if v is None:
        return "(missing)"
    return f"(a {type(v).__name__})"


def _dedup(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _url(v: object, *, allow_space: bool) -> str | None:
    """A URL from a bencoded string, stripped; None if unusable (not text, empty, control chars)."""
    if not isinstance(v, bytes):
        return None
    try:
        url = v.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not url or len(url) > _MAX_URL_CHARS:
        return None
    if any(ord(ch) < 0x20 or ch == "\x7f" or (ch == " " and not allow_space) for ch in url):
        return None
    return url


def _trackers(top: dict[bytes, object]) -> tuple[tuple[str, ...], ...]:
    """BEP 12 tiers; ``announce`` alone becomes one tier. Duplicates are dropped everywhere."""
    seen: set[str] = set()
    tiers: list[tuple[str, ...]] = []
    announce_list = top.get(b"announce-list")
    if isinstance(announce_list, list):
        for tier in announce_list:
            urls = tier if isinstance(tier, list) else [tier]
            kept = []
            for raw in urls:
                url = _url(raw, allow_space=False)
                if url is not None and url not in seen:
                    seen.add(url)
                    kept.append(url)
            if kept:
                tiers.append(tuple(kept))
    if not tiers:
        url = _url(top.get(b"announce"), allow_space=False)
        if url is not None:
            tiers.append((url,))
    return tuple(tiers)


def _web_seeds(v: object) -> tuple[str, ...]:
    """BEP 19 ``url-list``: one string or a list of strings; bad entries are skipped."""
    items = v if isinstance(v, list) else [v]
    urls = (_url(item, allow_space=True) for item in items)
    return tuple(_dedup(u for u in urls if u is not None))


def _dht_nodes(v: object) -> tuple[tuple[str, int], ...]:
    """BEP 5 ``nodes``: ``[[host, port], …]``; bad entries are skipped."""
    if not isinstance(v, list):
        return ()
    out: list[tuple[str, int]] = []
    for node in v:
        if not (isinstance(node, list) and len(node) == 2):
            continue
        host, port = node
        if not isinstance(host, bytes) or type(port) is not int or not 0 < port < 65536:
            continue
        try:
            text = host.decode("ascii").strip()
        except UnicodeDecodeError:
            continue
        if text and len(text) <= 255 and text.isprintable() and " " not in text:
            out.append((text, port))
    return tuple(dict.fromkeys(out))
