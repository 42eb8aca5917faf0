"""argparse, as the command line uses it (L6): help wrapped to the terminal without ``shutil``.

Imported only when a command's parser is built (`torrentfs.cli.build_parser`): `torrentfs make`
in its plain forms never imports argparse at all (see `torrentfs.make_cli`).
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ArgumentParser", "HelpFormatter", "terminal_columns"]


def terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`, without importing shutil (and zlib, bz2, lzma)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, minus its ``import shutil``: argparse builds one for every
    `add_argument`, so the stock one costs every command a few milliseconds of start-up."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = terminal_columns() - 2  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width)


class ArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose subparsers (the same class) use `_HelpFormatter` by default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
