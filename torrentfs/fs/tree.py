"""The tree the mount shows (L6, pure): torrents -> directories and files, with inode numbers.

Guarantees, and why:

* **Stable inode numbers, never reused.** Numbers come from a monotonic counter; a torrent that
  is removed and added again gets fresh numbers. The kernel may still hold a removed inode (open
  handles, cached dentries) and must never see it turn into another file.
* **Lookup counts** (FUSE ``forget``): a node leaves the table only when it is detached from the
  tree *and* the kernel forgot it; live nodes stay (their content never changes).
* **Each torrent at the top level:** a multi-file torrent is a directory named after the torrent,
  a single-file torrent (BEP 3) is a file. Pad files (BEP 47) are never shown.
* **Name clashes between torrents are resolved deterministically:** the first torrent keeps the
  name, later ones get `` [<first 8 hex digits of the info-hash>]`` before the extension. The
  watcher adds torrents in sorted file-name order, so the same folder gives the same names at
  every start; existing names never change while mounted (the kernel caches entries for long).
* Sizes are exact; mtimes come from the file's BEP 47 ``mtime``, else the torrent's
  ``creation date``, else the mount time.
* Directory listings are cheap for 60,000-file torrents: children are kept in inode order, and a
  listing resumes with a bisection on the inode number (the readdir offset).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import dataclass

from torrentfs.metainfo import FileEntry, Metainfo, sanitize_component

ROOT_INODE = 1
"""FUSE's root inode (``FUSE_ROOT_ID``)."""

CLASH_SUFFIX_HEX = 8
"""Hex digits of the info-hash appended to a clashing top-level name."""


@dataclass(slots=True, eq=False)
class Node:
    """One entry: a directory (``children`` is a dict) or a file (``file`` is set)."""

    inode: int
    parent: int
    name: bytes
    mtime: int
    info_hash: bytes | None = None
    """The torrent this node belongs to (None for the root)."""
    file: FileEntry | None = None
    """For files: the torrent's file entry (its offset and length in the torrent's data)."""
    visible_index: int = -1
    """For files: position among the torrent's non-pad files (``TorrentStats.file_progress``)."""
    children: dict[bytes, int] | None = None
    subdirs: int = 0
    nlookup: int = 0
    attached: bool = True
    torrent_root: bool = False
    placeholder: bool = False
    """A torrent known only by its info-hash (a magnet without metadata yet): an empty dir."""
    _order: list[int] | None = None

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def size(self) -> int:
        return self.file.length if self.file is not None else 0

    @property
    def nlink(self) -> int:
        return 2 + self.subdirs if self.children is not None else 1

    def child_order(self) -> list[int]:
        """Child inode numbers, ascending (cached until the children change)."""
        if self._order is None:
            assert self.children is not None
            self._order = sorted(self.children.values())
        return self._order


@dataclass(frozen=True, slots=True)
class TreeStats:
    """Totals for ``statfs``."""

    files: int
    dirs: int
    total_size: int
    torrents: int


def encode_name(name: str) -> bytes:
    """A path component as the bytes the kernel sees (UTF-8; lone surrogates kept as bytes)."""
    return os.fsencode(name)


def clash_name(name: str, info_hash: bytes, *, is_dir: bool) -> str:
    """``name [ab12cd34]`` for a directory, ``stem [ab12cd34].ext`` for a file."""
    tag = f" [{info_hash.hex()[:CLASH_SUFFIX_HEX]}]"
    if not is_dir:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            return f"{stem}{tag}.{ext}"
    return name + tag


