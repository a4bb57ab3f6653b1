"""A compact CNN frame descriptor for video copy detection (SSCD-like, small enough for a CPU).

Stages of (3×3 conv stride 2 → BN → ReLU → 3×3 conv → BN → ReLU), GeM pooling (generalised mean,
p learnt: it weighs the strongest local evidence, which survives crops and overlays better than a
plain average), a linear projection and L2 normalisation, so inner products are cosines and FAISS
inner-product search, CSLS normalisation and the VSC22 evaluation apply directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from avmatch.core.pooling import GeM

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class FrameEncoder(nn.Module):
    """uint8-range RGB [B, 3, H, W] float tensors → L2-normalised descriptors [B, dim]."""

    def __init__(self, dim: int = 128, channels: list[int] | tuple[int, ...] = (32, 64, 128, 256), input_size: int = 96):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = GeM()
        self.proj = nn.Linear(c_in, dim)
        self.dim, self.input_size = int(dim), int(input_size)
        self.config = {"dim": int(dim), "channels": [int(c) for c in channels], "input_size": int(input_size)}
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return F.normalize(self.proj(self.pool(self.features(x))), dim=1)


def frames_to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [n, h, w, 3] → float [n, 3, size, size] (0..255), resized with antialiasing."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


@torch.no_grad()
def embed_frames(model: FrameEncoder, frames: np.ndarray, device: torch.device | str = "cpu",
                 batch_size: int = 128) -> np.ndarray:
    """Descriptors [n, dim] float32 of uint8 frames [n, h, w, 3]."""
    model.eval()
    out = []
    for i in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[i:i + batch_size], model.input_size).to(device)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


def save_frame_encoder(model: FrameEncoder, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Weights + constructor config (tensors and primitives only, safe to load with weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save({"format": "avmatch-frame-encoder-v1", "config": model.config, "extra": extra or {},
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)
    os.replace(tmp, path)
    return path


def load_frame_encoder(path: str | os.PathLike, device: torch.device | str = "cpu") -> FrameEncoder:
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "avmatch-frame-encoder-v1":
        raise ValueError(f"{path}: not an avmatch frame encoder")
    model = FrameEncoder(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
