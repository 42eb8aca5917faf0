"""Geometry: files ⇄ pieces ⇄ blocks, checked on fixed layouts and random ones (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.errors import MetainfoError
from torrentfs.geometry import FileSlice, Geometry, GeometryError
from torrentfs.types import BLOCK_SIZE


def spans(lengths: list[int]) -> list[tuple[int, int]]:
    out = []
    offset = 0
    for length in lengths:
        out.append((offset, length))
        offset += length
    return out


def make(piece_length: int, lengths: list[int]) -> Geometry:
    return Geometry(piece_length, sum(lengths), spans(lengths))


# -- fixed layouts --------------------------------------------------------------------------


def test_single_file_with_short_last_piece() -> None:
    g = make(32768, [100_000])
    assert g.num_pieces == 4
    assert [g.piece_size(i) for i in range(4)] == [32768, 32768, 32768, 100_000 - 3 * 32768]
    assert g.piece_offset(3) == 98304
    assert g.num_blocks(0) == 2
    assert g.num_blocks(3) == 1
    assert g.block_size(3, 0) == 1696
    assert g.block_size(0, 1) == BLOCK_SIZE
    assert g.piece_file_slices(3) == [FileSlice(0, 98304, 0, 1696)]
    assert g.file_pieces(0) == range(4)
    assert g.file_at(0) == 0
    assert g.file_at(99_999) == 0


def test_piece_across_files_zero_length_and_pad() -> None:
    # a(10) | empty | b(5) | pad(1) | c(0) | d(16): piece length 8
    g = make(8, [10, 0, 5, 1, 0, 16])
    assert g.num_pieces == 4
    assert g.piece_file_slices(0) == [FileSlice(0, 0, 0, 8)]
    assert g.piece_file_slices(1) == [
        FileSlice(0, 8, 0, 2),
        FileSlice(2, 0, 2, 5),
        FileSlice(3, 0, 7, 1),
    ]
    assert g.piece_file_slices(2) == [FileSlice(5, 0, 0, 8)]
    assert g.piece_file_slices(3) == [FileSlice(5, 8, 0, 8)]
    assert g.file_pieces(1) == range(1, 1)
    assert len(g.file_pieces(4)) == 0
    assert g.file_pieces(2) == range(1, 2)
    assert g.file_pieces(5) == range(2, 4)
    assert g.file_at(10) == 2  # the empty file 1 at offset 10 holds no byte
    assert g.file_at(15) == 3
    assert g.file_at(16) == 5
    assert g.file_offset(5) == 16
    assert g.file_length(4) == 0


def test_pieces_for_range() -> None:
    g = make(10, [95])
    assert g.pieces_for_range(0, 95) == range(10)
    assert g.pieces_for_range(9, 2) == range(0, 2)
    assert g.pieces_for_range(10, 10) == range(1, 2)
    assert g.pieces_for_range(94, 1) == range(9, 10)
    assert g.pieces_for_range(95, 0) == range(9, 9)
    assert g.pieces_for_range(30, 0) == range(3, 3)
    with pytest.raises(ValueError):
        g.pieces_for_range(90, 6)
    with pytest.raises(ValueError):
        g.pieces_for_range(-1, 1)


def test_bounds() -> None:
    g = make(16, [40])
    for bad in (-1, 3):
        with pytest.raises(IndexError):
            g.piece_size(bad)
        with pytest.raises(IndexError):
            g.piece_file_slices(bad)
    with pytest.raises(IndexError):
        g.block_size(2, 1)
    with pytest.raises(IndexError):
        g.block_size(0, -1)
    with pytest.raises(IndexError):
        g.file_pieces(1)
    with pytest.raises(ValueError):
        g.file_at(40)
    with pytest.raises(ValueError):
        g.piece_at(-1)


def test_empty_torrent() -> None:
    g = Geometry(16384, 0, [(0, 0)])
    assert g.num_pieces == 0
    assert g.file_pieces(0) == range(0, 0)
    assert g.pieces_for_range(0, 0) == range(0, 0)


@pytest.mark.parametrize(
    ("piece_length", "total", "file_spans"),
    [
        (0, 10, [(0, 10)]),
        (-16, 10, [(0, 10)]),
        (16, 10, [(0, 9)]),
        (16, 10, [(0, 5), (6, 5)]),
        (16, 10, [(1, 10)]),
        (16, 10, [(0, 11), (11, -1)]),
        (16, -1, []),
    ],
)
def test_inconsistent_layout_is_a_metainfo_error(
    piece_length: int, total: int, file_spans: list[tuple[int, int]]
) -> None:
    with pytest.raises(GeometryError) as info:
        Geometry(piece_length, total, file_spans)
    assert isinstance(info.value, MetainfoError)


# -- random layouts ------------------------------------------------------------------------

piece_lengths = st.one_of(
    st.integers(1, 64), st.sampled_from([BLOCK_SIZE - 1, BLOCK_SIZE, 2 * BLOCK_SIZE, 3 * 7919])
)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A piece length and file lengths scaled to it: zero-length files, tiny (pad-like) files,
    files within one piece and files spanning several pieces."""
    piece_length = draw(piece_lengths)
    file_length = st.one_of(st.just(0), st.integers(1, 3), st.integers(1, 3 * piece_length + 5))
    lengths = draw(st.lists(file_length, min_size=1, max_size=12).filter(lambda x: sum(x) > 0))
    return piece_length, lengths


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_slices_tile_every_piece_in_order(layout: tuple[int, list[int]]) -> None:
    piece_length, lengths = layout
    g = make(piece_length, lengths)
    file_spans = spans(lengths)
    assert g.num_pieces == -(-sum(lengths) // piece_length)
    covered = 0
    for i in range(g.num_pieces):
        assert g.piece_offset(i) == covered
        position = 0
        for s in g.piece_file_slices(i):
            assert s.length > 0
            assert s.piece_offset == position
            f_off, f_len = file_spans[s.file_index]
            assert s.file_offset >= 0 and s.file_offset + s.length <= f_len
            # the slice's bytes are the piece's bytes
            assert f_off + s.file_offset == covered + position
            position += s.length
        assert position == g.piece_size(i)
        covered += position
    assert covered == g.total_size


@settings(max_examples=150, deadline=None)
@given(layouts(), st.data())
def test_pieces_for_range_is_minimal_and_covering(
    layout: tuple[int, list[int]], data: st.DataObject
) -> None:
    piece_length, lengths = layout
    g = make(piece_length, lengths)
    offset = data.draw(st.integers(0, g.total_size))
    length = data.draw(st.integers(0, g.total_size - offset))
    r = g.pieces_for_range(offset, length)
    assert r.step == 1
    if length == 0:
        assert len(r) == 0
        return
    first_byte, last_byte = offset, offset + length - 1
    assert g.piece_offset(r.start) <= first_byte < g.piece_offset(r.start) + g.piece_size(r.start)
    last = r[-1]
    assert g.piece_offset(last) <= last_byte < g.piece_offset(last) + g.piece_size(last)
    assert g.piece_at(first_byte) == r.start and g.piece_at(last_byte) == last


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_file_pieces_cover_the_file_and_file_at_inverts(layout: tuple[int, list[int]]) -> None:
    piece_length, lengths = layout
    g = make(piece_length, lengths)
    for f, (f_off, f_len) in enumerate(spans(lengths)):
        r = g.file_pieces(f)
        if f_len == 0:
            assert len(r) == 0
            continue
        assert r == g.pieces_for_range(f_off, f_len)
        # every piece in the range shares bytes with the file, and together they hold it all
        held = 0
        for i in r:
            held += sum(s.length for s in g.piece_file_slices(i) if s.file_index == f)
            assert any(s.file_index == f for s in g.piece_file_slices(i))
        assert held == f_len
        for probe in {f_off, f_off + f_len // 2, f_off + f_len - 1}:
            assert g.file_at(probe) == f
            assert g.file_offset(f) <= probe < g.file_offset(f) + g.file_length(f)


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_blocks_tile_pieces(layout: tuple[int, list[int]]) -> None:
    piece_length, lengths = layout
    g = make(piece_length, lengths)
    for i in range(g.num_pieces):
        sizes = [g.block_size(i, b) for b in range(g.num_blocks(i))]
        assert sum(sizes) == g.piece_size(i)
        assert all(s == BLOCK_SIZE for s in sizes[:-1])
        assert 0 < sizes[-1] <= BLOCK_SIZE
        with pytest.raises(IndexError):
            g.block_size(i, g.num_blocks(i))


def test_large_layout_is_fast_enough_to_build_and_query() -> None:
    # 60k files (btfs #88 scale) and 100k pieces: construction is linear, queries logarithmic.
    lengths = [((i * 7919) % 50_000) if i % 10 else 0 for i in range(60_000)]
    g = make(16384, lengths)
    total = 0
    for i in range(0, g.num_pieces, 97):
        total += sum(s.length for s in g.piece_file_slices(i))
    assert total == sum(g.piece_size(i) for i in range(0, g.num_pieces, 97))
    assert g.file_at(g.total_size - 1) == max(i for i, n in enumerate(lengths) if n)
