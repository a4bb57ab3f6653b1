"""Self-supervised training of the frame descriptor with copy-style augmentations (SSCD-like).

Each step draws a batch of reference frames and makes two strongly augmented views of each: random
resized crop, horizontal flip, small rotation, colour jitter and greyscale, blur, pixel noise,
overlays (coloured boxes standing in for text and logos) and picture-in-picture (the view shrunk and
pasted onto another frame of the batch). NT-Xent (`avmatch.core.losses.nt_xent`) pulls the two views of a
frame together and pushes the other frames of the batch away -- the same pressure a copy detector
needs: edited copies close, different footage far. With `koleo_weight` > 0 SSCD's entropy term
(`avmatch.core.losses.koleo`) also spreads each batch's descriptors apart, so unrelated frames end up near
cosine 0 rather than bunched together, which makes similarities comparable across queries. Frames of one video at neighbouring seconds are
near-duplicates, so a batch takes at most one frame per video and second-window.

All augmentations run batched in torch (affine grids, depthwise blur), so a CPU step costs little
more than the network. The run stops at `max_steps` and the schedule (warm-up, then cosine decay to 0 at
max_steps) depends on the step alone; the frames and augmentations of step s are drawn from generators
seeded by (seed, s) (`avmatch.core.training`), so the trained weights do not depend on the machine's
load, and a resumed run continues the very sequence of the uninterrupted one. A checkpoint (`last.pt`,
atomic) is written every `checkpoint_every` steps and resumed when the parameters and data digest match;
`max_minutes` (optional) is a safety stop that saves it and raises `TimeLimitReached`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from avmatch.copydetect.model import FrameEncoder
from avmatch.copydetect.train_log import StepReporter
from avmatch.core.device import resolve_device, seed_everything, set_threads
from avmatch.core.losses import koleo, nt_xent
from avmatch.core.progress import progress
from avmatch.core.training import (
    Checkpoint,
    SafetyTimer,
    TimeLimitReached,
    step_rng,
    step_seed,
    warmup_cosine,
)

log = logging.getLogger(__name__)
CKPT_FORMAT = "avmatch-cd-ckpt-v2"  # v2: step-driven schedule and per-step seeds


@dataclass
class CdTrainResult:
    model: FrameEncoder
    steps: int
    seconds: float  # training time summed over resumed runs (reported, never used to decide anything)
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None


# ---------------------------------------------------------------- augmentation
def _affine_views(x: torch.Tensor, out: int, g: torch.Generator, min_scale: float) -> torch.Tensor:
    """Random resized crop + flip + small rotation of [B, 3, H, W] to [B, 3, out, out] in one grid_sample."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(min_scale, 1.0, generator=g)
    logr = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    sx = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    sy = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    tx = (torch.rand(b, generator=g) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, generator=g) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(8)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = sx * cos * flip, -sy * sin, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sx * sin * flip, sy * cos, ty
    grid = F.affine_grid(theta, (b, 3, out, out), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(round(2 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


def augment(x: torch.Tensor, out: int, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Copy-style augmentation of uint8-range frames [B, 3, H, W] → [B, 3, out, out] (0..255)."""
    b = x.shape[0]
    v = _affine_views(x, out, g, min_scale=max(0.15, 1.0 - 0.75 * strength))

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=g) < p * strength).view(b, 1, 1, 1)

    # colour: brightness, contrast, saturation, greyscale
    bright = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=g)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.5, generator=g)
    sat = torch.empty(b, 1, 1, 1).uniform_(0.2, 1.8, generator=g)
    m = v.mean(dim=(1, 2, 3), keepdim=True)
    c = torch.where(chance(0.8), (v - m) * contrast + m, v) * torch.where(chance(0.8), bright, torch.ones_like(bright))
    grey = c.mean(dim=1, keepdim=True)
    c = torch.where(chance(0.8), grey + (c - grey) * sat, c)
    v = torch.where(chance(0.2), grey.expand_as(c), c)
    # blur (one sigma per batch, applied to a random subset)
    if torch.rand(1, generator=g).item() < 0.9:
        sigma = float(torch.empty(1).uniform_(0.8, 2.5, generator=g))
        v = torch.where(chance(0.4), _blur(v, sigma), v)
    # picture in picture: shrink the view and paste it onto another frame of the batch
    pip = chance(0.25).view(-1)
    if pip.any():
        s = int(out * float(torch.empty(1).uniform_(0.45, 0.75, generator=g)))
        small = F.interpolate(v[pip], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        bg = v.roll(1, dims=0)[pip].clone()
        y0, x0 = (int(torch.randint(0, out - s + 1, (1,), generator=g)) for _ in range(2))
        bg[:, :, y0:y0 + s, x0:x0 + s] = small
        v = v.clone()
        v[pip] = bg
    # overlays: 1-3 coloured boxes (text bars, logos)
    for _ in range(3):
        sel = chance(0.25).view(-1)
        if not sel.any():
            continue
        h = int(torch.randint(out // 12, out // 3, (1,), generator=g))
        w = int(torch.randint(out // 6, out // 1, (1,), generator=g))
        y0, x0 = int(torch.randint(0, out - h + 1, (1,), generator=g)), int(torch.randint(0, out - w + 1, (1,), generator=g))
        colour = torch.rand(int(sel.sum()), 3, 1, 1, generator=g) * 255
        v = v.clone()
        v[sel, :, y0:y0 + h, x0:x0 + w] = colour
    # pixel noise (sensor / compression stand-in)
    noise = torch.randn(v.shape, generator=g) * torch.empty(b, 1, 1, 1).uniform_(2, 12, generator=g)
    v = torch.where(chance(0.3), v + noise, v)
    return v.clamp(0, 255)


# ---------------------------------------------------------------- batches
class FrameSampler:
    """Batches of frames with at most one frame per (video, 3-second window): near-duplicates of one
    video are not used as negatives of each other."""

    def __init__(self, videos: list[np.ndarray], window: int = 3):
        self.frames = [torch.from_numpy(np.ascontiguousarray(v)).permute(0, 3, 1, 2) for v in videos if len(v)]
        self.keys = [(vi, fi // window) for vi, v in enumerate(self.frames) for fi in range(len(v))]
        self.index = [(vi, fi) for vi, v in enumerate(self.frames) for fi in range(len(v))]

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        taken, out = set(), []
        for i in rng.permutation(len(self.index)):
            if self.keys[i] in taken:
                continue
            taken.add(self.keys[i])
            vi, fi = self.index[i]
            out.append(self.frames[vi][fi])
            if len(out) == n:
                break
        return torch.stack(out).float()


# ---------------------------------------------------------------- training
def _digest(videos: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for v in videos:
        h.update(str(v.shape).encode())
        h.update(np.ascontiguousarray(v[:, ::16, ::16]).tobytes())
    return h.hexdigest()[:16]


def config_hash(train: Any, model: Any, seed: int, videos: list[np.ndarray]) -> str:
    """What the trained weights depend on; the safety time limit is left out so that raising or clearing
    it resumes the checkpoint instead of restarting."""
    tr = json.loads(train.model_dump_json(exclude={"checkpoint_every", "max_minutes"}))
    blob = {"train": tr, "model": json.loads(model.model_dump_json()), "seed": int(seed), "data": _digest(videos),
            "format": CKPT_FORMAT}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def train_frame_encoder(videos: list[np.ndarray], *, train_params: Any, model_params: Any, seed: int, device: str,
                        checkpoint_dir: str | os.PathLike, log_fn: Callable[[dict, int], None] | None = None
                        ) -> CdTrainResult:
    """Train (or resume) the frame encoder on uint8 frames [n, h, w, 3] per video; see the module docstring.

    Raises TimeLimitReached, after saving the checkpoint, when `train_params.max_minutes` runs out before
    `max_steps`.
    """
    tp, mp = train_params, model_params
    timer = SafetyTimer(tp.max_minutes)
    if tp.threads:
        set_threads(tp.threads)
    dev = resolve_device(device)
    seed_everything(seed)
    sampler = FrameSampler(videos)
    if len(sampler) < 4:
        raise RuntimeError(f"only {len(sampler)} training frames; need at least 4")
    model = FrameEncoder(mp.dim, mp.channels, mp.input_size).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    ckpt = Checkpoint(Path(checkpoint_dir) / "last.pt", CKPT_FORMAT, config_hash(tp, mp, seed, videos))
    ckpt_path = ckpt.path
    step, prev_elapsed, history, resumed = 0, 0.0, [], None
    if (state := ckpt.resume_into(model, opt)) is not None:
        step, prev_elapsed, history = state
        resumed = step
    batch = min(tp.batch_size, len(sampler))
    warmup = max(1, min(100, tp.max_steps // 10))

    def elapsed() -> float:
        return prev_elapsed + timer.elapsed_s()

    def save() -> None:
        ckpt.save_training(model, opt, step, elapsed(), history)

    model.train()
    reporter = StepReporter(tp.max_steps, start_step=step)
    log.info("training the frame encoder: steps %d..%d, batch %d, %d frames", step + 1, tp.max_steps, batch,
             len(sampler))
    # a bar on stderr (steps, rate, time left) besides the periodic log lines, which stay readable in DVC logs
    for _ in progress(range(step, tp.max_steps), desc="copydetect: train encoder", unit="step"):
        if timer.expired():
            save()
            raise TimeLimitReached(system="copydetect", steps=step, max_steps=tp.max_steps,
                                   max_minutes=float(tp.max_minutes), checkpoint=ckpt_path)
        lr = tp.lr * warmup_cosine(step, tp.max_steps, warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        x = sampler.batch(batch, step_rng(seed, step))
        g = torch.Generator().manual_seed(step_seed(seed, step))
        a = augment(x, mp.input_size, g, tp.augment_strength).to(dev)
        b = augment(x, mp.input_size, g, tp.augment_strength).to(dev)
        za, zb = model(a), model(b)
        loss = nt_xent(za, zb, tp.temperature)
        if tp.koleo_weight > 0:
            loss = loss + tp.koleo_weight * koleo(za)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        reporter.step(step, float(loss.detach()), lr)
        if step % 10 == 0 or step == 1:
            rec = {"step": step, "loss": float(loss.detach()), "lr": lr, "elapsed_s": elapsed()}
            history.append(rec)
            if log_fn:
                log_fn({"loss": rec["loss"], "lr": lr}, step)
        if step % tp.checkpoint_every == 0:
            save()
    save()
    model.eval()
    return CdTrainResult(model.cpu(), step, elapsed(), history, resumed)
