"""`torrentfs make`'s lean parser (make_cli.parse_fast) reads exactly what argparse reads.

The plain forms skip argparse (start-up, see tests/test_make_startup.py); everything else falls
back to the argparse parser built from the same option table. For any argv the lean parser
accepts, argparse must accept it too and give the same values; the fallback cases must really
fall back; and the plain forms must really be read without argparse (else the speed-up is gone
and the property below would hold vacuously).
"""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torrentfs.cli import build_parser
from torrentfs.make_cli import OPTIONS, MakeArgs, parse_fast, parse_size

DESTS = ["path", *(option.dest for option in OPTIONS)]


def argparse_reading(argv: list[str]) -> dict[str, object] | None:
    """What argparse makes of ``make ARGV``: the values, or None for a usage error."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            namespace = build_parser("make").parse_args(["make", *argv])
    except SystemExit:
        return None
    return {dest: getattr(namespace, dest) for dest in DESTS}


def fast_reading(args: MakeArgs) -> dict[str, object]:
    return {dest: getattr(args, dest) for dest in DESTS}


PLAIN = [
    ["file.bin"],
    ["file.bin", "-o", "out.torrent"],
    ["-o", "out.torrent", "file.bin"],
    ["file.bin", "-oout.torrent", "-l1M", "-t2"],
    ["file.bin", "--output=out.torrent", "--piece-length=256K", "--threads", "3"],
    ["file.bin", "-o", "-", "-d", "-p", "-f"],
    ["dir", "-a", "http://a/announce", "-a", "udp://b:1", "-w", "http://w/", "--web-seed=x"],
    ["dir", "-c", "a comment", "-n", "name", "--created-by", "", "--no-date", "--private"],
    ["", "-o", "x"],
    ["-", "-l", "16 KiB"],
    ["a", "-o", "first", "-o", "second", "-l", "1M", "-l", "2m"],
]

FALLBACK = [
    [],
    ["-h"],
    ["--help"],
    ["a", "b"],
    ["a", "-pd"],
    ["a", "--out", "x"],  # an abbreviation: argparse's business
    ["a", "-o"],
    ["a", "-o", "-x"],
    ["a", "-o=x"],
    ["a", "--private=yes"],
    ["a", "-l", "huge"],
    ["a", "-t", "0"],
    ["--", "-a"],
    ["a", "--bogus"],
    ["-5"],
]


@pytest.mark.parametrize("argv", PLAIN)
def test_plain_forms_are_read_as_argparse_reads_them(argv: list[str]) -> None:
    fast = parse_fast(argv)
    assert fast is not None, argv
    assert fast_reading(fast) == argparse_reading(argv)


@pytest.mark.parametrize("argv", FALLBACK)
def test_other_forms_are_left_to_argparse(argv: list[str]) -> None:
    assert parse_fast(argv) is None


def test_parse_size() -> None:
    assert parse_size("262144") == 262144
    assert parse_size(" 256K ") == parse_size("256KiB") == parse_size("256 kb") == 256 * 1024
    assert parse_size("1M") == parse_size("1mib") == 1024**2
    assert parse_size("2G") == 2 * 1024**3
    for bad in ("", "K", "1.5M", "1T", "-1", "1MX", "٣"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)


TOKENS = st.sampled_from(
    [flag for option in OPTIONS for flag in option.flags]
    + ["-h", "--", "-pd", "--out", "--priv", "-o=x", "--output=", "-x", "--bogus", "-5"]
)
VALUES = st.sampled_from(
    ["f", "out.torrent", "-", "", "1M", "256K", "16384", "3", "0", "-1", "abc", "a b", "-o", "x=y"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(TOKENS, VALUES, st.text(max_size=6)), max_size=7))
def test_lean_parser_never_disagrees_with_argparse(argv: list[str]) -> None:
    fast = parse_fast(argv)
    if fast is not None:
        assert fast_reading(fast) == argparse_reading(argv)
