"""NAFP-style fingerprint encoder (Chang et al. 2021, "Neural Audio Fingerprint for High-specific
Audio Retrieval based on Contrastive Learning"), sized for CPU.

waveform [B, seg_len] -> LogMel [B, 1, n_mels, frames] -> a stack of separable-conv blocks
(Conv(1x3, stride (1,2)) -> BN -> ELU -> Conv(3x1, stride (2,1)) -> BN -> ELU; one block per entry of
`FpModelParams.channels`; the first block's 1x3 conv is a 3x3 stride-(2,2) stem, so it reduces the
frequency axis 4x; strides are dropped on an axis already reduced to 1) -> flatten ->
divide-and-encode head (the flat vector is split into `dim` groups; each group gets its own
`head_hidden`-unit ELU MLP with one output) -> L2-normalised `dim`-d fingerprint.

BatchNorm instead of the paper's LayerNorm, for CPU cost (in eval mode it is a per-channel affine;
LayerNorm over C x F x T needs per-sample statistics at every layer). Anchors and positives go through one forward pass,
so batch statistics are shared between the two views.

Also here: `embed_segments` (batched inference helper used by extraction and search) and
`save_encoder` / `load_encoder` for the final model file (loaded with weights_only=True).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from avmatch.fingerprint.logmel import LogMel, segment_samples
from avmatch.fingerprint.params import FpAudioParams, FpModelParams, LogMelParams

MODEL_FORMAT = "avmatch-nafp-v1"


class SepConvBlock(nn.Module):
    """Conv(k0, stride s0) -> BN -> ELU -> Conv(3x1, stride (stride_f, 1)) -> BN -> ELU.

    Regular blocks use k0 = 1x3 with stride (1, stride_t) (the NAFP separable pair). The first block
    ("stem", 1 input channel) uses k0 = 3x3 with stride (2, 2): the paper's 1x3 conv at the full
    256 x 32 resolution costs more CPU time than the rest of the network together, and 256 mel bands
    at 8 kHz oversample the low frequencies anyway (see features/logmel.py).
    """

    def __init__(self, c_in: int, c_out: int, stride_f: int, stride_t: int, stem: bool = False):
        super().__init__()
        if stem:
            self.conv_t = nn.Conv2d(c_in, c_out, (3, 3), stride=(2, stride_t), padding=(1, 1), bias=False)
        else:
            self.conv_t = nn.Conv2d(c_in, c_out, (1, 3), stride=(1, stride_t), padding=(0, 1), bias=False)
        self.bn_t = nn.BatchNorm2d(c_out)
        self.conv_f = nn.Conv2d(c_out, c_out, (3, 1), stride=(stride_f, 1), padding=(1, 0), bias=False)
        self.bn_f = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.bn_t(self.conv_t(x)))
        return F.elu(self.bn_f(self.conv_f(x)))


class DivideEncodeHead(nn.Module):
    """Split [B, n_in] into `dim` equal groups; each group -> Linear(hidden) -> ELU -> Linear(1).

    Implemented with batched einsums over the groups (grouped Conv1d is ~30x slower on CPU). When
    n_in is not a multiple of `dim` a Linear first maps it to the next multiple.
    """

    def __init__(self, n_in: int, dim: int, hidden: int):
        super().__init__()
        per = -(-n_in // dim)  # ceil
        self.dim, self.per, self.hidden = dim, per, hidden
        self.pre = nn.Linear(n_in, per * dim) if per * dim != n_in else None
        self.w1 = nn.Parameter(torch.empty(dim, per, hidden))
        self.b1 = nn.Parameter(torch.empty(dim, hidden))
        self.w2 = nn.Parameter(torch.empty(dim, hidden))
        self.b2 = nn.Parameter(torch.empty(dim))
        for w, b, fan_in in ((self.w1, self.b1, per), (self.w2, self.b2, hidden)):
            bound = 1.0 / fan_in**0.5
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        x = x.reshape(x.shape[0], self.dim, self.per)
        h = F.elu(torch.einsum("bdp,dph->bdh", x, self.w1) + self.b1)
        return (h * self.w2).sum(-1) + self.b2


class FingerprintEncoder(nn.Module):
    """[B, seg_len] float waveform (mono, `sample_rate`) -> [B, dim] unit-norm fingerprints."""

    def __init__(self, model_params: FpModelParams, logmel_params: LogMelParams, audio_params: FpAudioParams):
        super().__init__()
        # plain dicts (json-safe) so a model file can rebuild the module without pickled objects
        self.hparams: dict[str, Any] = {
            "model": json.loads(model_params.model_dump_json()),
            "logmel": json.loads(logmel_params.model_dump_json()),
            "audio": json.loads(audio_params.model_dump_json()),
        }
        # fingerprints of music not in any database, that hub scores are measured against (save_encoder)
        self.background: np.ndarray | None = None
        self.sample_rate = int(audio_params.sample_rate)
        self.seg_len, _ = segment_samples(audio_params.sample_rate, audio_params.segment_s, audio_params.hop_s)
        self.dim = int(model_params.dim)
        self.frontend = LogMel(logmel_params, audio_params.sample_rate)
        f, t = logmel_params.n_mels, self.frontend.n_frames(self.seg_len)
        blocks, c_in = [], 1
        for i, c in enumerate(model_params.channels):
            stem = i == 0
            sf, st = (2 if f > 1 else 1), (2 if t > 1 else 1)
            blocks.append(SepConvBlock(c_in, c, sf, st, stem=stem))
            if stem:
                f = (f + 1) // 2
            f, t, c_in = (f + 1) // 2 if sf == 2 else f, (t + 1) // 2 if st == 2 else t, c
        self.blocks = nn.Sequential(*blocks)
        self.flat_shape = (c_in, f, t)
        self.head = DivideEncodeHead(c_in * f * t, self.dim, int(model_params.head_hidden))

    @classmethod
    def from_params(cls, model_params: FpModelParams, logmel_params: LogMelParams,
                    audio_params: FpAudioParams) -> "FingerprintEncoder":
        return cls(model_params, logmel_params, audio_params)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.frontend(wav).unsqueeze(1)  # [B, 1, n_mels, frames]
        x = self.blocks(x)
        z = self.head(x.flatten(1))
        return F.normalize(z.float(), dim=1)


# ---------------------------------------------------------------- inference helper
def autocast_context(device: torch.device):
    """float16 autocast on CUDA, a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type=device.type, enabled=False)


