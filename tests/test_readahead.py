"""Readahead: sequential growth, kernel reordering, seeks, rate floor, EOF, head/tail."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torrentfs.readahead import MiB, ReadaheadPolicy, ReadaheadState, Window, head_tail

KiB = 1 << 10
GiB = 1 << 30
POLICY = ReadaheadPolicy(
    min_bytes=2 * MiB, max_bytes=32 * MiB, seconds_ahead=10.0, slack_bytes=1 * MiB, ahead_delay=3.0
)


def fresh(size: int = 4 * GiB) -> ReadaheadState:
    return ReadaheadState(POLICY, size)


def test_first_read_wants_only_the_read_and_the_next_opens_the_window() -> None:
    ra = fresh()
    w = ra.on_read(0, 128 * KiB, 5.0, 0.0)
    assert w == Window(0, 128 * KiB, 128 * KiB, 5.0, 8.0, False, 0)
    assert w.urgent == (0, 128 * KiB)
    assert w.ahead == (128 * KiB, 0)
    w = ra.on_read(128 * KiB, 128 * KiB, 5.0, 0.0)
    assert w.sequential and w.ahead == (256 * KiB, 4 * MiB)


def test_sequential_reads_double_the_window_up_to_max() -> None:
    ra = fresh()
    sizes = []
    pos = 0
    for _ in range(8):
        w = ra.on_read(pos, 128 * KiB, 0.0, 0.0)
        pos += 128 * KiB
        sizes.append(w.end - w.urgent_end)
    assert sizes == [0, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB, 32 * MiB, 32 * MiB, 32 * MiB]


def test_random_reads_want_nothing_ahead() -> None:
    ra = fresh()
    for i, offset in enumerate([3 * GiB, 10 * MiB, 2 * GiB, 700 * MiB, 0, 4 * GiB - 64 * KiB]):
        w = ra.on_read(offset, 64 * KiB, float(i), 50 * MiB)
        assert not w.sequential and w.end == w.urgent_end == offset + 64 * KiB


def test_window_is_at_least_seconds_ahead_of_the_download_rate() -> None:
    ra = fresh()
    ra.on_read(0, 128 * KiB, 0.0, 0.0)
    w = ra.on_read(128 * KiB, 128 * KiB, 1.0, 1.5 * MiB)  # 10 s x 1.5 MiB/s = 15 MiB
    assert w.end - w.urgent_end == 15 * MiB
    w = ra.on_read(256 * KiB, 128 * KiB, 2.0, 100 * MiB)  # capped
    assert w.end - w.urgent_end == 32 * MiB
    assert w.sequential


def test_kernel_out_of_order_reads_stay_sequential() -> None:
    ra = fresh()
    order = [0, 2, 1, 3, 5, 4, 6]  # 128 KiB chunks, as parallel FUSE readahead delivers them
    windows = [ra.on_read(i * 128 * KiB, 128 * KiB, 0.0, 0.0) for i in order]
    assert [w.sequential for w in windows] == [False] + [True] * 6
    # the chunk behind the front neither grows nor moves the window
    assert windows[2].end == windows[1].end
    assert windows[2].start == 128 * KiB and windows[2].urgent_end == 256 * KiB
    assert ra.window_bytes == 32 * MiB  # grew on each of the 4 forward reads after the first


def test_seek_resets_to_min_at_the_new_position() -> None:
    ra = fresh()
    for i in range(6):
        ra.on_read(i * 128 * KiB, 128 * KiB, 0.0, 0.0)
    assert ra.window_bytes == 32 * MiB
    w = ra.on_read(3 * GiB, 64 * KiB, 1.0, 50 * MiB)
    assert not w.sequential and ra.window_bytes == 2 * MiB
    assert (w.start, w.urgent_end, w.end) == (3 * GiB, 3 * GiB + 64 * KiB, 3 * GiB + 64 * KiB)
    # continuing from there is sequential again (and the rate floor applies)
    w = ra.on_read(3 * GiB + 64 * KiB, 64 * KiB, 2.0, 1 * MiB)
    assert w.sequential and w.end - w.urgent_end == 10 * MiB
    # a jump back further than the slack is a seek too
    w = ra.on_read(3 * GiB - 2 * MiB, 4 * KiB, 3.0, 1 * MiB)
    assert not w.sequential and w.end == 3 * GiB - 2 * MiB + 4 * KiB


def test_the_wanted_range_holds_the_slack_behind_the_front_within_the_run() -> None:
    ra = fresh()
    q = POLICY.slack_bytes // 4
    w = ra.on_read(100 * MiB, q, 0.0, 0.0)  # a seek: the run starts here
    assert w.hold == 100 * MiB
    # the kernel's readahead: reads sent together, served out of order
    w = ra.on_read(100 * MiB + 3 * q, q, 0.0, 0.0)
    assert w.sequential and w.hold == 100 * MiB  # never before the run's start
    w = ra.on_read(100 * MiB + q, q, 0.0, 0.0)  # behind the front: still wanted
    assert w.sequential and w.hold == 100 * MiB and w.end == 100 * MiB + 4 * q + ra.window_bytes
    for i in range(4, 12):
        w = ra.on_read(100 * MiB + i * q, q, 0.0, 0.0)
    assert w.hold == 100 * MiB + 12 * q - POLICY.slack_bytes  # the front minus the slack
    w = ra.on_read(3 * GiB, 4 * KiB, 0.0, 0.0)  # a seek starts a new run
    assert w.hold == 3 * GiB == w.start


def test_small_skip_within_slack_is_sequential() -> None:
    ra = fresh()
    ra.on_read(0, 128 * KiB, 0.0, 0.0)
    w = ra.on_read(128 * KiB + 900 * KiB, 128 * KiB, 0.0, 0.0)
    assert w.sequential and w.start == 1028 * KiB


def test_end_of_file_clamps() -> None:
    size = 3 * MiB + 5
    ra = fresh(size)
    w = ra.on_read(size - 10, 128 * KiB, 0.0, 0.0)
    assert (w.start, w.urgent_end, w.end) == (size - 10, size, size)
    assert w.ahead == (size, 0)
    w = ra.on_read(size + 100, 10, 0.0, 0.0)  # past EOF: nothing to want
    assert (w.start, w.urgent_end, w.end) == (size, size, size)
    empty = ReadaheadState(POLICY, 0)
    w = empty.on_read(0, 4096, 0.0, 0.0)
    assert (w.start, w.urgent_end, w.end) == (0, 0, 0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        fresh().on_read(-1, 10, 0.0, 0.0)
    with pytest.raises(ValueError):
        fresh().on_read(0, -10, 0.0, 0.0)
    with pytest.raises(ValueError):
        ReadaheadState(POLICY, -1)
    with pytest.raises(ValueError):
        ReadaheadPolicy(min_bytes=2 * MiB, max_bytes=1 * MiB)
    with pytest.raises(ValueError):
        ReadaheadPolicy(min_bytes=0)
    with pytest.raises(ValueError):
        ReadaheadPolicy(seconds_ahead=-1.0)


@given(
    size=st.integers(0, 10 * GiB),
    reads=st.lists(
        st.tuples(st.integers(0, 11 * GiB), st.integers(0, 1 * MiB), st.floats(0, 1e9)),
        max_size=40,
    ),
)
def test_windows_are_always_well_formed(size: int, reads: list[tuple[int, int, float]]) -> None:
    ra = fresh(size)
    for offset, length, rate in reads:
        w = ra.on_read(offset, length, 0.0, rate)
        assert 0 <= w.hold <= w.start <= w.urgent_end <= w.end <= size
        assert w.start - w.hold <= POLICY.slack_bytes or w.hold == w.start
        assert w.start == min(offset, size) and w.urgent_end == min(offset + length, size)
        assert POLICY.min_bytes <= ra.window_bytes <= POLICY.max_bytes
        assert w.end - w.urgent_end <= POLICY.max_bytes + POLICY.slack_bytes
        if not w.sequential:
            assert ra.window_bytes == POLICY.min_bytes
            assert w.end == w.urgent_end  # a seek fetches nothing ahead


# -- head and tail on open -----------------------------------------------------------------


def test_head_tail_of_a_big_file() -> None:
    size = 4 * GiB
    assert head_tail(size, fraction=0.0) == ((0, 2 * MiB), (size - 2 * MiB, size))
    ranges = head_tail(size, fraction=0.0025)  # ~10 MiB each
    assert ranges == ((0, int(size * 0.0025)), (size - int(size * 0.0025), size))
    capped = head_tail(100 * GiB, fraction=0.0025, limit=32 * MiB)
    assert capped == ((0, 32 * MiB), (100 * GiB - 32 * MiB, 100 * GiB))


def test_head_tail_of_small_files_is_the_whole_file() -> None:
    assert head_tail(3 * MiB) == ((0, 3 * MiB),)
    assert head_tail(4 * MiB) == ((0, 4 * MiB),)
    assert head_tail(1) == ((0, 1),)
    assert head_tail(0) == ()
    assert head_tail(5 * MiB, head=1 * MiB, tail=1 * MiB) == ((0, 1 * MiB), (4 * MiB, 5 * MiB))
