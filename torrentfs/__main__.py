"""`python -m torrentfs` runs the command-line interface."""

from torrentfs.cli import run

run()
