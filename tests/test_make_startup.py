"""`torrentfs make` start-up: it imports only what making a torrent needs.

`make` is a short command benchmarked against mktorrent (scripts/bench make), where Python's
start-up is a visible share of a half-second run. These tests pin what it may import, in a
fresh interpreter, so a stray top-level import (trio, the engine, typing, shutil) cannot creep
back unnoticed. They check module names, never time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torrentfs.cli import main
from torrentfs.cli_argparse import terminal_columns as _terminal_columns

FORBIDDEN = (
    # The engine and the mount: `make` never touches the network or FUSE.
    "trio",
    "httpx",
    "pyfuse3",
    "watchdog",
    "socket",
    "torrentfs.session",
    "torrentfs.torrent",
    "torrentfs.metainfo",
    "torrentfs.magnet",
    # Costly stdlib modules `make` does not need (see the comments in cli.py and create.py).
    "typing",
    "dataclasses",
    "inspect",
    "shutil",
    "threading",  # create.py starts its workers with _thread
    "urllib.parse",
    # argparse and what it brings: the plain forms of `make` are read by make_cli.parse_fast.
    "argparse",
    "re",
    "enum",
    "gettext",
    "locale",
    # hashlib loads blake2 and probes every algorithm; create.py takes OpenSSL's SHA-1 itself.
    "hashlib",
)


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from torrentfs.cli import main\n"
        f"status = main({argv!r})\n"
        "modules = sorted(sys.modules)\n"
        "import json\n"  # json imports re: only after the modules are listed
        "print(json.dumps([status, modules]), file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    status, modules = json.loads(r.stderr.strip().splitlines()[-1])
    assert status == 0, r.stderr
    return set(modules)


def test_make_imports_only_what_it_needs(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(bytes(range(256)) * 300)
    out = tmp_path / "data.torrent"
    modules = _modules_after(["make", str(src), "-o", str(out), "-d"])
    assert out.stat().st_size > 0
    assert {"torrentfs.create", "_hashlib"} <= modules
    assert sorted(m for m in FORBIDDEN if m in modules) == []


def test_make_forms_argparse_reads_still_work(tmp_path: Path) -> None:
    # Grouped flags are left to argparse (which then is imported); the torrent is the same.
    src = tmp_path / "data.bin"
    src.write_bytes(b"y" * 5000)
    plain, grouped = tmp_path / "plain.torrent", tmp_path / "grouped.torrent"
    lean = _modules_after(["make", str(src), "-o", str(plain), "-p", "-d"])
    full = _modules_after(["make", str(src), "-o", str(grouped), "-pd"])
    assert "argparse" not in lean and "argparse" in full
    assert plain.read_bytes() == grouped.read_bytes()


def test_make_with_trackers_still_lean(tmp_path: Path) -> None:
    # Checking URLs needs urllib.parse (which imports re, hence enum); the rest stays out.
    src = tmp_path / "data.bin"
    src.write_bytes(b"x" * 1000)
    modules = _modules_after(
        ["make", str(src), "-o", str(tmp_path / "t.torrent"), "-a", "http://127.0.0.1:1/a"]
    )
    allowed = {"urllib.parse", "re", "enum"}
    assert sorted(m for m in FORBIDDEN if m in modules and m not in allowed) == []


@pytest.mark.parametrize(("env", "expected"), [("100", 100), ("0", None), ("junk", None)])
def test_terminal_columns(monkeypatch: pytest.MonkeyPatch, env: str, expected: int | None) -> None:
    import shutil

    monkeypatch.setenv("COLUMNS", env)
    columns = _terminal_columns()
    if expected is not None:
        assert columns == expected
    else:  # as shutil.get_terminal_size: the terminal's width, or 80 without one
        assert columns == shutil.get_terminal_size().columns


def test_help_is_wrapped_to_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["make", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("--piece-length" in line for line in lines)
    assert max(len(line) for line in lines) <= 60
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["make", "--help"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) > 60


def test_modules_helper_fails_on_a_failing_command() -> None:
    # The helper must not pass vacuously when `make` exits early with an error.
    with pytest.raises(AssertionError):
        _modules_after(["make", "/nonexistent/path/for/make"])


def test_the_console_script_make_flushes_before_its_quick_exit(tmp_path: Path) -> None:
    # `torrentfs make` leaves with os._exit (cli.run): what it printed must still arrive whole,
    # through pipes, and its status must be make's own.
    script = Path(sys.executable).parent / "torrentfs"
    src = tmp_path / "data.bin"
    src.write_bytes(b"z" * 70_000)
    out = tmp_path / "data.torrent"
    ok = subprocess.run(
        [str(script), "make", str(src), "-o", str(out), "-l", "16K"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{out}: data.bin, 1 file(s),") and ok.stdout.endswith("\n")
    assert "5 pieces of 16.0 KiB, info hash " in ok.stdout
    assert out.stat().st_size > 100
    again = subprocess.run(
        [str(script), "make", str(src), "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2
    assert again.stderr == f"torrentfs: {out}: already exists (use --force to overwrite)\n"
    piped = subprocess.run(
        [str(script), "make", str(src), "-o", "-", "-d"], capture_output=True, timeout=60
    )
    assert piped.returncode == 0 and piped.stdout.startswith(b"d")
    assert piped.stdout.endswith(b"e") and b"(stdout): data.bin" in piped.stderr
