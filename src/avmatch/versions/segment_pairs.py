"""Track-to-track distances from segment-to-segment distances (the CLEWS reductions).

A track is a set of segment embeddings; two tracks give a segment x segment distance matrix, and a
version is usually a version only in *some* of its segments (an excerpt, a dropped phrase, a live
intro). Reducing the matrix to one number is therefore a modelling choice:

* ``min``: the single best segment pair (one shared phrase is enough);
* ``mean``: every pair counts (whole-track similarity);
* ``bpwr-k``: *best pairs without replacement*: pick the closest pair, remove its row and column,
  repeat k times, average the k picked distances. Several distinct segments must match, which is
  robust to one accidental match yet tolerant of partial versions.

The same functions serve the loss (torch, batched, differentiable through the picked values) and
evaluation (numpy in, numpy out) so training optimises what retrieval measures.
"""

from __future__ import annotations

import numpy as np
import torch

# parsed where params.yaml is validated, which must not import torch (a stage that does not need it
# would pay seconds of start-up for it)
from avmatch.versions.params import parse_reduction  # noqa: F401  (re-exported)

def pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between rows of L2-normalised embeddings ([..., n, d] x [..., m, d] -> [..., n, m]),
    in [0, 2]."""
    sim = a @ b.transpose(-1, -2)
    return torch.sqrt(torch.clamp(2.0 - 2.0 * sim, min=1e-8))


def reduce_pairs(dist: torch.Tensor, reduction: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce segment-pair distances [..., n, m] to one distance per matrix [...].

    `mask` ([..., n, m] bool, True = valid pair) lets tracks with fewer segments be padded; a matrix
    without any valid pair reduces to +inf. bpwr-k uses min(k, valid rows, valid columns) pairs.
    """
    kind, k = parse_reduction(reduction)
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    if mask is None:
        mask = torch.ones_like(dist, dtype=torch.bool)
    d = torch.where(mask, dist, inf)
    if kind == "min":
        return d.flatten(-2).min(-1).values
    if kind == "mean":
        n = mask.flatten(-2).sum(-1)
        total = torch.where(mask, dist, torch.zeros_like(dist)).flatten(-2).sum(-1)
        return torch.where(n > 0, total / n.clamp(min=1), inf)
    n_rows, n_cols = d.shape[-2], d.shape[-1]
    flat_shape = d.shape[:-2]
    work = d.detach().clone()
    picked = []
    valid = []
    for _ in range(min(k, n_rows, n_cols)):
        flat = work.flatten(-2)
        idx = flat.argmin(-1, keepdim=True)
        val = flat.gather(-1, idx)
        ok = torch.isfinite(val).squeeze(-1)
        picked.append(d.flatten(-2).gather(-1, idx).squeeze(-1))
        valid.append(ok)
        r, c = idx // n_cols, idx % n_cols
        rows = torch.arange(n_rows, device=d.device).view(*([1] * len(flat_shape)), n_rows, 1)
        cols = torch.arange(n_cols, device=d.device).view(*([1] * len(flat_shape)), 1, n_cols)
        kill = (rows == r.unsqueeze(-1)) | (cols == c.unsqueeze(-1))
        work = work.masked_fill(kill, float("inf"))
    vals = torch.stack(picked, -1)
    ok = torch.stack(valid, -1)
    n = ok.sum(-1)
    total = torch.where(ok, vals, torch.zeros_like(vals)).sum(-1)
    return torch.where(n > 0, total / n.clamp(min=1), inf)


def pad_tracks(vectors: np.ndarray, track_of_row: np.ndarray, n_tracks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of segment embeddings grouped by track -> ([n_tracks, S, d] zero-padded, [n_tracks, S] valid mask)."""
    counts = np.bincount(track_of_row, minlength=n_tracks)
    s = max(1, int(counts.max()) if len(counts) else 1)
    out = np.zeros((n_tracks, s, vectors.shape[1]), np.float32)
    mask = np.zeros((n_tracks, s), bool)
    pos = np.zeros(n_tracks, np.int64)
    order = np.argsort(track_of_row, kind="stable")
    for row in order:
        t = track_of_row[row]
        out[t, pos[t]] = vectors[row]
        mask[t, pos[t]] = True
        pos[t] += 1
    return torch.from_numpy(out), torch.from_numpy(mask)


@torch.no_grad()
def track_distances(q: torch.Tensor, q_mask: torch.Tensor, c: torch.Tensor, c_mask: torch.Tensor, reduction: str,
                    chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Query tracks [Q, S, d] against candidate tracks [C, S', d] -> (distances [Q, C],
    best segment pair [Q, C, 2] as (query segment, candidate segment) of the closest pair)."""
    dists = np.zeros((q.shape[0], c.shape[0]), np.float32)
    best = np.zeros((q.shape[0], c.shape[0], 2), np.int64)
    for i in range(0, q.shape[0], chunk):
        qi, mi = q[i:i + chunk], q_mask[i:i + chunk]
        d = pairwise_distance(qi[:, None], c[None])                 # [q, C, S, S']
        m = mi[:, None, :, None] & c_mask[None, :, None, :]
        dists[i:i + chunk] = reduce_pairs(d, reduction, m).numpy()
        flat = torch.where(m, d, torch.tensor(float("inf"))).flatten(-2).argmin(-1)
        best[i:i + chunk, :, 0] = (flat // d.shape[-1]).numpy()
        best[i:i + chunk, :, 1] = (flat % d.shape[-1]).numpy()
    return dists, best