class FsTree:
    """The inode table and the tree of torrents. Pure: no FUSE, no clock (times passed in)."""

    def __init__(self, *, mount_time: int) -> None:
        self.mount_time = mount_time
        self._next_inode = ROOT_INODE + 1
        self.nodes: dict[int, Node] = {
            ROOT_INODE: Node(ROOT_INODE, ROOT_INODE, b"", mount_time, children={})
        }
        self.tops: dict[bytes, int] = {}
        """info-hash -> inode of the torrent's top-level entry."""
        self._files = 0
        self._dirs = 1
        self._total_size = 0

    # ------------------------------------------------------------------ queries

    @property
    def root(self) -> Node:
        return self.nodes[ROOT_INODE]

    def get(self, inode: int) -> Node | None:
        return self.nodes.get(inode)

    def lookup(self, parent: int, name: bytes) -> Node | None:
        """The attached child ``name`` of directory ``parent``, or None."""
        node = self.nodes.get(parent)
        if node is None or node.children is None or not node.attached:
            return None
        child = node.children.get(name)
        return None if child is None else self.nodes.get(child)

    def children(self, inode: int, after: int = 0) -> Iterator[Node]:
        """Children of a directory whose inode is greater than ``after`` (readdir offsets)."""
        node = self.nodes.get(inode)
        if node is None or node.children is None:
            return
        order = node.child_order()
        for i in range(bisect.bisect_right(order, after), len(order)):
            child = self.nodes.get(order[i])
            if child is not None:
                yield child

    def top(self, info_hash: bytes) -> Node | None:
        inode = self.tops.get(info_hash)
        return None if inode is None else self.nodes.get(inode)

    def statistics(self) -> TreeStats:
        return TreeStats(self._files, self._dirs, self._total_size, len(self.tops))

    def __len__(self) -> int:
        return len(self.nodes)

    # ------------------------------------------------------------------ building

    def _new(self, parent: Node, name: bytes, mtime: int, **kw: object) -> Node:
        node = Node(self._next_inode, parent.inode, name, mtime, **kw)  # type: ignore[arg-type]
        self._next_inode += 1
        self.nodes[node.inode] = node
        assert parent.children is not None
        parent.children[name] = node.inode
        parent._order = None
        if node.children is not None:
            parent.subdirs += 1
            self._dirs += 1
        else:
            self._files += 1
            self._total_size += node.size
        return node

    def _top_name(self, name: str, info_hash: bytes, *, is_dir: bool) -> bytes:
        root = self.root
        assert root.children is not None
        plain = encode_name(name)
        if plain not in root.children:
            return plain
        tagged = encode_name(clash_name(name, info_hash, is_dir=is_dir))
        n = 2
        candidate = tagged
        while candidate in root.children:  # only with colliding hash prefixes: still stable
            candidate = tagged + f" ({n})".encode()
            n += 1
        return candidate

    def add_torrent(self, info_hash: bytes, metainfo: Metainfo) -> Node:
        """Show a torrent (idempotent by info-hash); returns its top-level node."""
        existing = self.top(info_hash)
        if existing is not None:
            return existing
        mtime = metainfo.creation_date if metainfo.creation_date is not None else self.mount_time
        root = self.root
        if not metainfo.multi_file:
            entry = next(f for f in metainfo.files if not f.pad)
            name = self._top_name(entry.path[-1], info_hash, is_dir=False)
            top = self._new(
                root,
                name,
                entry.mtime if entry.mtime is not None else mtime,
                info_hash=info_hash,
                file=entry,
                visible_index=0,
                torrent_root=True,
            )
        else:
            name = self._top_name(metainfo.name, info_hash, is_dir=True)
            top = self._new(root, name, mtime, info_hash=info_hash, children={}, torrent_root=True)
            self._add_files(top, metainfo, info_hash, mtime)
        self.tops[info_hash] = top.inode
        return top

    def _add_files(self, top: Node, metainfo: Metainfo, info_hash: bytes, mtime: int) -> None:
        """Every non-pad file of `metainfo` under the directory `top`, at its path."""
        dirs: dict[tuple[str, ...], Node] = {(): top}
        visible = 0
        for entry in metainfo.files:
            if entry.pad:
                continue
            parent = self._ensure_dirs(dirs, entry.path[:-1], info_hash, mtime)
            leaf = encode_name(entry.path[-1])
            assert parent.children is not None
            if leaf not in parent.children:  # metainfo guarantees unique paths
                self._new(
                    parent,
                    leaf,
                    entry.mtime if entry.mtime is not None else mtime,
                    info_hash=info_hash,
                    file=entry,
                    visible_index=visible,
                )
            visible += 1

    def _ensure_dirs(
        self, dirs: dict[tuple[str, ...], Node], path: tuple[str, ...], info_hash: bytes, mtime: int
    ) -> Node:
        node = dirs.get(path)
        if node is not None:
            return node
        parent = self._ensure_dirs(dirs, path[:-1], info_hash, mtime)
        assert parent.children is not None
        name = encode_name(path[-1])
        existing = parent.children.get(name)
        if existing is not None and self.nodes[existing].is_dir:
            node = self.nodes[existing]
        else:
            node = self._new(parent, name, mtime, info_hash=info_hash, children={})
        dirs[path] = node
        return node

    def add_placeholder(self, info_hash: bytes, name: str, mtime: int | None = None) -> Node:
        """Show a torrent known only by its info-hash (a magnet) as an empty directory.

        `name` (a magnet's ``dn``) is untrusted: it is made one safe component, as torrent
        names are (a ``/`` in a name would make the kernel fail the whole root listing).
        """
        existing = self.top(info_hash)
        if existing is not None:
            return existing
        name = sanitize_component(name) or info_hash.hex()
        top = self._new(
            self.root,
            self._top_name(name, info_hash, is_dir=True),
            mtime if mtime is not None else self.mount_time,
            info_hash=info_hash,
            children={},
            torrent_root=True,
            placeholder=True,
        )
        self.tops[info_hash] = top.inode
        return top

    def fill_placeholder(self, info_hash: bytes, metainfo: Metainfo) -> Node | None:
        """A magnet's metadata arrived: its directory (same name, same inode) gets the files.

        Every file appears at its path inside the directory (for a single-file torrent, the
        one file). Returns the directory, or None if ``info_hash`` has no placeholder.
        """
        top = self.top(info_hash)
        if top is None or not top.placeholder or not top.attached:
            return None
        mtime = metainfo.creation_date if metainfo.creation_date is not None else top.mtime
        self._add_files(top, metainfo, info_hash, mtime)
        top.placeholder = False
        return top

    # ------------------------------------------------------------------ removal and forget

    def remove_torrent(self, info_hash: bytes) -> Node | None:
        """Detach a torrent's entries; returns its (former) top-level node, or None.

        Nodes the kernel still knows (lookup count > 0) stay in the table, detached, until
        `forget`; the others are dropped now. Their numbers are never handed out again.
        """
        inode = self.tops.pop(info_hash, None)
        if inode is None:
            return None
        top = self.nodes[inode]
        root = self.root
        assert root.children is not None
        if root.children.get(top.name) == inode:
            del root.children[top.name]
            root._order = None
            if top.is_dir:
                root.subdirs -= 1
        stack = [top]
        while stack:
            node = stack.pop()
            node.attached = False
            if node.children is not None:
                stack.extend(self.nodes[c] for c in node.children.values() if c in self.nodes)
                self._dirs -= 1
            else:
                self._files -= 1
                self._total_size -= node.size
            if node.nlookup <= 0:
                self.nodes.pop(node.inode, None)
        return top

    def remember(self, inode: int, count: int = 1) -> None:
        """The kernel learned ``inode`` (lookup, readdirplus entry): count it."""
        node = self.nodes.get(inode)
        if node is not None and inode != ROOT_INODE:
            node.nlookup += count

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped ``count`` references; a detached node with none left goes away."""
        node = self.nodes.get(inode)
        if node is None or inode == ROOT_INODE:
            return
        node.nlookup = max(0, node.nlookup - count)
        if node.nlookup == 0 and not node.attached:
            del self.nodes[inode]
