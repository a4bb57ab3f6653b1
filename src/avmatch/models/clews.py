"""Convolutional segment encoder with GeM pooling for version identification (CLEWS-style, CPU-sized).

Input: one CQT segment [bins, frames] (84 x 200 for 20 s); output: an L2-normalised embedding.
Conv blocks see local harmonic/melodic patterns; generalised-mean pooling over the remaining
frequency x time grid keeps the strongest evidence wherever in the segment (and, roughly, at
whatever transposition) it occurs, which is what lets versions in other keys and tempi match.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avmatch.config import CQTParams, VerModelParams
from avmatch.features.cqt import normalise_segments


class GeM(nn.Module):
    """Generalised mean over the last two axes: p=1 average, p->inf max; p is learnt."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean((-2, -1)).pow(1.0 / p)


def _block(cin: int, cout: int, stride: tuple[int, int] = (1, 1)) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class VersionEncoder(nn.Module):
    def __init__(self, n_bins: int = 84, channels: list[int] | tuple[int, ...] = (16, 32, 64, 128), dim: int = 128,
                 gem_p: float = 3.0):
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(1)]
        cin = 1
        for i, c in enumerate(channels):
            # the first block halves the frame rate (10 -> 5 per second): CPU-sized, melody still resolved
            layers.append(_block(cin, c, (1, 2) if i == 0 else (1, 1)))
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = c
        self.body = nn.Sequential(*layers)
        self.pool = GeM(gem_p)
        self.head = nn.Sequential(nn.Linear(cin, cin), nn.ReLU(inplace=True), nn.Linear(cin, dim))
        self.n_bins, self.dim = n_bins, dim

    @classmethod
    def from_params(cls, m: VerModelParams, c: CQTParams) -> "VersionEncoder":
        return cls(c.n_bins, list(m.channels), m.dim, m.gem_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, bins, frames] CQT segments -> [B, dim] unit vectors."""
        h = self.body(normalise_segments(x).unsqueeze(1))
        return nn.functional.normalize(self.head(self.pool(h)), dim=-1)


def save_encoder(model: VersionEncoder, path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": model.state_dict(), "config": config}, tmp)
    tmp.replace(path)


def load_encoder(path: Path, device: torch.device | str = "cpu") -> tuple[VersionEncoder, dict]:
    """(model in eval mode, the config it was saved with: model / cqt / audio params)."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    cfg = ckpt["config"]
    model = VersionEncoder.from_params(VerModelParams(**cfg["model"]), CQTParams(**cfg["cqt"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), cfg
