"""torrentfs: a FUSE filesystem that shows BitTorrent torrents as ordinary files.

Layers (imports point only downward; see docs/ARCHITECTURE.md and tests/test_layers.py):
L0 values, L1 formats, L2 sans-IO protocols, L3 pure policy, L4 I/O (trio), L5 engine,
L6 edges (FUSE, watcher, CLI).
"""

__version__ = "0.1.0"
