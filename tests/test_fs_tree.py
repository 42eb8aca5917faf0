"""The mount's tree (fs/tree.py): names, inodes, pads, clashes, lookup counts, big listings."""

from __future__ import annotations

from fsutil import make_metainfo

from torrentfs.fs.tree import ROOT_INODE, FsTree, clash_name


def names(tree: FsTree, inode: int = ROOT_INODE) -> list[bytes]:
    return [n.name for n in tree.children(inode)]


def test_single_and_multi_file_torrents_at_top_level() -> None:
    tree = FsTree(mount_time=5)
    single = make_metainfo("movie.mkv", length=1000, creation_date=None)
    multi = make_metainfo("album", [("cd1/01 ünï.flac", 10), ("cd1/02.flac", 0), ("cover.jpg", 7)])
    s = tree.add_torrent(single.info_hash, single)
    m = tree.add_torrent(multi.info_hash, multi)
    assert not s.is_dir and s.size == 1000 and s.mtime == 5  # no creation date: mount time
    assert m.is_dir and m.mtime == 1_600_000_000
    assert names(tree) == [b"movie.mkv", b"album"]
    cd1 = tree.lookup(m.inode, b"cd1")
    assert cd1 is not None and cd1.is_dir
    assert names(tree, cd1.inode) == ["01 ünï.flac".encode(), b"02.flac"]
    empty = tree.lookup(cd1.inode, b"02.flac")
    assert empty is not None and empty.size == 0 and empty.file is not None
    assert m.nlink == 3 and tree.root.nlink == 3
    st = tree.statistics()
    assert (st.files, st.dirs, st.total_size, st.torrents) == (4, 3, 1017, 2)


def test_pad_files_are_never_shown() -> None:
    tree = FsTree(mount_time=0)
    mi = make_metainfo("p", [("a", 100), ("b", 50)], pads={0: 16284})
    top = tree.add_torrent(mi.info_hash, mi)
    assert names(tree, top.inode) == [b"a", b"b"]
    b = tree.lookup(top.inode, b"b")
    assert b is not None and b.file is not None and b.file.offset == 16384
    assert b.visible_index == 1


def test_name_clashes_get_a_stable_info_hash_suffix() -> None:
    tree = FsTree(mount_time=0)
    first = make_metainfo("x.mkv", length=1, salt="1")
    second = make_metainfo("x.mkv", length=2, salt="2")
    d1 = make_metainfo("x.mkv", [("f", 1)], salt="3")
    tree.add_torrent(first.info_hash, first)
    b = tree.add_torrent(second.info_hash, second)
    c = tree.add_torrent(d1.info_hash, d1)
    tag2 = second.info_hash.hex()[:8]
    assert b.name == f"x [{tag2}].mkv".encode()
    assert c.name == f"x.mkv [{d1.info_hash.hex()[:8]}]".encode()
    assert clash_name("noext", b"\xab" * 20, is_dir=False) == "noext [abababab]"
    # Existing names never change when the first one goes.
    tree.remove_torrent(first.info_hash)
    assert tree.top(second.info_hash) is b and b.name == f"x [{tag2}].mkv".encode()


def test_adding_the_same_torrent_twice_is_idempotent() -> None:
    tree = FsTree(mount_time=0)
    mi = make_metainfo("a", length=3)
    assert tree.add_torrent(mi.info_hash, mi) is tree.add_torrent(mi.info_hash, mi)
    assert len(names(tree)) == 1


def test_inodes_are_never_reused_and_forget_frees_detached_nodes() -> None:
    tree = FsTree(mount_time=0)
    mi = make_metainfo("d", [("a", 1), ("s/b", 2)])
    top = tree.add_torrent(mi.info_hash, mi)
    a = tree.lookup(top.inode, b"a")
    assert a is not None
    tree.remember(a.inode)
    tree.remember(top.inode, 2)
    seen = set(tree.nodes)
    removed = tree.remove_torrent(mi.info_hash)
    assert removed is top and tree.lookup(ROOT_INODE, b"d") is None
    assert tree.lookup(top.inode, b"a") is None  # detached: no lookups below it
    assert set(tree.nodes) == {ROOT_INODE, top.inode, a.inode}  # still known to the kernel
    assert tree.get(a.inode) is a and not a.attached
    tree.forget(a.inode, 1)
    assert tree.get(a.inode) is None
    tree.forget(top.inode, 1)
    assert tree.get(top.inode) is not None
    tree.forget(top.inode, 1)
    assert tree.get(top.inode) is None
    again = tree.add_torrent(mi.info_hash, mi)
    assert again.inode not in seen and again.name == b"d"
    assert tree.statistics().files == 2


def test_forget_on_live_nodes_keeps_them() -> None:
    tree = FsTree(mount_time=0)
    mi = make_metainfo("f", length=4)
    top = tree.add_torrent(mi.info_hash, mi)
    tree.remember(top.inode)
    tree.forget(top.inode, 5)
    tree.forget(12345, 1)
    tree.forget(ROOT_INODE, 1)
    assert tree.get(top.inode) is top and top.nlookup == 0


def test_placeholder_is_an_empty_directory() -> None:
    tree = FsTree(mount_time=7)
    node = tree.add_placeholder(b"\x01" * 20, "Some Name")
    assert node.is_dir and node.placeholder and names(tree, node.inode) == []
    assert tree.lookup(ROOT_INODE, b"Some Name") is node


def test_listing_resumes_after_any_offset_and_survives_changes() -> None:
    tree = FsTree(mount_time=0)
    tops = []
    for i in range(20):
        mi = make_metainfo(f"t{i:02}", length=i + 1)
        tops.append(tree.add_torrent(mi.info_hash, mi))
    listed = [n.inode for n in tree.children(ROOT_INODE)]
    assert listed == sorted(listed) and len(listed) == 20
    half = listed[9]
    tree.remove_torrent(tops[3].info_hash or b"")
    tree.remove_torrent(tops[15].info_hash or b"")
    rest = [n.inode for n in tree.children(ROOT_INODE, after=half)]
    assert rest == [i for i in listed[10:] if i != tops[15].inode]


def test_sixty_thousand_files() -> None:
    files = [(f"d{i // 1000:02}/f{i:05}.bin", 1) for i in range(60_000)]
    mi = make_metainfo("big", files, piece_length=1 << 20)
    tree = FsTree(mount_time=0)
    top = tree.add_torrent(mi.info_hash, mi)
    assert len(names(tree, top.inode)) == 60
    d = tree.lookup(top.inode, b"d59")
    assert d is not None
    last = [n.name for n in tree.children(d.inode)][-1]
    assert last == b"f59999.bin"
    assert tree.statistics().files == 60_000
