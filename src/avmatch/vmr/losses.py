"""Losses for the shared video-music space; both take unit-norm [B, D] video and music embeddings, row i a pair.

- `infonce`: symmetric InfoNCE (CLIP-style): each video must pick its music among the batch's, and each
  music its video, with cosine / temperature logits.
- `vmnet_hinge`: VM-NET's bidirectional ranking loss: for every anchor, the `top_k` most violating
  negatives of the other modality must score `margin` below the positive, both ways.
- `soft_intra_structure`: VM-NET's soft intra-modal structure term: for every anchor, its nearest item
  of the same modality in the input feature space must stay nearer in the embedding than the others,
  by a margin that grows with how much farther those others were in the input space. Without it the
  ranking loss alone may throw away what distinguishes items within a modality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(v: torch.Tensor, m: torch.Tensor) -> None:
    if v.shape != m.shape or v.dim() != 2:
        raise ValueError(f"expected two [B, D] tensors, got {tuple(v.shape)} and {tuple(m.shape)}")


def infonce(v: torch.Tensor, m: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    _check(v, m)
    logits = (v @ m.t()) / temperature
    target = torch.arange(len(v), device=v.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def _top_k_violations(s: torch.Tensor, margin: float, top_k: int) -> torch.Tensor:
    pos = s.diagonal()
    viol = F.relu(margin + s - pos[:, None])
    viol = viol.masked_fill(torch.eye(len(s), dtype=torch.bool, device=s.device), 0.0)
    k = min(top_k, len(s) - 1)
    return viol.topk(k, dim=1).values.mean()


def vmnet_hinge(v: torch.Tensor, m: torch.Tensor, margin: float = 0.2, top_k: int = 10) -> torch.Tensor:
    _check(v, m)
    s = v @ m.t()
    return _top_k_violations(s, margin, top_k) + _top_k_violations(s.t(), margin, top_k)


def soft_intra_structure(z: torch.Tensor, x: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """`z` [B, D] embeddings, `x` [B, F] the same items' input descriptors (e.g. pooled features)."""
    b = len(z)
    if b < 3:
        return z.sum() * 0.0
    eye = torch.eye(b, dtype=torch.bool, device=z.device)
    dx = torch.cdist(x.float(), x.float()).masked_fill(eye, float("inf"))
    dz = torch.cdist(z, z)
    j = dx.argmin(1)
    idx = torch.arange(b, device=z.device)
    dx_ij, dz_ij = dx[idx, j], dz[idx, j]
    finite = dx.masked_fill(eye, 0.0)
    scale = finite.sum() / (b * (b - 1)) + 1e-9
    soft = ((dx - dx_ij[:, None]) / scale).clamp(0.0, 1.0) * margin
    viol = F.relu(dz_ij[:, None] - dz + soft)
    valid = ~eye
    valid[idx, j] = False
    return (viol * valid).sum() / valid.sum()
