"""How many examples a fuzz test runs: its CI count, ten times that under the ``long`` profile.

Tests that fix their own ``max_examples`` (so CI stays quick while still fuzzing hard) would
otherwise ignore ``HYPOTHESIS_PROFILE=long``; ``examples(n)`` makes the long run scale them too,
as ``tests/test_fuzz_formats.py`` does for its own.
"""

from __future__ import annotations

import os

__all__ = ["LONG", "examples"]

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def examples(ci: int) -> int:
    return ci * 10 if LONG else ci
