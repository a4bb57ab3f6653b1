"""Perceptual-hash frame descriptors: the classical baseline of copy detection.

pHash (DCT of a 32×32 greyscale thumbnail, 64 bits: is each low-frequency coefficient above the
median) via `imagehash`. Bits become ±1/8 so the vector has unit norm and the inner product of two
hashes is 1 - 2 · Hamming / 64: the same FAISS search, normalisation and localisation as the
learnt descriptor apply unchanged.
"""

from __future__ import annotations

import numpy as np


def phash_descriptors(frames: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """uint8 frames [n, h, w, 3] → float32 [n, hash_size²] unit vectors."""
    import imagehash
    from PIL import Image

    out = np.empty((len(frames), hash_size * hash_size), np.float32)
    for i, f in enumerate(frames):
        bits = imagehash.phash(Image.fromarray(f), hash_size=hash_size).hash.reshape(-1)
        out[i] = np.where(bits, 1.0, -1.0) / hash_size
    return out
