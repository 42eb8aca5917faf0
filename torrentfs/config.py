"""Mount settings from four sources (L6): command line, ``-o`` options, a TOML file, defaults.

What this module guarantees, and why:

* **One list of keys.** The keys of the config file and of ``-o key=value`` are derived from the
  mount command's own argparse parser (`option_specs`): ``--read-timeout`` is ``read_timeout``,
  a ``--no-upload`` switch is the boolean ``upload``, ``-v`` is the count ``verbose``. A new
  option is a new key everywhere at once; the three spellings cannot drift apart.
* **Precedence** is command line > ``-o`` > file > defaults (`merge`), per key.
* **Strict input.** An unknown key or option, or a value of the wrong type, is a `ConfigError`
  (a `TorrentfsError`): the command prints one line naming the file or option and exits 2.
  Config files are small: more than `MAX_CONFIG_BYTES` is refused before parsing.
* **What ``mount`` passes is understood.** ``mount.fuse3`` hands every option of an fstab line to
  the filesystem (fuse(8)); generic mount options that make no sense for a read-only FUSE mount
  (``defaults``, ``rw``, ``auto``, ``_netdev``, ``nofail``, ``x-systemd.*``, ...) are accepted
  and ignored (`IGNORED_OPTIONS`), FUSE options (``allow_other``, ``max_read=N``, ``nosuid``...)
  are passed to the kernel (`FUSE_FLAGS`, `FUSE_VALUED`).
* **Default directories** (`default_dirs`): a user instance follows the XDG base directory spec
  (``$XDG_CACHE_HOME/torrentfs`` for data, ``$XDG_STATE_HOME/torrentfs`` for resume state); a
  system instance -- run as root (fstab, the ``torrentfs@.service`` template) or with
  ``--system`` -- uses ``/var/cache/torrentfs`` and ``/var/lib/torrentfs``.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torrentfs.errors import TorrentfsError

MAX_CONFIG_BYTES = 1 << 20

SYSTEM_DOWNLOAD_DIR = Path("/var/cache/torrentfs")
SYSTEM_STATE_DIR = Path("/var/lib/torrentfs")

FUSE_FLAGS = frozenset(
    {
        "allow_other",
        "allow_root",
        "default_permissions",
        "auto_unmount",
        "nosuid",
        "nodev",
        "noexec",
        "noatime",
        "nodiratime",
        "relatime",
        "strictatime",
    }
)
"""Bare FUSE/kernel options handed to ``pyfuse3.init`` as given (fuse(8))."""

FUSE_VALUED = frozenset({"max_read"})
"""``key=value`` FUSE options handed to ``pyfuse3.init`` as given."""

IGNORED_OPTIONS = frozenset(
    {
        "defaults",
        "rw",
        "ro",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "_netdev",
        "nofail",
        "suid",
        "dev",
        "exec",
        "async",
        "sync",
        "dirsync",
        "atime",
        "diratime",
        "norelatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "silent",
        "loud",
        "drop_privileges",
        "fsname",
        "subtype",
        "setuid",
        "comment",
    }
)
"""Generic mount(8) options: the mount is always read-only, nosuid and nodev, and named
``torrentfs``; these change nothing (``fsname``/``subtype`` may carry a value)."""

IGNORED_PREFIXES = ("x-", "comment=")
"""``x-systemd.automount``, ``x-gvfs-show``...: meant for mount(8) and systemd, not for us."""

Kind = Literal["value", "flag", "negated", "count", "append"]


class ConfigError(TorrentfsError):
    """A bad config file, ``-o`` option or value (the user's fault: exit status 2)."""


@dataclass(frozen=True)
class OptionSpec:
    """One setting: its key (config file and ``-o``), argparse ``dest``, and how to read it."""

    key: str
    dest: str
    kind: Kind
    action: argparse.Action = field(compare=False, repr=False)

    def convert(self, value: object, where: str) -> Any:
        """A file (TOML-typed) or ``-o`` (string) value -> what argparse would have stored."""
        if self.kind in ("flag", "negated"):
            flag = _as_bool(value, where)
            return (not flag) if self.kind == "negated" else flag
        if self.kind == "count":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ConfigError(f"{where}: expected a number")
            try:
                return max(0, int(value))
            except ValueError:
                raise ConfigError(f"{where}: expected a number, not {value!r}") from None
        if self.kind == "append":
            # A TOML list, or one value (``-o pin=x``, repeatable): always a list.
            items = value if isinstance(value, list) else [value]
            return [self._convert_one(item, where) for item in items]
        return self._convert_one(value, where)

    def _convert_one(self, value: object, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string or a number")
        text = str(value)
        convert = self.action.type
        if convert is None or not callable(convert):
            return text
        try:
            return convert(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    raise ConfigError(f"{where}: expected true or false, not {value!r}")


NOT_SETTINGS = frozenset({"help", "options", "config", "clear_stale"})
"""Parser destinations that are not settings of a mount (they act on the command itself)."""


def option_specs(parser: argparse.ArgumentParser) -> dict[str, OptionSpec]:
    """Every setting of ``parser`` by key: long options and positionals, minus `NOT_SETTINGS`."""
    specs: dict[str, OptionSpec] = {}
    for action in parser._actions:
        dest = action.dest
        if dest in NOT_SETTINGS or dest == argparse.SUPPRESS:
            continue
        kind: Kind
        key = dest
        if isinstance(action, argparse._StoreTrueAction):
            if dest.startswith("no_"):
                kind, key = "negated", dest[3:]
            else:
                kind = "flag"
        elif isinstance(action, argparse._CountAction):
            kind = "count"
        elif isinstance(action, argparse._AppendAction):
            kind = "append"
        elif isinstance(action, argparse._StoreAction):
            kind = "value"
        else:
            continue
        specs[key] = OptionSpec(key, dest, kind, action)
    return specs


# -------------------------------------------------------------------------- sources


@dataclass
class Layer:
    """Settings from one source: ``dest -> value``, plus the FUSE options it asked for."""

    values: dict[str, Any] = field(default_factory=dict)
    fuse: list[str] = field(default_factory=list)


def _fuse_key(key: str) -> str | None:
    """The FUSE option named by ``key`` (``-`` and ``_`` alike), if it is one."""
    norm = key.replace("-", "_")
    if norm in FUSE_FLAGS or norm in FUSE_VALUED:
        return norm
    return None


def load_file(path: Path, specs: Mapping[str, OptionSpec]) -> Layer:
    """Read a TOML config file whose keys are `specs` keys or FUSE options."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file larger than {MAX_CONFIG_BYTES} bytes")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_mapping(table, specs, str(path))


def from_mapping(table: Mapping[str, object], specs: Mapping[str, OptionSpec], where: str) -> Layer:
    """Settings from parsed TOML (or any mapping): unknown keys are a `ConfigError`."""
    layer = Layer()
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        spec = specs.get(key)
        here = f"{where}: {raw_key}"
        if spec is not None:
            layer.values[spec.dest] = spec.convert(value, here)
            continue
        fuse = _fuse_key(key)
        if fuse in FUSE_FLAGS:
            if _as_bool(value, here):
                layer.fuse.append(fuse)
        elif fuse in FUSE_VALUED:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ConfigError(f"{here}: expected a number")
            layer.fuse.append(f"{fuse}={value}")
        else:
            raise ConfigError(f"{here}: unknown key (known: {', '.join(sorted(specs))})")
    return layer


def split_options(values: Iterable[str]) -> list[str]:
    """``["a,b=1", "c"]`` -> ``["a", "b=1", "c"]`` (as mount(8) and ``-o`` spell them)."""
    return [o.strip() for v in values for o in v.split(",") if o.strip()]


def from_options(options: Iterable[str], specs: Mapping[str, OptionSpec]) -> Layer:
    """Settings from ``-o`` options: torrentfs keys, FUSE options, ignored mount options."""
    layer = Layer()
    for opt in options:
        raw_key, eq, raw_value = opt.partition("=")
        key = raw_key.strip().replace("-", "_")
        where = f"-o {opt}"
        spec = specs.get(key)
        if spec is None and key.startswith("no") and not eq:
            # `-o noupload` / `-o no_dht`: the negated spelling of a boolean key.
            negated = specs.get(key[2:].lstrip("_"))
            if negated is not None and negated.kind in ("flag", "negated"):
                layer.values[negated.dest] = negated.convert(False, where)
                continue
        if spec is not None:
            if not eq:
                if spec.kind not in ("flag", "negated", "count"):
                    raise ConfigError(f"{where}: needs a value ({key}=...)")
                value: object = True if spec.kind != "count" else 1
            else:
                value = raw_value
            converted = spec.convert(value, where)
            if spec.kind == "append":  # `-o pin=a,pin=b`: every one counts
                converted = layer.values.get(spec.dest, []) + converted
            layer.values[spec.dest] = converted
        elif key in FUSE_FLAGS and not eq:
            layer.fuse.append(key)
        elif key in FUSE_VALUED and eq:
            layer.fuse.append(f"{key}={raw_value}")
        elif key in IGNORED_OPTIONS or opt.startswith(IGNORED_PREFIXES):
            continue
        else:
            raise ConfigError(f"{where}: unknown mount option")
    return layer


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The ``dest`` of every option actually given in ``argv`` (not filled by a default).

    Options are parsed once more with every default suppressed; an optional positional counts
    when it holds a value (argparse would run its type on a suppressed default).
    """
    defaults: dict[str, Any] = {}
    positionals = {a.dest for a in parser._actions if not a.option_strings}
    for action in parser._actions:
        defaults[action.dest] = action.default
        if action.option_strings:
            action.default = argparse.SUPPRESS
        else:
            action.default = None
    try:
        given = vars(parser.parse_args(list(argv)))
    finally:
        for action in parser._actions:
            action.default = defaults[action.dest]
    return {d for d, v in given.items() if d not in positionals or v is not None}


def merge(
    defaults: argparse.Namespace,
    cli: set[str],
    options: Layer,
    file: Layer | None,
) -> tuple[argparse.Namespace, list[str]]:
    """Per key: command line > ``-o`` > file > defaults; FUSE options are the union."""
    merged = argparse.Namespace(**vars(defaults))
    for layer in (file, options):  # later layers win
        if layer is None:
            continue
        for dest, value in layer.values.items():
            if dest not in cli:
                setattr(merged, dest, value)
    fuse: list[str] = []
    for layer in (file, options):
        if layer is not None:
            fuse += [o for o in layer.fuse if o not in fuse]
    return merged, fuse


def is_system_instance(*, system_flag: bool = False) -> bool:
    """System instance: asked with ``--system``, or running as root (fstab, system units)."""
    return system_flag or os.geteuid() == 0


def default_dirs(*, system: bool) -> tuple[Path, Path]:
    """``(download_dir, state_dir)`` for a system instance, or per XDG for a user."""
    if system:
        return SYSTEM_DOWNLOAD_DIR, SYSTEM_STATE_DIR
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return Path(cache) / "torrentfs", Path(state) / "torrentfs"


__all__ = [
    "FUSE_FLAGS",
    "FUSE_VALUED",
    "IGNORED_OPTIONS",
    "ConfigError",
    "Layer",
    "OptionSpec",
    "default_dirs",
    "explicit_dests",
    "from_mapping",
    "from_options",
    "is_system_instance",
    "load_file",
    "merge",
    "option_specs",
    "split_options",
]
