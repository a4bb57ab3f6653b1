"""Training of the version encoder: clique-balanced batches of CQT segments, CQT-domain augmentation,
model selection on validation MAP, a wall-clock budget.

A batch takes `cliques_per_batch` cliques with two versions each and `segments_per_track` random
20 s crops per track (weak labels: we do not know which crop of one version matches which crop of
the other, which is why the loss reduces segment-pair distances to track distances). Augmentations
act on the cached CQT (cheap, no audio re-rendering): time stretch (resampling the frame axis),
pitch shift (moving along the bins, as a transposition does), SpecAugment masks.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from avmatch.core.device import resolve_device, seed_everything
from avmatch.versions.losses import version_loss
from avmatch.versions.model import VersionEncoder
from avmatch.versions.params import (
    CQTParams,
    VerAugmentParams,
    VerModelParams,
    VerTrainParams,
)

log = logging.getLogger(__name__)


@dataclass
class VersionTrainResult:
    model: VersionEncoder
    steps: int
    seconds: float
    best_step: int
    best_val_map: float
    history: list[dict] = field(default_factory=list)


HARMONIC_BINS = (12, 19, 24)  # octave, octave + fifth, two octaves: the 2nd, 3rd and 4th harmonics (12 bins/octave)


def change_timbre(crop: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The same notes as another instrument might sound in a log1p CQT crop [bins, frames]. Trained
    encoders otherwise match tracks by instrument (same ensemble, other chorale) before tune: the spectral
    envelope, the strength of the harmonics (which put fifths into a chroma) and the sustain all differ
    between instruments and survive folding the octaves away."""
    bins = crop.shape[0]
    lin = np.expm1(np.maximum(crop, 0.0))
    k = np.arange(1, 4)[:, None]
    env_db = (rng.uniform(-1, 1, (3, 1)) * np.cos(np.pi * k * np.arange(bins)[None] / bins
                                                   + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0)
    env_db *= 12.0 * strength / max(1e-6, np.abs(env_db).max())
    out = lin * (10.0 ** (env_db / 20.0))[:, None]
    extra = np.zeros_like(out)
    for shift in HARMONIC_BINS:
        g = rng.uniform(0, 0.5 * strength)
        extra[shift:] += g * out[:-shift]
    out = out + extra
    if rng.random() < 0.5:
        decay = rng.uniform(0.6, 0.6 + 0.35 * strength)  # per frame (0.1 s): notes ring on, as on an organ
        # held[t] = max over s <= t of out[s] * decay ** (t - s), as a running maximum in the log domain
        ramp = np.arange(out.shape[1]) * np.log(decay)
        held = np.exp(np.maximum.accumulate(np.log(out + 1e-12) - ramp, axis=1) + ramp) - 1e-12
        out = np.maximum(held, out)
    return np.log1p(out).astype(np.float32)


def augment_crop(feat: np.ndarray, seg_frames: int, rng: np.random.Generator, a: VerAugmentParams | None
                 ) -> np.ndarray:
    """A random [bins, seg_frames] crop of a track's CQT [frames, bins], augmented when `a` is given."""
    n, bins = feat.shape
    rate = float(np.exp(rng.uniform(np.log(a.time_stretch[0]), np.log(a.time_stretch[1])))) if a else 1.0
    src_len = min(n, max(8, int(round(seg_frames * rate))))
    s = int(rng.integers(0, n - src_len + 1))
    crop = np.asarray(feat[s:s + src_len], np.float32).T  # [bins, src_len]
    if src_len != seg_frames:
        pos = np.linspace(0, src_len - 1, seg_frames)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, src_len - 1)
        w = (pos - lo)[None]
        crop = (crop[:, lo] * (1 - w) + crop[:, hi] * w).astype(np.float32)
    if a is None:
        return crop
    if a.pitch_shift_bins:
        k = int(rng.integers(-a.pitch_shift_bins, a.pitch_shift_bins + 1))
        if k:
            crop = np.roll(crop, k, 0)
            if k > 0:
                crop[:k] = 0
            else:
                crop[k:] = 0
    if a.timbre > 0:
        crop = change_timbre(crop, a.timbre, rng)
    if a.freq_mask_bins:
        w = int(rng.integers(0, a.freq_mask_bins + 1))
        f0 = int(rng.integers(0, bins - w + 1))
        crop[f0:f0 + w] = 0
    if a.time_mask_frames:
        w = int(rng.integers(0, a.time_mask_frames + 1))
        t0 = int(rng.integers(0, seg_frames - w + 1))
        crop[:, t0:t0 + w] = 0
    return crop.astype(np.float32, copy=False)


