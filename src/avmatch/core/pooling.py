"""Pooling shared by the encoders."""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    """Generalised mean over the last two axes: p=1 average, p->inf max; p is learnt (kept >= 1 so the
    pooling never becomes a soft minimum, which would reward the quietest region)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean((-2, -1)).pow(1.0 / p)