@torch.no_grad()
def embed_segments(model: FingerprintEncoder, segments: torch.Tensor | np.ndarray, batch_size: int = 256,
                   device: torch.device | str | None = None) -> np.ndarray:
    """Fingerprints of [N, seg_len] segments as float32 [N, dim] (eval mode, no grad, autocast on CUDA).

    The model is moved to `device` (default: where it already is) and left in eval mode.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    seg = torch.as_tensor(segments) if not torch.is_tensor(segments) else segments
    if seg.dim() == 1:
        seg = seg.unsqueeze(0)
    out = np.empty((seg.shape[0], model.dim), dtype=np.float32)
    for i in range(0, seg.shape[0], batch_size):
        chunk = seg[i : i + batch_size].to(device, dtype=torch.float32, non_blocking=True)
        with autocast_context(device):
            z = model(chunk)
        out[i : i + chunk.shape[0]] = z.float().cpu().numpy()
    return out


# ---------------------------------------------------------------- model file
def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def save_encoder(model: FingerprintEncoder, path: str | os.PathLike, params_dict: dict[str, Any] | None = None,
                 background: np.ndarray | None = None) -> Path:
    """Write the final model file: weights + the hyper-parameters needed to rebuild it + `params_dict`
    (any json-able metadata, e.g. the training summary) + the `background` fingerprints that hub scores
    are measured against (`avmatch.fingerprint.hubness`; they belong to these weights, so they travel
    with them). Atomic (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": MODEL_FORMAT,
        "hparams": _json_safe(model.hparams),
        "params": _json_safe(params_dict or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if background is not None:
        blob["background"] = torch.from_numpy(np.ascontiguousarray(background, dtype=np.float16))
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_encoder(path: str | os.PathLike, device: torch.device | str = "cpu") -> FingerprintEncoder:
    """Rebuild a FingerprintEncoder from a `save_encoder` file (weights_only=True), in eval mode on `device`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no fingerprint model file (run the training stage first)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not an avmatch fingerprint model file (format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    hp = blob["hparams"]
    model = FingerprintEncoder(FpModelParams(**hp["model"]), LogMelParams(**hp["logmel"]), FpAudioParams(**hp["audio"]))
    model.load_state_dict(blob["state_dict"])
    bg = blob.get("background")
    model.background = bg.float().numpy() if bg is not None else None
    return model.to(torch.device(device)).eval()


def model_file_params(path: str | os.PathLike) -> dict[str, Any]:
    """The `params_dict` and `hparams` stored in a model file, without building the model."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    return {"hparams": blob["hparams"], "params": blob["params"]}
