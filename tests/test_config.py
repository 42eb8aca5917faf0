"""Mount settings: keys derived from the parser, precedence CLI > -o > file > defaults, strict
input (unknown keys and bad values are one-line errors), system vs XDG default directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from torrentfs import config
from torrentfs.app import UsageError, build_mount_parser, main_mount, resolve_settings
from torrentfs.config import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_keys_are_derived_from_the_parser() -> None:
    specs = config.option_specs(build_mount_parser())
    for key in ("download_dir", "state_dir", "read_timeout", "readahead_min", "readahead_max",
                "readahead_seconds", "port", "listen", "upload", "dht", "metainfo_dir",
                "mountpoint", "verbose", "foreground", "log_file"):  # fmt: skip
        assert key in specs, key
    assert specs["upload"].kind == "negated" and specs["upload"].dest == "no_upload"
    assert "options" not in specs and "config" not in specs and "help" not in specs


def test_precedence_cli_over_o_over_file_over_defaults(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "m.toml",
        'read_timeout = 7\nreadahead_max = "64M"\nport = 7000\nupload = false\n'
        "readahead_min = 1048576\n",
    )
    s = resolve_settings(
        ["meta", "mnt", "--config", str(cfg), "-o", "read_timeout=9,port=7001",
         "--port", "7002"],
    )  # fmt: skip
    a = s.args
    assert a.port == 7002  # CLI beats -o and file
    assert a.read_timeout == 9.0  # -o beats file
    assert a.readahead_max == 64 << 20 and a.readahead_min == 1 << 20  # file beats defaults
    assert a.no_upload is True
    assert a.readahead_seconds == build_mount_parser().get_default("readahead_seconds")


def test_config_file_as_the_only_argument_names_the_mount(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    cfg = write(
        tmp_path / "media.toml",
        f'metainfo_dir = "{tmp_path / "meta"}"\nmountpoint = "{tmp_path / "mnt"}"\n'
        "allow_other = true\nmax_read = 131072\n",
    )
    s = resolve_settings([str(cfg), "--foreground"])
    assert s.args.metainfo_dir == tmp_path / "meta" and s.args.mountpoint == tmp_path / "mnt"
    assert s.args.foreground is True
    assert s.fuse == ["allow_other", "max_read=131072"]


def test_o_options_sort_into_settings_fuse_and_ignored() -> None:
    specs = config.option_specs(build_mount_parser())
    layer = config.from_options(
        config.split_options(["defaults,rw,dev,suid,_netdev,nofail,x-systemd.automount",
                              "allow_other,nosuid,max_read=65536,nodht,upload=no,listen=[::1]:7"]),
        specs,
    )  # fmt: skip
    assert layer.fuse == ["allow_other", "nosuid", "max_read=65536"]
    assert layer.values == {"no_dht": True, "no_upload": True, "listen": ("::1", 7)}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["frobnicate"], "-o frobnicate: unknown mount option"),
        (["port=x"], "-o port=x: invalid literal for int() with base 10: 'x'"),
        (["dht=maybe"], "-o dht=maybe: expected true or false, not 'maybe'"),
        (["readahead_max"], "-o readahead_max: needs a value (readahead_max=...)"),
    ],
)
def test_bad_o_options(options: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_options(options, config.option_specs(build_mount_parser()))
    assert str(info.value) == message


def test_unknown_key_in_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path / "x.toml", 'download_dir = "/d"\ncolour = "blue"\n')
    assert main_mount(["meta", "mnt", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"torrentfs: {cfg}: colour: unknown key (known: ")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("read_timeout = [1]\n", "read_timeout: expected a string or a number"),
        ("upload = 3\n", "upload: expected true or false"),
        ("read_timeout = -1\n", "read_timeout: must be positive"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_bad_values_in_file(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = write(tmp_path / "x.toml", text)
    with pytest.raises(ConfigError) as info:
        resolve_settings(["meta", "mnt", "--config", str(cfg)])
    assert fragment in str(info.value) and str(cfg) in str(info.value)


def test_missing_paths_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="METAINFO_DIR and MOUNTPOINT are needed"):
        resolve_settings(["--config", str(write(tmp_path / "e.toml", ""))])
    with pytest.raises(ConfigError, match="No such file"):
        resolve_settings(["meta", "mnt", "--config", str(tmp_path / "none.toml")])
    big = write(tmp_path / "big.toml", "#" * (config.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        resolve_settings(["meta", "mnt", "--config", str(big)])


def test_default_dirs_system_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config.default_dirs(system=True) == (
        Path("/var/cache/torrentfs"),
        Path("/var/lib/torrentfs"),
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "s"))
    assert config.default_dirs(system=False) == (tmp_path / "c/torrentfs", tmp_path / "s/torrentfs")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.default_dirs(system=False) == (
        tmp_path / ".cache/torrentfs",
        tmp_path / ".local/state/torrentfs",
    )
    assert config.is_system_instance(system_flag=True)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert not config.is_system_instance()
    s = resolve_settings(["meta", "mnt"])
    assert s.args.download_dir == tmp_path / ".cache/torrentfs"
    s = resolve_settings(["meta", "mnt", "--system"])
    assert s.args.state_dir == Path("/var/lib/torrentfs")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert resolve_settings(["meta", "mnt"]).args.download_dir == Path("/var/cache/torrentfs")


def test_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = resolve_settings(["meta", "mnt", "-o", "download_dir=d,log_file=l.log"])
    assert s.args.metainfo_dir == tmp_path / "meta"
    assert s.args.download_dir == tmp_path / "d" and s.args.log_file == tmp_path / "l.log"


def test_cache_size_and_pins_from_every_source(tmp_path: Path) -> None:
    cfg = write(tmp_path / "m.toml", 'cache_size = "1G"\npin = ["Show/*.mkv", "Film*"]\n')
    s = resolve_settings(["meta", "mnt", "--config", str(cfg)])
    assert s.args.cache_size == 1 << 30 and s.args.pin == ["Show/*.mkv", "Film*"]
    s = resolve_settings(["meta", "mnt", "--config", str(cfg), "-o", "cache_size=128M,pin=a,pin=b"])
    assert s.args.cache_size == 128 << 20 and s.args.pin == ["a", "b"]
    s = resolve_settings(["meta", "mnt", "-o", "pin=x", "--cache-size", "2G", "--pin", "y"])
    assert s.args.cache_size == 2 << 30 and s.args.pin == ["y"]
    assert resolve_settings(["meta", "mnt"]).args.cache_size is None
    with pytest.raises(ConfigError, match="cache_size"):
        resolve_settings(["meta", "mnt", "-o", "cache_size=lots"])
    with pytest.raises(ConfigError, match="pin"):
        resolve_settings(
            ["meta", "mnt", "--config", str(write(tmp_path / "b.toml", "pin = [1.5, true]\n"))]
        )
