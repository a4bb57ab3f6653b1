"""Track-level losses for version identification, computed from segment embeddings.

Each track in the batch contributes S segments; every pair of tracks gives an S x S distance matrix
that `segment_pairs.reduce_pairs` turns into one track distance: positives (versions of one clique)
with best-pairs-without-replacement, negatives with min (the hardest segment pair). Three losses on
these track distances:

* ``clews``: decoupled alignment / uniformity: mean positive distance + w * log E[exp(-t * d_neg)]
  (the alignment term never pushes negatives and the uniformity term never pulls positives);
* ``triplet``: per anchor, hardest positive vs hardest negative with a margin;
* ``supcon``: supervised contrastive (InfoNCE with every other version as a positive) on -d / T.
"""

from __future__ import annotations

import torch

from avmatch.versions.segment_pairs import pairwise_distance, reduce_pairs


def track_pair_distances(emb: torch.Tensor, reduction: str) -> torch.Tensor:
    """[B, S, d] segment embeddings -> [B, B] reduced track distances."""
    d = pairwise_distance(emb[:, None], emb[None])  # [B, B, S, S]
    return reduce_pairs(d, reduction)


def version_loss(emb: torch.Tensor, cliques: torch.Tensor, kind: str = "clews", positive_reduction: str = "bpwr-2",
                 negative_reduction: str = "min", uniformity_t: float = 2.0, uniformity_weight: float = 1.0,
                 margin: float = 0.3, temperature: float = 0.1) -> tuple[torch.Tensor, dict]:
    """Loss and diagnostics (mean positive / negative distance) for a batch of tracks [B, S, d] with clique ids [B]."""
    b = emb.shape[0]
    same = cliques[:, None] == cliques[None]
    eye = torch.eye(b, dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same
    if not pos.any() or not neg.any():
        raise ValueError("a batch needs at least two versions of one clique and two cliques")
    d_pos = track_pair_distances(emb, positive_reduction)
    d_neg = d_pos if negative_reduction == positive_reduction else track_pair_distances(emb, negative_reduction)
    if kind == "clews":
        align = d_pos[pos].mean()
        unif = torch.logsumexp(-uniformity_t * d_neg[neg], 0) - torch.log(torch.tensor(float(neg.sum())))
        loss = align + uniformity_weight * unif
    elif kind == "triplet":
        hard_pos = torch.where(pos, d_pos, torch.zeros_like(d_pos)).amax(1)
        hard_neg = torch.where(neg, d_neg, torch.full_like(d_neg, float("inf"))).amin(1)
        has = pos.any(1)
        loss = torch.relu(hard_pos - hard_neg + margin)[has].mean()
    elif kind == "supcon":
        logits = torch.where(eye, torch.full_like(d_neg, -1e9), -torch.where(pos, d_pos, d_neg) / temperature)
        log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
        has = pos.any(1)
        loss = -(torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1)[has] / pos.sum(1)[has]).mean()
    else:
        raise ValueError(f"unknown loss '{kind}': clews, triplet or supcon")
    return loss, {"d_pos": float(d_pos[pos].detach().mean()), "d_neg": float(d_neg[neg].detach().mean())}
