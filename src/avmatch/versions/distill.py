"""Distilling an alignment's track similarities into the version encoder.

The encoder pools each 20 s segment globally: it keeps which chords and intervals occur, not their order. A
chroma alignment (cross-similarity + Qmax, `qmax_baseline.py`) keeps the order and holds up on renderings no
training heard (`rerank.coarse_qmax_distances`), but costs one alignment per pair. Here the coarse alignment
is a teacher: its distances between training tracks are computed once (`teacher_distances`), and a listwise
term (`distill_loss`) asks the encoder to rank each batch track's batch neighbours as the teacher does, on top
of the contrastive loss that only knows same clique / other clique. The teacher is training-free, so it sees
only training tracks; nothing of the validation or test collections enters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from avmatch.versions.qmax_baseline import pool_frames


def teacher_distances(chroma: list[np.ndarray], distances: Callable[[np.ndarray, np.ndarray], tuple[float, float]],
                      pool: int = 1, pairs: Iterable[tuple[int, int]] | None = None) -> np.ndarray:
    """[N, N] symmetric teacher distances between tracks: the mean of both directions of `distances(a, b)`
    (e.g. `QmaxScorer.distances`, one cross-similarity matrix per pair) on the chroma averaged by `pool`
    frames. `pairs` (i < j; default all) lets a caller subsample and show progress. Cells not computed are
    NaN; a pair that does not align at all (+inf) gets the largest finite distance found; the diagonal is 0."""
    c = [pool_frames(x, pool) for x in chroma]
    n = len(c)
    out = np.full((n, n), np.nan, np.float64)
    np.fill_diagonal(out, 0.0)
    for i, j in ((i, j) for i in range(n) for j in range(i + 1, n)) if pairs is None else pairs:
        a, b = distances(c[i], c[j])
        out[i, j] = out[j, i] = 0.5 * (a + b) if np.isfinite(a) and np.isfinite(b) else min(a, b)
    off = ~np.eye(n, dtype=bool) & ~np.isnan(out)
    fin = off & np.isfinite(out)
    out[off & ~fin] = out[fin].max() if fin.any() else 1.0
    return out.astype(np.float32)


def _zscore_rows(d: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each row standardised over its valid cells (invalid cells: 0, masked out later)."""
    n = valid.sum(1, keepdim=True).clamp(min=1)
    x = torch.where(valid, d, torch.zeros_like(d))
    mean = x.sum(1, keepdim=True) / n
    var = (torch.where(valid, d - mean, torch.zeros_like(d)) ** 2).sum(1, keepdim=True) / n
    return torch.where(valid, (d - mean) / torch.sqrt(var + 1e-8), torch.zeros_like(d))


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Listwise distillation of [B, B] teacher distances into [B, B] student distances (lower = closer).

    For each track (row), its distances to the other batch tracks are standardised (z-scored over the row, so
    neither scale matters: the term asks for the teacher's order and relative gaps, not its values) and turned
    into softmax(-z / temperature); the loss is the mean over rows of KL(teacher || student). Diagonal and NaN
    teacher cells (pairs the teacher did not align) are left out; rows with fewer than two valid cells too.
    0 when the student's rows are increasing affine maps of the teacher's."""
    b = student.shape[0]
    t = torch.as_tensor(teacher, dtype=student.dtype, device=student.device)
    valid = ~torch.eye(b, dtype=torch.bool, device=student.device) & torch.isfinite(t)
    rows = valid.sum(1) >= 2
    if not rows.any():
        return student.sum() * 0.0
    neg_inf = torch.full_like(student, float("-inf"))
    log_p_t = torch.log_softmax(torch.where(valid, -_zscore_rows(torch.nan_to_num(t), valid) / temperature, neg_inf), 1)
    log_p_s = torch.log_softmax(torch.where(valid, -_zscore_rows(student, valid) / temperature, neg_inf), 1)
    kl = torch.where(valid, log_p_t.exp() * (log_p_t - log_p_s), torch.zeros_like(student)).sum(1)
    return kl[rows].mean()
