"""The command line: info / magnet / make, the mount hook, exit statuses and one-line errors.

Most cases run `cli.main` in-process (fast, exact stdout/stderr); a few run the installed entry
point and ``python -m torrentfs`` in a subprocess to prove what a user sees: the status, one
line on stderr, never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from torrentfs import cli
from torrentfs.bencode import decode, encode
from torrentfs.errors import StorageError
from torrentfs.magnet import parse_magnet
from torrentfs.metainfo import parse_metainfo
from torrentfs.progress import ProgressBar, format_duration, format_size

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
TESTDATA = ROOT.parent / "shared" / "testdata" / "torrents"
VERDICTS: dict[str, dict[str, object]] = json.loads(
    (TESTDATA / "libtorrent-2.0.8-verdicts.json").read_text()
)
REAL_WORLD_OK = sorted(
    k for k, v in VERDICTS.items() if k.startswith("real-world/") and v["ok"] and v["v1"]
)
WIRED = TESTDATA / "real-world" / "The WIRED CD - Rip. Sample. Mash. Share.torrent"
SINTEL = TESTDATA / "real-world" / "sintel.torrent"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("torrentfs: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def sh(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, input=stdin, timeout=60, check=False)


# -- info --json against libtorrent's verdicts ------------------------------------------------


@pytest.mark.parametrize("key", REAL_WORLD_OK)
def test_info_json_matches_libtorrent(capsys: pytest.CaptureFixture[str], key: str) -> None:
    verdict = VERDICTS[key]
    code, out, err = run(capsys, "info", "--json", str(TESTDATA / key))
    if verdict["v2"] and key.endswith("bittorrent-v2-test.torrent"):
        # v2-only: libtorrent accepts it, torrentfs does not support v2-only torrents (yet).
        assert_one_line_error(code, err, key.split("/")[-1], "unsupported torrent")
        return
    assert code == 0, err
    obj = json.loads(out)
    assert obj["info_hash"] == verdict["v1"]
    assert obj["info_hash_v2"] == verdict["v2"]
    assert obj["name"] == verdict["name"]
    assert obj["total_size"] == verdict["total_size"]
    assert obj["piece_length"] == verdict["piece_length"]
    assert obj["num_pieces"] == verdict["num_pieces"]
    assert isinstance(obj["private"], bool)
    assert isinstance(obj["trackers"], list)
    assert all(isinstance(tier, list) for tier in obj["trackers"])
    assert isinstance(obj["web_seeds"], list)
    num_files, num_pads = verdict["num_files"], verdict["num_pad_files"]
    assert isinstance(num_files, int) and isinstance(num_pads, int)
    assert len(obj["files"]) == num_files - num_pads
    # The verdict lists the first 50 files, pads included, with the torrent name in front for
    # multi-file torrents; pads are where our metainfo says so.
    m = parse_metainfo((TESTDATA / key).read_bytes())
    listed = verdict["files"]
    assert isinstance(listed, list)
    visible = iter(obj["files"])
    for entry, (lt_path, lt_size) in zip(m.files, listed, strict=False):
        assert entry.length == lt_size
        if entry.pad:
            continue
        ours = next(visible)
        assert ours["size"] == lt_size
        expected = lt_path.split("/", 1)[1] if m.multi_file else lt_path
        assert ours["path"] == expected


def test_info_json_trackers_and_web_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "--json", str(SINTEL))
    assert code == 0
    obj = json.loads(out)
    top = decode(SINTEL.read_bytes())
    assert isinstance(top, dict)
    assert obj["trackers"] == [[u.decode() for u in tier] for tier in top[b"announce-list"]]
    assert obj["web_seeds"] == ["https://webtorrent.io/torrents/"]
    assert obj["kind"] == "torrent"
    assert obj["files"][0] == {"path": "Sintel.de.srt", "size": 1652}


def test_info_human(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "info", str(WIRED))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "name:         The WIRED CD - Rip. Sample. Mash. Share"
    assert "info hash:    a88fda5954e89178c372716a6a78b8180ed4dad3" in lines
    assert "total size:   53.5 MiB (56,070,710 bytes)" in lines
    assert "pieces:       856 x 64.0 KiB (65536 bytes)" in lines
    assert "private:      no" in lines
    assert "web seeds:    https://webtorrent.io/torrents/" in lines
    assert "created:      2021-02-18 03:07:07 UTC" in lines
    assert "files:        18 files in The WIRED CD - Rip. Sample. Mash. Share/" in lines
    assert lines[-1] == "  76.3 KiB  poster.jpg"


def test_info_shows_tiers_and_escapes_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = {b"name": b"x", b"piece length": 16384, b"length": 3, b"pieces": b"\0" * 20}
    torrent = {
        b"info": info,
        b"announce": b"http://a.example/ann",
        b"announce-list": [[b"http://a.example/ann", b"http://b.example/ann"], [b"udp://c:1"]],
        b"comment": "evil \x1b[2J\x9b comment".encode(),  # ESC and CSI (C1) controls
    }
    p = tmp_path / "t.torrent"
    p.write_bytes(encode(torrent))
    code, out, _ = run(capsys, "info", str(p))
    assert code == 0
    assert "trackers:     tier 1: http://a.example/ann  http://b.example/ann" in out
    assert "              tier 2: udp://c:1" in out
    assert "\x1b" not in out and "\x9b" not in out
    assert "comment:      evil \\x1b[2J\\x9b comment" in out
    code, out, _ = run(capsys, "info", "--json", str(p))
    assert "\x9b" not in out
    assert json.loads(out)["comment"] == "evil \x1b[2J\x9b comment"


# -- magnet -----------------------------------------------------------------------------------


def test_magnet_has_hash_name_and_every_tracker(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "magnet", str(SINTEL))
    assert code == 0
    uri = out.strip()
    assert uri.startswith("magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a10&dn=Sintel")
    m = parse_metainfo(SINTEL.read_bytes())
    parsed = parse_magnet(uri)
    assert parsed.info_hash == m.info_hash
    assert parsed.display_name == "Sintel"
    assert parsed.trackers == tuple(url for tier in m.trackers for url in tier)
    assert len(parsed.trackers) == 8


def test_info_and_magnet_accept_magnets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = (
        "magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a10&dn=Sintel"
        "&tr=udp%3A%2F%2F127.0.0.1%3A6969&x.pe=127.0.0.1:6881"
    )
    code, out, _ = run(capsys, "info", "--json", uri)
    assert code == 0
    obj = json.loads(out)
    assert obj["kind"] == "magnet"
    assert obj["info_hash"] == "08ada5a7a6183aae1e09d831df6748d566095a10"
    assert obj["name"] == "Sintel"
    assert obj["trackers"] == [["udp://127.0.0.1:6969"]]
    assert obj["total_size"] is None and obj["files"] is None
    f = tmp_path / "s.magnet"
    f.write_text(uri + "\n")
    code, out, _ = run(capsys, "info", str(f))
    assert code == 0
    assert "info hash:    08ada5a7a6183aae1e09d831df6748d566095a10" in out
    assert "peers:        127.0.0.1:6881" in out
    code, out, _ = run(capsys, "magnet", str(f))
    assert code == 0
    assert parse_magnet(out.strip()) == parse_magnet(uri)


# -- bad input: exit 2, one line naming the file --------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def bad_inputs(tmp_path: Path) -> list[tuple[str, list[str]]]:
    real = SINTEL.read_bytes()
    info = {b"name": b"a", b"piece length": 16384, b"pieces": b"\0" * 20}
    negative = {b"info": {**info, b"files": [{b"length": -5, b"path": [b"b"]}]}}
    return [
        (str(tmp_path / "missing.torrent"), ["missing.torrent: No such file or directory"]),
        (str(tmp_path), ["Is a directory"]),
        (_write(tmp_path, "garbage.torrent", os.urandom(64) + b"xx"), ["invalid torrent"]),
        (_write(tmp_path, "empty.torrent", b""), ["empty.torrent: invalid torrent"]),
        (_write(tmp_path, "truncated.torrent", real[: len(real) // 2]), ["invalid torrent"]),
        (_write(tmp_path, "nested.torrent", b"l" * 100_000 + b"e" * 100_000), ["invalid"]),
        (_write(tmp_path, "dictnest.torrent", b"d1:ad1:a" * 5000), ["invalid torrent"]),
        (_write(tmp_path, "negative.torrent", encode(negative)), ["invalid torrent", "-5"]),
        (_write(tmp_path, "list.torrent", b"le"), ["list.torrent: invalid torrent"]),
        (_write(tmp_path, "bad.magnet", b"magnet:?xt=urn:btih:zz"), ["bad.magnet: invalid magnet"]),
        ("magnet:?dn=nohash", ["invalid magnet"]),
    ]


@pytest.mark.parametrize("command", ["info", "magnet"])
def test_bad_input_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    for path, fragments in bad_inputs(tmp_path):
        code, out, err = run(capsys, command, path)
        assert out == ""
        assert_one_line_error(code, err, *fragments)
        assert Path(path).name in err or path.startswith("magnet:")


def test_every_conformance_torrent_loads_or_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, verdict in VERDICTS.items():
        path = TESTDATA / key
        code, out, err = run(capsys, "info", "--json", str(path))
        if code == 0:
            obj = json.loads(out)
            if verdict["ok"]:
                assert obj["info_hash"] == verdict["v1"], key
        else:
            assert_one_line_error(code, err, str(path) + ": ")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["info"], ["info", "--bogus", "x"], ["make"], ["make", "x", "-l", "huge"]):
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert "usage:" in err
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("torrentfs ")


# -- the top-level guard and the mount hook ----------------------------------------------------


def test_guard_interrupt_bug_and_domain_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    def buggy(args: object) -> int:
        raise ZeroDivisionError("oops")

    def domain(args: object) -> int:
        raise StorageError("disk\nfull")

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert run(capsys, "info", "x")[0] == 130
    monkeypatch.setattr(cli, "cmd_info", buggy)
    code, _, err = run(capsys, "info", "x")
    assert code == 70
    assert "internal error" in err and "ZeroDivisionError: oops" in err
    monkeypatch.setattr(cli, "cmd_info", domain)
    code, _, err = run(capsys, "info", "x")
    assert_one_line_error(code, err, "torrentfs: disk full")


def test_mount_form_calls_app_main_mount(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType("torrentfs.app")
    fake.main_mount = lambda argv: calls.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torrentfs.app", fake)
    assert run(capsys, "/metainfo", "/mnt/point", "-o", "x")[0] == 0
    assert calls == [["/metainfo", "/mnt/point", "-o", "x"]]


def test_mount_form_without_app(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = importlib.import_module

    def no_app(name: str) -> types.ModuleType:
        if name == "torrentfs.app":
            raise ModuleNotFoundError("No module named 'torrentfs.app'", name=name)
        return real_import(name)

    monkeypatch.setattr(importlib, "import_module", no_app)
    code, out, err = run(capsys, "/metainfo", "/mnt/point")
    assert (code, out, err) == (2, "", "torrentfs: mounting is not available yet\n")


def test_external_subcommands_are_not_the_mount_form(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []
    fake = types.ModuleType("fake_engine_cli")

    def build(sub: object) -> None:
        p = sub.add_parser("download")  # type: ignore[attr-defined]
        p.add_argument("torrent")
        p.set_defaults(func=lambda args: seen.append(args.torrent) or 0)

    fake.build_download_parser = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_engine_cli", fake)
    monkeypatch.setitem(
        cli.EXTERNAL_COMMANDS, "download", ("fake_engine_cli", "build_download_parser", "dl")
    )
    assert run(capsys, "download", "t.torrent")[0] == 0
    assert seen == ["t.torrent"]
    monkeypatch.setitem(cli.EXTERNAL_COMMANDS, "download", ("torrentfs.nope", "b", "dl"))
    code, _, err = run(capsys, "download", "t.torrent")
    assert_one_line_error(code, err, "download: this command is not available yet")


# -- make -------------------------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.bin").write_bytes(os.urandom(50_000))
    (root / "src" / "sub" / "ö.txt").write_bytes(b"hello" * 1000)
    (root / "src" / "sub" / "empty").write_bytes(b"")
    return root / "src"


def test_make_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_tree(tmp_path)
    out = tmp_path / "out.torrent"
    code, stdout, err = run(
        capsys,
        "make", str(src), "-o", str(out),
        "-a", "http://127.0.0.1:1/a", "-a", "udp://127.0.0.1:2",
        "-w", "http://127.0.0.1:3/ws/",
        "--private", "--piece-length", "32K", "--comment", "c", "--name", "Näme",
        "--no-date", "--created-by", "me", "-t", "2",
    )  # fmt: skip
    assert code == 0, err
    assert err == ""  # stderr is not a terminal: no progress bar
    m = parse_metainfo(out.read_bytes())
    assert stdout.strip().endswith(f"info hash {m.info_hash.hex()}")
    assert m.name == "Näme"
    assert m.private
    assert m.piece_length == 32 * 1024
    assert m.trackers == (("http://127.0.0.1:1/a",), ("udp://127.0.0.1:2",))
    assert m.web_seeds == ("http://127.0.0.1:3/ws/",)
    assert (m.comment, m.created_by, m.creation_date) == ("c", "me", None)
    assert [("/".join(f.path), f.length) for f in m.visible_files()] == [
        ("a.bin", 50_000),
        ("sub/empty", 0),
        ("sub/ö.txt", 5000),
    ]
    top = decode(out.read_bytes())
    assert isinstance(top, dict)
    assert top[b"announce"] == b"http://127.0.0.1:1/a"
    blob = (src / "a.bin").read_bytes() + (src / "sub" / "ö.txt").read_bytes()
    for i in range(m.num_pieces):
        piece = blob[i * m.piece_length : (i + 1) * m.piece_length]
        assert hashlib.sha1(piece).digest() == m.piece_hash(i)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.torrent", "src"]


def test_make_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file.bin"
    f.write_bytes(os.urandom(100_000))
    os.chdir(tmp_path)
    code, _, err = run(capsys, "make", "file.bin")
    assert code == 0, err
    m = parse_metainfo((tmp_path / "file.bin.torrent").read_bytes())
    assert (m.name, m.multi_file, m.piece_length, m.trackers) == ("file.bin", False, 16384, ())
    assert m.created_by is not None and m.created_by.startswith("torrentfs ")
    assert isinstance(m.creation_date, int) and m.creation_date > 1_600_000_000


def test_make_to_stdout(tmp_path: Path) -> None:
    f = tmp_path / "file.bin"
    f.write_bytes(b"x" * 40_000)
    r = sh(str(VENV_BIN / "torrentfs"), "make", str(f), "-o", "-", "--no-date")
    assert r.returncode == 0, r.stderr
    m = parse_metainfo(r.stdout)
    assert m.total_size == 40_000
    assert r.stderr.decode().startswith("(stdout): file.bin,")


def test_make_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_tree(tmp_path)
    existing = tmp_path / "exists.torrent"
    existing.write_bytes(b"keep")
    (tmp_path / "emptydir").mkdir()
    cases: list[tuple[list[str], list[str]]] = [
        ([str(tmp_path / "nope"), "-o", "x"], ["nope: No such file or directory"]),
        ([str(tmp_path / "emptydir")], ["emptydir: no files to share"]),
        ([str(src), "-o", str(existing)], ["exists.torrent: already exists"]),
        ([str(src), "-o", str(tmp_path)], [f"{tmp_path}: is a directory"]),
        ([str(src), "-o", str(tmp_path / "no" / "dir.torrent")], ["dir.torrent: cannot write"]),
        ([str(src), "-o", str(src / "a.bin" / "x")], ["cannot write: Not a directory"]),
        ([str(src), "-o", str(src / "a.bin"), "-f"], ["refusing to overwrite a file being shared"]),
        ([str(src), "-o", str(tmp_path / "t"), "-l", "1000"], ["power of two"]),
        ([str(src), "-o", str(tmp_path / "t"), "-a", "bogus"], ["tracker 'bogus' is not a URL"]),
    ]
    for argv, fragments in cases:
        code, out, err = run(capsys, "make", *argv)
        assert out == ""
        assert_one_line_error(code, err, *fragments)
    assert existing.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emptydir", "exists.torrent", "src"]
    code, _, err = run(capsys, "make", str(src), "-o", str(existing), "--force")
    assert code == 0, err
    assert parse_metainfo(existing.read_bytes()).name == "src"


def test_make_warns_about_skipped_symlinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_tree(tmp_path)
    os.symlink(src / "a.bin", src / "link")
    code, _, err = run(capsys, "make", str(src), "-o", str(tmp_path / "t.torrent"))
    assert code == 0
    assert err == f"torrentfs: warning: skipped symbolic link: {src / 'link'}\n"


# -- as a user runs it --------------------------------------------------------------------------


def test_entry_points_in_a_subprocess(tmp_path: Path) -> None:
    r = sh(str(VENV_BIN / "torrentfs"), "info", "--json", str(WIRED))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["info_hash"] == "a88fda5954e89178c372716a6a78b8180ed4dad3"
    r = sh(str(VENV_BIN / "python"), "-m", "torrentfs", "magnet", str(WIRED))
    assert r.returncode == 0
    assert r.stdout.startswith(b"magnet:?xt=urn:btih:a88fda5954e89178c372716a6a78b8180ed4dad3")
    bad = tmp_path / "bad.torrent"
    bad.write_bytes(b"d4:infod6:lengthi-5e4:name1:a12:piece lengthi16384e6:pieces0:ee")
    r = sh(str(VENV_BIN / "torrentfs"), "info", str(bad))
    assert r.returncode == 2
    assert r.stdout == b""
    assert (
        r.stderr.decode() == f"torrentfs: {bad}: invalid torrent: invalid file length -5 for 'a'\n"
    )
    r = sh(str(VENV_BIN / "torrentfs"), "info")
    assert r.returncode == 2 and b"usage:" in r.stderr


# -- the progress bar -------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_silent_without_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressBar(100, "x", stream=stream) as bar:
        bar.update(50)
        bar.update(100)
    assert stream.getvalue() == ""


def test_progress_bar_draws_throttled_and_clears() -> None:
    now = [0.0]
    stream = FakeTTY()
    bar = ProgressBar(1000, "hashing", stream=stream, clock=lambda: now[0], min_interval=0.5)
    now[0] = 1.0
    bar.update(100)
    now[0] = 1.2
    bar.update(200)  # within min_interval: not drawn
    now[0] = 2.0
    bar.update(500)
    drawn = stream.getvalue().split("\r")[1:]
    assert len(drawn) == 2
    assert "10%" in drawn[0] and "50%" in drawn[1]
    assert "250 B/s" in drawn[1] and "ETA 0:02" in drawn[1]
    bar.update(1000)  # completion is always drawn
    assert "100%" in stream.getvalue().split("\r")[-1]
    bar.close()
    assert stream.getvalue().endswith("\r\x1b[K")
    bar.update(1000)
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_render_fits_width() -> None:
    bar = ProgressBar(10 * 1024**3, "x" * 10, enabled=True, clock=lambda: 0.0)
    bar.done = 5 * 1024**3
    for width in (20, 40, 80, 200):
        line = bar.render(10.0, width)
        assert len(line) <= width
    assert "[" in bar.render(10.0, 100) and "50%" in bar.render(10.0, 100)
    narrow = bar.render(10.0, 40)  # no room for a bar: the numbers stay, the label shrinks
    assert "50%" in narrow and "ETA" in narrow and len(narrow) <= 40


def test_formatting() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(1536) == "1.50 KiB"
    assert format_size(56_070_710) == "53.5 MiB"
    assert format_size(300 * 1024**3) == "300 GiB"
    assert format_duration(5) == "0:05"
    assert format_duration(3725) == "1:02:05"


def test_make_interrupted_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    import torrentfs.progress

    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 4 * 1024 * 1024))  # several read chunks

    def interrupt(self: ProgressBar, done: int) -> None:
        if done:
            raise KeyboardInterrupt

    monkeypatch.setattr(torrentfs.progress.ProgressBar, "update", interrupt)
    threads_before = threading.active_count()
    code, out, _ = run(capsys, "make", str(src), "-o", str(tmp_path / "t.torrent"), "-l", "16K")
    assert (code, out) == (130, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]
    for t in threading.enumerate():
        if t.name.startswith("torrentfs-hash-"):
            t.join(timeout=30)  # a guard against a hang, not a timing assertion
    assert threading.active_count() == threads_before


def test_help_points_to_the_mount_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "METAINFO_DIR MOUNTPOINT --help lists the mount options" in " ".join(
        out.split()
    )
    code, out, _ = run(capsys, str(tmp_path), str(tmp_path / "mnt"), "--help")
    assert code == 0
    for option in ("--read-timeout", "--foreground", "--clear-stale", "--config", "--log-file"):
        assert option in out


def test_download_writes_behind_unless_keep_page_cache() -> None:
    """`download` asks the store for write-behind (`FileStore.drop_written`); `seed` never."""
    from torrentfs.engine_cli import session_config

    download = cli.build_parser("download")
    plain = download.parse_args(["download", "x.torrent", "--no-dht"])
    assert session_config(plain, Path("/x")).drop_written
    kept = download.parse_args(["download", "x.torrent", "--no-dht", "--keep-page-cache"])
    assert not session_config(kept, Path("/x")).drop_written
    seed = cli.build_parser("seed").parse_args(["seed", "x.torrent", "--data", "/x", "--no-dht"])
    assert not session_config(seed, Path("/x")).drop_written


def test_mount_writes_behind_past_its_readahead_unless_keep_page_cache() -> None:
    """The mount's stores write behind (`FileStore.drop_written`) like the download's, a
    kernel readahead later (readers close behind the download are served from `PieceMemory`),
    not a readahead window later: that much fresh page cache per stream cost CPU."""
    from torrentfs.app import _session_config, build_mount_parser
    from torrentfs.storage.files import DROP_LAG

    parser = build_mount_parser()
    dirs = ["--download-dir", "/d", "--state-dir", "/s"]
    plain = parser.parse_args(["META", "MNT", *dirs, "--readahead-max", "64M"])
    config = _session_config(plain)
    assert config.drop_written
    assert config.drop_lag == DROP_LAG + plain.kernel_readahead
    kept = parser.parse_args(["META", "MNT", *dirs, "--keep-page-cache"])
    assert not _session_config(kept).drop_written
