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

from avmatch.core.pooling import GeM
from avmatch.versions.cqt import normalise_segments
from avmatch.versions.params import CQTParams, VerModelParams

# below this fraction of the segment maximum (after normalise_segments) a frame or pitch class counts as
# silence: frame_norm does not blow it up to full scale, chroma_top does not mark it as a note
SILENCE_FLOOR = 0.05


class _Block(nn.Module):
    """conv 3x3 - BN - ReLU; with `circular`, the frequency axis wraps (pitch classes) and time is zero-padded."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int], circular: bool):
        super().__init__()
        self.circular = circular
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=(0, 1) if circular else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.circular:
            x = torch.cat([x[:, :, -1:], x, x[:, :, :1]], 2)
        return torch.relu(self.bn(self.conv(x)))


class _TemporalBlock(nn.Module):
    """Residual (1 x 3) convolution along time with a dilation: widens the receptive field in time only, so the
    pooled features can tell which events follow which across the segment (a bag of ~7 s patterns cannot)."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (1, 3), padding=(0, dilation), dilation=(1, dilation), bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


def _block(cin: int, cout: int, stride: tuple[int, int] = (1, 1), circular: bool = False) -> nn.Module:
    return _Block(cin, cout, stride, circular)


class VersionEncoder(nn.Module):
    """CQT segment -> unit vector. With `fold_octaves` the 84 bins become 7 octave channels x 12 pitch
    classes with circular padding along the pitch classes, so a transposition is (nearly) a circular
    shift that the convolutions and the global GeM pooling do not see: key invariance by construction
    rather than learnt from pitch-shift augmentation alone (which a CPU budget cannot afford).
    `pitch_input` "chroma" folds the octaves away (mean and max over them), as chroma features do:
    register and voicing no longer reach the network, and a transposition is an exact circular shift."""

    def __init__(self, n_bins: int = 84, channels: list[int] | tuple[int, ...] = (16, 32, 64, 128), dim: int = 128,
                 gem_p: float = 3.0, fold_octaves: bool = True, bins_per_octave: int = 12, pitch_input: str = "octaves",
                 frame_norm: bool = False, temporal_layers: int = 0, chroma_top: int = 0, crp_coeffs: int = 0):
        super().__init__()
        self.frame_norm, self.chroma_top, self.crp_coeffs = frame_norm, chroma_top, crp_coeffs
        if crp_coeffs:
            self.register_buffer("crp_lifter", _crp_lifter(n_bins, crp_coeffs), persistent=False)
        self.fold = fold_octaves and n_bins % bins_per_octave == 0
        self.bpo = bins_per_octave
        self.pitch_input = pitch_input if self.fold else "octaves"
        octaves = n_bins // bins_per_octave
        cin = {"octaves": octaves, "chroma": 2, "both": octaves + 2}[self.pitch_input] if self.fold else 1
        layers: list[nn.Module] = [nn.BatchNorm2d(cin)]
        for i, c in enumerate(channels):
            # the first block halves the frame rate (10 -> 5 per second): CPU-sized, melody still resolved
            layers.append(_block(cin, c, (1, 2) if i == 0 else (1, 1), circular=self.fold))
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d((1, 2) if self.fold and i < 2 else 2))
            cin = c
        layers += [_TemporalBlock(cin, 2 ** k) for k in range(temporal_layers)]
        self.body = nn.Sequential(*layers)
        self.pool = GeM(gem_p)
        self.head = nn.Sequential(nn.Linear(cin, cin), nn.ReLU(inplace=True), nn.Linear(cin, dim))
        self.n_bins, self.dim = n_bins, dim

    @classmethod
    def from_params(cls, m: VerModelParams, c: CQTParams) -> "VersionEncoder":
        return cls(c.n_bins, list(m.channels), m.dim, m.gem_p, m.fold_octaves, c.bins_per_octave, m.pitch_input,
                   m.frame_norm, m.temporal_layers, m.chroma_top, m.crp_coeffs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, bins, frames] CQT segments -> [B, dim] unit vectors."""
        x = normalise_segments(x)
        silent = None
        if self.crp_coeffs:
            # the frame's smooth spectral envelope (lowest DCT coefficients along the bins) removed: CRP chroma
            silent = x.amax(-2, keepdim=True) < SILENCE_FLOOR                      # [B, 1, T]
            x = torch.einsum("ij,bjt->bit", self.crp_lifter, x)
        if self.frame_norm:
            # each frame by its largest bin
            x = x / x.amax(-2, keepdim=True).clamp(min=SILENCE_FLOOR)
        if self.fold:
            b, f, t = x.shape
            x = x.view(b, f // self.bpo, self.bpo, t)
            if self.pitch_input != "octaves":
                chroma = torch.stack([x.mean(1), x.amax(1)], 1)
                if silent is not None:  # each chroma frame to unit length, silent frames to 0
                    chroma = chroma / chroma.norm(dim=2, keepdim=True).clamp(min=1e-6)
                    chroma = chroma.masked_fill(silent[:, None], 0.0)
                if self.chroma_top:
                    kth = chroma.topk(self.chroma_top, 2).values[:, :, -1:]       # [B, 2, 1, T]
                    floor = SILENCE_FLOOR * chroma.flatten(2).amax(-1)[..., None, None]
                    chroma = ((chroma >= kth) & (chroma > floor)).to(chroma.dtype)  # silent frames stay empty
                x = chroma if self.pitch_input == "chroma" else torch.cat([x, chroma], 1)
        else:
            x = x.unsqueeze(1)
        h = self.body(x)
        return nn.functional.normalize(self.head(self.pool(h)), dim=-1)


def _crp_lifter(n: int, k: int) -> torch.Tensor:
    """[n, n] matrix that zeroes the lowest `k` orthonormal DCT-II coefficients of a length-n vector (the
    inverse DCT of the kept coefficients): removes what varies slower than ~2n/k bins along the pitch axis."""
    i = torch.arange(n, dtype=torch.float64)
    d = torch.cos(torch.pi / n * (i[None] + 0.5) * i[:, None]) * (2.0 / n) ** 0.5
    d[0] /= 2 ** 0.5
    keep = (i >= k).to(torch.float64)
    return (d.T @ torch.diag(keep) @ d).to(torch.float32)


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
