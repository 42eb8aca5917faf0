"""Command-line interface (L6): `torrentfs info|magnet|make|download|seed|...`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("torrentfs: not yet", file=sys.stderr)
    return 2
