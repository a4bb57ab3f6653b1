"""Content hashes that identify a media file's bytes, so caches survive renames and notice edits."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
