"""Contrastive losses for the fingerprint encoder.

Both take L2-normalised embeddings of B anchors and their B positives (row i of each is a pair); every
other item in the batch -- anchors and positives alike -- serves as a negative for pair i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z_anchor: torch.Tensor, z_positive: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Normalised-temperature cross entropy (SimCLR / NAFP), symmetric over the 2B views.

    For each of the 2B items the target is its partner among the other 2B - 1 items, with cosine
    similarity / temperature as logits.
    """
    if z_anchor.shape != z_positive.shape or z_anchor.dim() != 2:
        raise ValueError(f"expected two [B, D] tensors, got {tuple(z_anchor.shape)} and {tuple(z_positive.shape)}")
    b = z_anchor.shape[0]
    z = torch.cat([z_anchor, z_positive], dim=0).float()
    z = F.normalize(z, dim=1)
    logits = (z @ z.t()) / temperature
    logits.fill_diagonal_(float("-inf"))
    idx = torch.arange(b, device=z.device)
    targets = torch.cat([idx + b, idx])
    return F.cross_entropy(logits, targets)


def triplet_semi_hard(z_anchor: torch.Tensor, z_positive: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Triplet loss with semi-hard negative mining (FaceNet; TF-Addons semantics).

    Squared Euclidean distances. For anchor i the negative is the closest item farther than its
    positive (d_an > d_ap); if there is none, the farthest negative. Loss = mean(relu(d_ap - d_an + margin)).
    """
    if z_anchor.shape != z_positive.shape or z_anchor.dim() != 2:
        raise ValueError(f"expected two [B, D] tensors, got {tuple(z_anchor.shape)} and {tuple(z_positive.shape)}")
    b = z_anchor.shape[0]
    a = z_anchor.float()
    cand = torch.cat([z_anchor, z_positive], dim=0).float()  # [2B, D]
    d_ap = (a - z_positive.float()).square().sum(1)  # [B]
    d_an = torch.cdist(a, cand).square()  # [B, 2B]
    idx = torch.arange(b, device=a.device)
    invalid = torch.zeros_like(d_an, dtype=torch.bool)
    invalid[idx, idx] = True  # itself
    invalid[idx, idx + b] = True  # its positive
    semi = (d_an > d_ap[:, None]) & ~invalid
    inf = torch.tensor(float("inf"), device=a.device)
    closest_semi = torch.where(semi, d_an, inf).amin(1)
    farthest = torch.where(invalid, -inf, d_an).amax(1)
    neg = torch.where(semi.any(1), closest_semi, farthest)
    return F.relu(d_ap - neg + margin).mean()


def koleo(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser (Sablayrolles et al. 2019; SSCD's "entropy" term):
    -mean log(distance of each item to its nearest other item).

    Contrastive training alone leaves a CPU-sized descriptor anisotropic (unrelated frames end up at
    high cosine similarity). Spreading the nearest neighbours apart makes similarities comparable
    across queries, which is what score normalisation against a noise set relies on. Pass one view per
    instance: the other view of the same frame would be its nearest neighbour by design.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"expected a [B >= 2, D] tensor, got {tuple(z.shape)}")
    z = F.normalize(z.float(), dim=1)
    dots = z @ z.t()
    dots.fill_diagonal_(-2.0)
    nearest = dots.argmax(1)
    dist = (z - z[nearest]).norm(dim=1)
    return -torch.log(dist + eps).mean()
