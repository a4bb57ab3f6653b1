"""Alignment re-ranking of an embedding's candidates: fast recall first, Qmax on the few that matter.

The encoder ranks a whole collection in milliseconds but confuses renderings; a chroma alignment
(cross-similarity + Qmax, `qmax_baseline.py`) tells versions apart far better but costs one alignment
per pair. Aligning a query only with the encoder's top K candidates keeps the cost at K alignments per
query, whatever the collection size. The K candidates are put first, in Qmax order (ties keep the
encoder's order); every other track keeps the encoder's order after them, so a version the encoder
missed stays where it was.

The alignment runs on the project's own CQT (the features stage's cache) folded to 12 pitch classes,
so re-ranking needs no second decode of the audio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from avmatch.versions.qmax_baseline import pool_frames


def cqt_chroma(cqt: np.ndarray, bins_per_octave: int = 12, pool: int = 1) -> np.ndarray:
    """[frames, bins] log1p CQT (as cached) -> [frames / pool, 12] chroma, each frame scaled to max 1.

    Magnitudes (not their logs) are summed over octaves, as HPCP sums peak energy; the per-frame
    maximum normalisation is HPCP's unitMax, which removes loudness and the instrument's level."""
    if bins_per_octave % 12:
        raise ValueError(f"bins_per_octave must be a multiple of 12 to fold a CQT to 12 pitch classes "
                         f"(got {bins_per_octave})")
    mag = np.expm1(np.asarray(cqt, np.float32))
    n_oct = mag.shape[1] // bins_per_octave
    folded = mag[:, :n_oct * bins_per_octave].reshape(len(mag), n_oct, 12, bins_per_octave // 12).sum((1, 3))
    folded = pool_frames(folded, pool)
    peak = folded.max(1, keepdims=True)
    return np.where(peak > 0, folded / np.maximum(peak, 1e-12), 0.0).astype(np.float32)


def rerank_distances(dist: np.ndarray, k: int, align: Callable[[int, int], float],
                     valid: np.ndarray | None = None, rows: Iterable[int] | None = None) -> np.ndarray:
    """[Q, N] encoder distances -> [Q, N] rank-valued distances after re-ranking each query's top `k`.

    `align(q, j)` returns the alignment distance of query row q to candidate column j (lower = closer).
    Invalid cells (`valid` False, e.g. the query itself, or +inf distances) are never candidates and keep
    +inf. The result's values are ranks (0 = first), which is all the retrieval metrics read. `rows`: the
    query rows in the order to process them (default all; pass them through a progress bar to show one)."""
    dist = np.asarray(dist, np.float64)
    ok = np.isfinite(dist) if valid is None else (np.asarray(valid, bool) & np.isfinite(dist))
    out = np.full(dist.shape, np.inf)
    for q in range(len(dist)) if rows is None else rows:
        cols = np.flatnonzero(ok[q])
        order = cols[np.argsort(dist[q, cols], kind="stable")]
        head, tail = order[:k], order[k:]
        scores = np.array([align(q, int(j)) for j in head], np.float64)
        # Qmax order, then the encoder's order among equal (or +inf: nothing aligned) scores
        head = head[np.lexsort((np.arange(len(head)), scores))]
        out[q, np.concatenate([head, tail])] = np.arange(len(order), dtype=np.float64)
    return out
