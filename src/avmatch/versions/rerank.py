"""Alignment re-ranking of a first stage's candidates: fast recall first, Qmax on the few that matter.

A first stage ranks a whole collection cheaply; a chroma alignment (cross-similarity + Qmax,
`qmax_baseline.py`) tells versions apart far better but costs one alignment per pair. Aligning a query only
with the first stage's top K candidates keeps that cost at K alignments per query. The K candidates are put
first, in Qmax order (or Qmax fused with the first stage's distance, `fuse_scores`; ties keep the first
stage's order); every other track keeps the first stage's order after them, so a version the first stage
missed stays where it was.

First stages here besides the trained encoder, both training-free and key-invariant: `ftm2d` (the 2D Fourier
magnitude of chroma patches, Bertin-Mahieux & Ellis 2012) and `coarse_qmax_distances` (Qmax against every
track on chroma pooled more coarsely: ~1/4 of the cells, a shorter frame stack). The alignment runs on
Essentia's HPCP (the versions hpcp stage's, once per track) or on the project's CQT folded to 12 pitch
classes (`cqt_chroma`).
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
                     valid: np.ndarray | None = None, rows: Iterable[int] | None = None,
                     weight: float = 0.0, fusion: str = "rank") -> np.ndarray:
    """[Q, N] encoder distances -> [Q, N] rank-valued distances after re-ranking each query's top `k`.

    `align(q, j)` returns the alignment distance of query row q to candidate column j (lower = closer).
    Invalid cells (`valid` False, e.g. the query itself, or +inf distances) are never candidates and keep
    +inf. The result's values are ranks (0 = first), which is all the retrieval metrics read. `rows`: the
    query rows in the order to process them (default all; pass them through a progress bar to show one).
    `weight` > 0 orders the K by the alignment fused with the first stage's distance (`fuse_scores`, `fusion`
    rank | zscore) instead of the alignment alone."""
    dist = np.asarray(dist, np.float64)
    ok = np.isfinite(dist) if valid is None else (np.asarray(valid, bool) & np.isfinite(dist))
    out = np.full(dist.shape, np.inf)
    for q in range(len(dist)) if rows is None else rows:
        cols = np.flatnonzero(ok[q])
        order = cols[np.argsort(dist[q, cols], kind="stable")]
        head, tail = order[:k], order[k:]
        scores = np.array([align(q, int(j)) for j in head], np.float64)
        if weight > 0:
            scores = fuse_scores(dist[q, head], scores, weight, fusion)
        # Qmax order, then the encoder's order among equal (or +inf: nothing aligned) scores
        head = head[np.lexsort((np.arange(len(head)), scores))]
        out[q, np.concatenate([head, tail])] = np.arange(len(order), dtype=np.float64)
    return out


def ftm2d(chroma: np.ndarray, patch: int = 75, hop: int | None = None, power: float = 2.0) -> np.ndarray:
    """Training-free, key- and shift-invariant track vector (Bertin-Mahieux & Ellis 2012): the magnitude of the
    2D Fourier transform of each [patch, 12] window of the chroma (magnitudes are unchanged by a circular shift
    along the pitch classes, i.e. a transposition, and nearly so by a shift in time), median-pooled over the
    windows, L2-normalised. `power` raises the chroma first (the paper's contrast enhancement); a track shorter
    than one patch is zero-padded to it. Returns [patch * 7] (the real input's spectrum is symmetric along the
    pitch axis: 7 of its 12 columns carry everything)."""
    c = np.asarray(chroma, np.float32)
    if c.ndim != 2 or c.shape[1] != 12:
        raise ValueError(f"chroma must be [frames, 12] (got {c.shape})")
    c = np.maximum(c, 0) ** power
    if len(c) < patch:
        c = np.concatenate([c, np.zeros((patch - len(c), 12), np.float32)])
    hop = hop or max(1, patch // 4)
    starts = range(0, len(c) - patch + 1, hop)
    windows = np.stack([c[s:s + patch] for s in starts])
    mags = np.abs(np.fft.rfft2(windows, axes=(1, 2)))            # [windows, patch, 7]
    v = np.median(mags, axis=0).reshape(-1).astype(np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def vector_distances(vectors: np.ndarray) -> np.ndarray:
    """[N, D] track vectors -> [N, N] Euclidean distances, +inf on the diagonal (a track never queries itself)."""
    v = np.asarray(vectors, np.float64)
    sq = (v * v).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * v @ v.T, 0.0))
    np.fill_diagonal(d, np.inf)
    return d


def zscore_rows(dist: np.ndarray) -> np.ndarray:
    """Each row of a distance matrix standardised over its finite cells (so that two first stages on different
    scales can be summed); non-finite cells stay +inf."""
    d = np.asarray(dist, np.float64)
    out = np.full(d.shape, np.inf)
    for i, row in enumerate(d):
        ok = np.isfinite(row)
        if ok.sum() > 1:
            out[i, ok] = (row[ok] - row[ok].mean()) / max(row[ok].std(), 1e-12)
        elif ok.any():
            out[i, ok] = 0.0
    return out


def fuse_scores(first: np.ndarray, align: np.ndarray, weight: float, method: str = "rank") -> np.ndarray:
    """One query's K candidates: first-stage distances and alignment distances (lower = closer; +inf = did not
    align) -> fused distances, lower = closer. weight 0 = the alignment alone, 1 = the first stage alone.

    rank: the weighted mean of the two rank positions among the K (ties share their mean rank); zscore: the
    weighted mean of the two standardised distances, an unaligned candidate set to the worst aligned one + 1
    standard deviation. Used so that a version the aligner scores badly but the first stage is sure of is not
    pushed down, and the reverse."""
    first, align = np.asarray(first, np.float64), np.asarray(align, np.float64)
    if method not in ("rank", "zscore"):
        raise ValueError(f"fusion method must be rank or zscore (got {method})")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1] (got {weight})")
    if len(align) == 0:
        return align
    fin = np.isfinite(align)
    worst = align[fin].max() + (align[fin].std() if fin.sum() > 1 else 1.0) if fin.any() else 1.0
    a = np.where(fin, align, worst)
    if method == "rank":
        from scipy.stats import rankdata

        return (1 - weight) * rankdata(a) + weight * rankdata(first)

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / max(x.std(), 1e-12)

    return (1 - weight) * z(a) + weight * z(first)


def coarse_qmax_distances(chroma: list[np.ndarray], distance: Callable[[np.ndarray, np.ndarray], float], pool: int,
                          rows: Iterable[int] | None = None) -> np.ndarray:
    """A training-free first stage: Qmax (`distance`, e.g. a QmaxScorer's with a short frame stack) of each query
    row against every other track, on the chroma averaged by `pool` more frames, so each alignment has pool^2
    fewer cells. It keeps what makes Qmax robust to unseen renderings (key by OTI, tempo and structure by the
    alignment) at a fraction of its cost. [N, N], +inf on the diagonal and on rows not in `rows` (default all)."""
    c = [pool_frames(x, pool) for x in chroma]
    n = len(c)
    out = np.full((n, n), np.inf)
    for i in range(n) if rows is None else rows:
        for j in range(n):
            if j != i:
                out[i, j] = distance(c[i], c[j])
    return out
