"""Measured figures of the hardening harness (issue 7's closing note), reported after a run.

Tests call `record` (a count: faults injected, bytes verified) and `peak` (a maximum: resident
memory) as they go; the hooks below add what pytest and hypothesis already know (cases run per
part of the harness, hypothesis examples executed). At the end of the session the non-zero
figures are printed under "harness figures" and, when ``TORRENTFS_FIGURES`` names a file,
written there as JSON -- so the numbers quoted for the harness are measured, never estimated.

Figures only describe a run; no test passes or fails because of them.
"""

from __future__ import annotations

import json
import os
import re
import resource
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

__all__ = ["peak", "record"]

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_peaks: dict[str, int] = {}

# Which test files make up which part of the harness (the rest is counted as "other").
PARTS = {
    "hostile peers": (
        "test_hostile_peers.py",
        "test_dht_hostile.py",
        "test_fd_cap.py",
        "test_resource_caps.py",
    ),
    "fuzz": ("fuzz", "test_linear_rejection.py"),
    "faults": ("test_faults.py", "test_fs_faults.py", "test_watch_faults.py"),
    "churn": ("test_churn.py",),
    "paths and privileges": ("test_path_faults.py", "test_privileges.py"),
}

_EXAMPLES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid test cases")


def record(name: str, amount: int = 1) -> None:
    """Add `amount` to the count `name` (thread-safe: reader threads call it)."""
    with _lock:
        _counts[name] += amount


def peak(name: str, value: int) -> None:
    """Keep the largest `value` seen under `name`."""
    with _lock:
        _peaks[name] = max(_peaks.get(name, 0), value)


def part_of(nodeid: str) -> str | None:
    filename = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    for part, markers in PARTS.items():
        if any(marker in filename for marker in markers):
            return part
    return None


def _examples(item: pytest.Item) -> int:
    """Hypothesis test cases this item ran (all phases), from the statistics its pytest plugin
    attaches to the item (``describe_statistics``); 0 for a non-hypothesis test."""
    text = getattr(item, "hypothesis_statistics", "")
    return sum(int(p) + int(f) + int(i) for p, f, i in _EXAMPLES.findall(text))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call":
        return
    part = part_of(item.nodeid) or "other"
    record(f"cases {report.outcome}: {part}")
    examples = _examples(item)
    if examples:
        record("hypothesis examples: " + ("fuzz" if part == "fuzz" else "property tests"), examples)
    if part == "hostile peers":
        # The engine runs in this process under the hostile harness: its peak is ours.
        peak("peak RSS of the test process (in-process engines), bytes", _max_rss_self())
    _write_json()  # after every test: a run cut short (timeout) still leaves its figures


def _max_rss_self() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def summary() -> dict[str, int]:
    with _lock:
        return {**dict(sorted(_counts.items())), **dict(sorted(_peaks.items()))}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures = summary()
    measured = {k: v for k, v in figures.items() if not k.startswith("cases ")}
    if measured:
        terminalreporter.section("harness figures")
        for name, value in figures.items():
            terminalreporter.write_line(f"{name}: {value:,}")
    _write_json()


def _write_json() -> None:
    target = os.environ.get("TORRENTFS_FIGURES")
    if target:
        Path(target).write_text(json.dumps(summary(), indent=1) + "\n")
