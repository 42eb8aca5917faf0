"""Piece storage (L4): the `PieceStore` interface, sparse files on disk, and resume state.

See `base` (interface, in-memory store), `files` (`FileStore`) and `resume` (crash-safe
verified-piece state and full recheck).
"""

from torrentfs.storage.base import MemoryStore, PieceStore, Presence, StoreClosed
from torrentfs.storage.files import FileStore, UnsafePath
from torrentfs.storage.resume import ResumeWriter, load_resume, recheck, resume_path

__all__ = [
    "FileStore",
    "MemoryStore",
    "PieceStore",
    "Presence",
    "ResumeWriter",
    "StoreClosed",
    "UnsafePath",
    "load_resume",
    "recheck",
    "resume_path",
]