class CliqueSampler:
    """Batches of `p` cliques x 2 versions, each a [S, bins, frames] stack of crops. With `sources` (one per
    track) and `balance`, cliques are drawn so every source gets the same share of a batch on average
    (a small source of real versions is not drowned by a large synthetic one); otherwise uniformly."""

    def __init__(self, feats: list[np.ndarray], cliques: list[str], seg_frames: int, seed: int,
                 sources: list[str] | None = None, balance: bool = False):
        by = defaultdict(list)
        for i, c in enumerate(cliques):
            if feats[i].shape[0] >= seg_frames // 2:
                by[c].append(i)
        self.groups = [v for _, v in sorted(by.items()) if len(v) >= 2]
        if len(self.groups) < 2:
            raise ValueError(f"training needs at least 2 cliques with 2 usable versions, found {len(self.groups)}")
        self.feats, self.seg_frames = feats, seg_frames
        self.rng = np.random.default_rng(seed)
        self.weights = None
        if balance and sources is not None:
            src = [sources[g[0]] for g in self.groups]
            count = {s: src.count(s) for s in set(src)}
            w = np.array([1.0 / count[s] for s in src])
            self.weights = w / w.sum()

    def batch(self, p: int, s: int, augment: VerAugmentParams | None) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.rng.choice(len(self.groups), size=min(p, len(self.groups)), replace=False, p=self.weights)
        x, y = [], []
        for ci in chosen:
            for ti in self.rng.choice(self.groups[ci], 2, replace=False):
                f = self.feats[ti]
                if f.shape[0] < self.seg_frames:  # short track: pad at the end
                    f = np.concatenate([f, np.zeros((self.seg_frames - f.shape[0], f.shape[1]), f.dtype)])
                x.append(np.stack([augment_crop(f, self.seg_frames, self.rng, augment) for _ in range(s)]))
                y.append(ci)
        return torch.from_numpy(np.stack(x)), torch.tensor(y)


@torch.no_grad()
def embed_windows(model: VersionEncoder, windows: np.ndarray, device: torch.device, batch_size: int = 64
                  ) -> np.ndarray:
    """[n, bins, frames] CQT windows -> [n, dim] float32 embeddings."""
    model.eval()
    out = []
    for i in range(0, len(windows), batch_size):
        out.append(model(torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size])).to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.dim), np.float32)


def train_version_encoder(train_feats: list[np.ndarray], train_cliques: list[str],
                          val_score: Callable[[VersionEncoder, torch.device], float] | None,
                          tp: VerTrainParams, mp: VerModelParams, cp: CQTParams, seg_frames: int, seed: int,
                          device_name: str = "auto", log_fn: Callable[[dict, int], None] | None = None,
                          train_sources: list[str] | None = None) -> VersionTrainResult:
    """Train until max_steps or max_minutes; keep the weights with the best `val_score` (validation MAP)."""
    seed_everything(seed)
    device = resolve_device(device_name)
    model = VersionEncoder.from_params(mp, cp).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    sampler = CliqueSampler(train_feats, train_cliques, seg_frames, seed, train_sources, tp.balance_sources)
    # with tp.ema > 0 an exponential moving average of the weights is what is validated and kept (less noisy
    # than the last step's weights); BatchNorm statistics are copied from the training model
    ema = copy.deepcopy(model) if tp.ema > 0 else None
    scored = ema if ema is not None else model
    t0 = time.perf_counter()
    history: list[dict] = []
    best = (-1.0, 0, {k: v.detach().clone() for k, v in scored.state_dict().items()})
    if val_score is not None:
        best = (val_score(scored, device), 0, best[2])
        history.append({"step": 0, "val_map": best[0]})
        if log_fn:
            log_fn({"val_map": best[0]}, 0)
    step = 0
    while step < tp.max_steps:
        elapsed = (time.perf_counter() - t0) / 60
        if elapsed >= tp.max_minutes:
            log.info("training stopped at the %.1f min budget after %d steps", tp.max_minutes, step)
            break
        frac = max(step / tp.max_steps, elapsed / tp.max_minutes)
        for g in opt.param_groups:
            g["lr"] = tp.lr * (0.5 * (1 + np.cos(np.pi * min(1.0, frac))) if step > 20 else (step + 1) / 21)
        model.train()
        x, y = sampler.batch(tp.cliques_per_batch, tp.segments_per_track, tp.augment)
        b, s = x.shape[:2]
        emb = model(x.flatten(0, 1).to(device)).view(b, s, -1)
        loss, diag = version_loss(emb, y.to(device), tp.loss, tp.positive_reduction, tp.negative_reduction,
                                  tp.uniformity_t, tp.uniformity_weight, tp.triplet_margin, tp.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.mul_(tp.ema).add_(pm.detach(), alpha=1 - tp.ema)
                for be, bm in zip(ema.buffers(), model.buffers()):
                    be.copy_(bm)
        step += 1
        rec = {"step": step, "loss": loss.item(), **diag}
        if val_score is not None and (step % tp.validate_every == 0 or step == tp.max_steps):
            rec["val_map"] = val_score(scored, device)
            if rec["val_map"] > best[0]:
                best = (rec["val_map"], step, {k: v.detach().clone() for k, v in scored.state_dict().items()})
        history.append(rec)
        if log_fn and (step % 10 == 0 or "val_map" in rec):
            log_fn({k: v for k, v in rec.items() if k != "step"}, step)
    if val_score is not None:
        final = val_score(scored, device)
        if final > best[0]:
            best = (final, step, {k: v.detach().clone() for k, v in scored.state_dict().items()})
        model.load_state_dict(best[2])
    else:
        if ema is not None:
            model.load_state_dict(ema.state_dict())
        best = (float("nan"), step, None)
    model.eval()
    return VersionTrainResult(model, step, time.perf_counter() - t0, best[1], best[0], history)
