"""The layering rules of docs/ARCHITECTURE.md, checked on the source (ast), not by convention.

Every module under torrentfs/ must have a layer in `LAYERS` (an unknown module fails, so the
table stays current), may import torrentfs modules only of its own layer or below, and may use
I/O libraries only where the architecture allows them:

* trio, socket, httpx (and the other async/socket families) only from L4 up -- L1-L3 are
  sans-IO. (ARCHITECTURE.md says "httpx only in net/"; the session owns the shared
  ``httpx.AsyncClient`` the tracker clients use, so the rule enforced is the layer one.)
* pyfuse3 only in ``fs/``; watchdog only in ``watch.py``.

Imports inside functions count too (the walk covers the whole tree).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "torrentfs"

# Module (dotted, relative to the package) -> layer. A package name maps every module under it
# (its __init__ too) unless a more specific entry exists. Planned modules are listed so that the
# table is ready for them; a module that is neither here nor under a listed package fails.
LAYERS: dict[str, int] = {
    # L0 values
    "__init__": 0,
    "types": 0,
    "errors": 0,
    # L1 formats (pure)
    "bencode": 1,
    "metainfo": 1,
    "magnet": 1,
    "geometry": 1,
    "bitfield": 1,
    # L2 sans-IO protocols
    "wire": 2,
    "tracker": 2,
    "dht": 2,
    # L3 pure policy (time passed in)
    "picker": 3,
    "choker": 3,
    "readahead": 3,
    "piece_state": 3,
    "rate": 3,
    "pex": 3,
    "eviction": 3,
    "piece_memory": 3,
    # L4 I/O
    "net": 4,
    "storage": 4,
    "create": 4,
    # L5 engine
    "torrent": 5,
    "session": 5,
    "reader": 5,
    "metadata_fetch": 5,
    "magnet_handle": 5,
    "budget": 5,
    "stored_check": 5,
    # L6 edges
    "fs": 6,
    "watch": 6,
    "status": 6,
    "config": 6,
    "daemon": 6,
    "app": 6,
    "cli": 6,
    "cli_argparse": 6,
    "make_cli": 6,
    "engine_cli": 6,
    "dht_cli": 6,
    "progress": 6,
    "__main__": 6,
}

# I/O libraries that sans-IO layers (L1-L3) must not touch.
IO_FROM_L4 = ("trio", "socket", "httpx", "anyio", "asyncio", "selectors", "ssl")


def _only_under(prefix: str) -> Callable[[str], bool]:
    return lambda module: module == prefix or module.startswith(prefix + ".")


RESTRICTED: dict[str, tuple[str, Callable[[str], bool]]] = {
    "pyfuse3": ("only in fs/", _only_under("fs")),
    "watchdog": ("only in watch.py", lambda module: module == "watch"),
}


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name relative to the package ("wire.messages")."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return None


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(module: str) -> bool:
    return module == "__init__" or (PACKAGE_DIR / module.replace(".", "/")).is_dir()


def imports_of(module: str, source: str) -> list[tuple[str, int]]:
    """Absolute names imported by `module` (its dotted name relative to the package) with lines.

    Names inside the package come back as ``torrentfs.x.y``; ``from torrentfs import x`` yields
    ``torrentfs.x`` (which may be a module or an attribute of the package).
    """
    tree = ast.parse(source)
    if module == "__init__":
        package = ["torrentfs"]
    else:
        package = ["torrentfs", *module.split(".")]
        if not _is_package(module):
            package.pop()
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("torrentfs"):
                # `from . import x` / `from torrentfs import x`: x is usually a module.
                found.extend((f"{target}.{alias.name}", node.lineno) for alias in node.names)
            else:
                found.append((target, node.lineno))
    return found


def _resolve_internal(name: str) -> str:
    """``torrentfs.a.b.C`` -> the longest prefix naming a module (on disk or in the table)."""
    parts = name.split(".")[1:]
    for n in range(len(parts), 0, -1):
        candidate = parts[:n]
        path = PACKAGE_DIR.joinpath(*candidate)
        dotted = ".".join(candidate)
        if path.with_suffix(".py").exists() or path.is_dir() or dotted in LAYERS:
            return dotted
    return "__init__"  # an attribute of the package itself, e.g. __version__


def check_module(module: str, source: str) -> list[str]:
    """Every layering violation in `source` (the text of package-relative `module`)."""
    layer = layer_of(module)
    if layer is None:
        return [f"{module}: not in the layer table of tests/test_layers.py (add it)"]
    problems: list[str] = []
    for name, line in imports_of(module, source):
        top = name.split(".")[0]
        if top == "torrentfs":
            target = _resolve_internal(name)
            target_layer = layer_of(target)
            if target_layer is not None and target_layer > layer:
                problems.append(
                    f"{module}:{line}: L{layer} imports {target} (L{target_layer}): "
                    "imports must point downward"
                )
        elif top in IO_FROM_L4 and layer < 4:
            problems.append(f"{module}:{line}: L{layer} imports {name} (I/O only from L4 up)")
        elif top in RESTRICTED:
            rule, allowed = RESTRICTED[top]
            if not allowed(module):
                problems.append(f"{module}:{line}: imports {name} ({top} {rule})")
    return problems


def all_modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


# -- the checker itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("metainfo", "from .bencode import decode\nfrom . import errors\n", []),
        ("metainfo", "import trio\n", ["L1 imports trio"]),
        ("wire.protocol", "def f():\n    import socket\n", ["L2 imports socket"]),
        ("wire.protocol", "from ..session import Session\n", ["imports session (L5)"]),
        ("wire.protocol", "from . import messages\nfrom .. import bitfield\n", []),
        ("picker", "from torrentfs.net.peer import PeerConnection\n", ["imports net.peer (L4)"]),
        ("picker", "from torrentfs import session\n", ["imports session (L5)"]),
        ("picker", "from torrentfs import __version__\n", []),
        ("net.peer", "import trio\nimport httpx\n", []),
        ("tracker.http_codec", "import httpx\n", ["L2 imports httpx"]),
        ("session", "import pyfuse3\n", ["pyfuse3 only in fs/"]),
        ("fs.operations", "import pyfuse3\nfrom ..session import Session\n", []),
        ("app", "from watchdog.observers import Observer\n", ["watchdog only in watch.py"]),
        ("watch", "from watchdog.observers import Observer\n", []),
        ("nonsense", "", ["not in the layer table"]),
        ("create", "import threading\nfrom .bencode import encode\nfrom . import cli\n", ["L6"]),
    ],
)
def test_checker_finds_violations(module: str, source: str, expected: list[str]) -> None:
    problems = check_module(module, source)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def test_module_names_from_paths() -> None:
    assert module_name(PACKAGE_DIR / "wire" / "messages.py") == "wire.messages"
    assert module_name(PACKAGE_DIR / "wire" / "__init__.py") == "wire"
    assert module_name(PACKAGE_DIR / "__init__.py") == "__init__"
    assert layer_of("wire.messages") == 2
    assert layer_of("fs") == 6
    assert layer_of("fs.tree") == 6
    assert layer_of("wirex") is None


# -- the real tree ----------------------------------------------------------------------------


def test_package_is_found() -> None:
    names = {module_name(p) for p in all_modules()}
    assert {"__init__", "errors", "types", "cli", "create"} <= names


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: module_name(p))
def test_module_respects_layers(path: Path) -> None:
    module = module_name(path)
    assert check_module(module, path.read_text(encoding="utf-8")) == []
