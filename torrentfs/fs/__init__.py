"""The FUSE edge (L6): the pure tree of torrents (`tree`), the pyfuse3 handlers (`operations`),
and mounting/unmounting (`mount`). pyfuse3 is imported only under this package (DESIGN.md §2)."""
