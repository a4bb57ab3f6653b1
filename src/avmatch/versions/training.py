"""Training of the version encoder: clique-balanced batches of CQT segments, CQT-domain augmentation,
model selection on validation MAP, a fixed number of steps, checkpoints and resume.

A batch takes `cliques_per_batch` cliques with two versions each and `segments_per_track` random
20 s crops per track (weak labels: we do not know which crop of one version matches which crop of
the other, which is why the loss reduces segment-pair distances to track distances). Augmentations
act on the cached CQT (cheap, no audio re-rendering): time stretch (resampling the frame axis),
pitch shift (moving along the bins, as a transposition does), SpecAugment masks.

The run stops at `max_steps`, the schedule (warm-up, then cosine decay to 0 at max_steps) depends on the
step alone, and the batch of step s is drawn from a generator seeded by (seed, s) (`avmatch.core.training`):
the kept weights do not depend on how busy the machine was, and a run resumed from its checkpoint
(`last.pt`, written at every validation) continues the very sequence of the uninterrupted run, best
weights so far included. `max_minutes` (optional) is a safety stop that saves the checkpoint and raises
`TimeLimitReached`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avmatch.core.device import resolve_device, seed_everything, set_threads
from avmatch.core.training import (
    SafetyTimer,
    TimeLimitReached,
    step_rng,
    warmup_cosine,
)
from avmatch.versions.distill import distill_loss
from avmatch.versions.losses import track_pair_distances, version_loss
from avmatch.versions.model import VersionEncoder
from avmatch.versions.params import (
    CQTParams,
    VerAugmentParams,
    VerModelParams,
    VerTrainParams,
)

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.pt"
CKPT_FORMAT = "avmatch-ver-ckpt-v1"
WARMUP_STEPS = 21


@dataclass
class VersionTrainResult:
    model: VersionEncoder
    steps: int
    seconds: float  # training time summed over resumed runs (reported, never used to decide anything)
    best_step: int
    best_val_map: float
    history: list[dict] = field(default_factory=list)
    resumed_from_step: int | None = None  # None when the run started fresh


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

    def batch(self, p: int, s: int, augment: VerAugmentParams | None, rng: np.random.Generator | None = None,
              tracks: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`rng`: the generator of this batch (training passes one seeded by its step); default: the
        sampler's own running generator. `tracks`, when given, receives the batch rows' track indices."""
        rng = rng if rng is not None else self.rng
        chosen = rng.choice(len(self.groups), size=min(p, len(self.groups)), replace=False, p=self.weights)
        x, y = [], []
        for ci in chosen:
            for ti in rng.choice(self.groups[ci], 2, replace=False):
                if tracks is not None:
                    tracks.append(int(ti))
                f = self.feats[ti]
                if f.shape[0] < self.seg_frames:  # short track: pad at the end
                    f = np.concatenate([f, np.zeros((self.seg_frames - f.shape[0], f.shape[1]), f.dtype)])
                x.append(np.stack([augment_crop(f, self.seg_frames, rng, augment) for _ in range(s)]))
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


def config_hash(tp: VerTrainParams, mp: VerModelParams, cp: CQTParams, seg_frames: int, seed: int,
                feats: list[np.ndarray], cliques: list[str], sources: list[str] | None, val_id: str | None,
                teacher: np.ndarray | None = None) -> str:
    """What the kept weights depend on: a checkpoint made with anything else is not resumed. The safety
    time limit is left out so that raising or clearing it resumes instead of restarting."""
    h = hashlib.sha256()
    for f, c in zip(feats, cliques):
        h.update(f"{f.shape}|{c}".encode())
        h.update(np.ascontiguousarray(np.asarray(f)[::50]).tobytes())
    blob = {"train": json.loads(tp.model_dump_json(exclude={"max_minutes"})), "model": json.loads(mp.model_dump_json()),
            "cqt": json.loads(cp.model_dump_json()), "seg_frames": int(seg_frames), "seed": int(seed),
            "data": h.hexdigest()[:16], "sources": sources, "val": val_id, "format": CKPT_FORMAT}
    if teacher is not None and tp.distill_weight > 0:   # absent otherwise: older checkpoints still resume
        blob["teacher"] = hashlib.sha256(np.ascontiguousarray(teacher, np.float32).tobytes()).hexdigest()[:16]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def _load_checkpoint(path: Path, want: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt checkpoint is never fatal: training starts over
        log.warning("checkpoint %s unreadable (%s: %s): starting fresh", path, type(exc).__name__, exc)
        return None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT or ck.get("config_hash") != want:
        log.warning("checkpoint %s was made with other parameters, data or format: starting fresh", path)
        return None
    return ck


def train_version_encoder(train_feats: list[np.ndarray], train_cliques: list[str],
                          val_score: Callable[[VersionEncoder, torch.device], float] | None,
                          tp: VerTrainParams, mp: VerModelParams, cp: CQTParams, seg_frames: int, seed: int,
                          device_name: str = "auto", log_fn: Callable[[dict, int], None] | None = None,
                          train_sources: list[str] | None = None,
                          checkpoint_dir: str | os.PathLike | None = None,
                          val_id: str | None = None, teacher: np.ndarray | None = None) -> VersionTrainResult:
    """Train for `tp.max_steps` steps (or resume from `checkpoint_dir`); keep the weights with the best
    `val_score` (validation MAP).

    `val_id` names what `val_score` measures (e.g. a digest of the validation tracks and the distance
    settings): it is part of the checkpoint's config hash, because the best-so-far weights a checkpoint
    carries were chosen by it. `teacher`: [N, N] distances between the training tracks (`distill.teacher_distances`),
    required when `tp.distill_weight` > 0 (the listwise distillation term). Raises TimeLimitReached, after saving the checkpoint, when
    `tp.max_minutes` runs out before `max_steps`.
    """
    if tp.distill_weight > 0:
        if teacher is None or np.shape(teacher) != (len(train_feats), len(train_feats)):
            raise ValueError(f"versions.train.distill_weight > 0 needs teacher distances [{len(train_feats)}, "
                             f"{len(train_feats)}] between the training tracks (got "
                             f"{None if teacher is None else np.shape(teacher)})")
        teacher_t = torch.from_numpy(np.asarray(teacher, np.float32))
    timer = SafetyTimer(tp.max_minutes)
    if tp.threads:
        set_threads(tp.threads)
    seed_everything(seed)
    device = resolve_device(device_name)
    model = VersionEncoder.from_params(mp, cp).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    sampler = CliqueSampler(train_feats, train_cliques, seg_frames, seed, train_sources, tp.balance_sources)
    # with tp.ema > 0 an exponential moving average of the weights is what is validated and kept (less noisy
    # than the last step's weights); BatchNorm statistics are copied from the training model
    ema = copy.deepcopy(model) if tp.ema > 0 else None
    scored = ema if ema is not None else model

    def weights() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    want = config_hash(tp, mp, cp, seg_frames, seed, train_feats, train_cliques, train_sources, val_id, teacher)
    ck = _load_checkpoint(ckpt_path, want) if ckpt_path is not None else None
    step, prev_elapsed, history, resumed = 0, 0.0, [], None
    best: tuple[float, int, dict[str, torch.Tensor] | None]
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        step, prev_elapsed, history = int(ck["step"]), float(ck["elapsed"]), json.loads(ck["history"])
        best = (float(ck["best_val"]), int(ck["best_step"]), ck["best_weights"] or None)
        resumed = step
        log.info("resuming version training from %s at step %d", ckpt_path, step)
    else:
        best = (-1.0, 0, weights())
        if val_score is not None:
            best = (val_score(scored, device), 0, best[2])
            history.append({"step": 0, "val_map": best[0]})
            if log_fn:
                log_fn({"val_map": best[0]}, 0)

    def elapsed() -> float:
        return prev_elapsed + timer.elapsed_s()

    def save() -> None:
        if ckpt_path is None:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_name(f"{CHECKPOINT_NAME}.{os.getpid()}.tmp")
        torch.save({"format": CKPT_FORMAT, "config_hash": want, "step": step, "elapsed": elapsed(),
                    "model": model.state_dict(), "opt": opt.state_dict(),
                    "ema": ema.state_dict() if ema is not None else {},
                    "best_val": best[0], "best_step": best[1], "best_weights": best[2] or {},
                    "history": json.dumps(history)}, tmp)
        os.replace(tmp, ckpt_path)

    while step < tp.max_steps:
        if timer.expired():
            save()
            raise TimeLimitReached(system="versions", steps=step, max_steps=tp.max_steps,
                                   max_minutes=float(tp.max_minutes), checkpoint=ckpt_path)
        for g in opt.param_groups:
            g["lr"] = tp.lr * warmup_cosine(step, tp.max_steps, WARMUP_STEPS)
        model.train()
        rows: list[int] = []
        x, y = sampler.batch(tp.cliques_per_batch, tp.segments_per_track, tp.augment, step_rng(seed, step), rows)
        b, s = x.shape[:2]
        emb = model(x.flatten(0, 1).to(device)).view(b, s, -1)
        loss, diag = version_loss(emb, y.to(device), tp.loss, tp.positive_reduction, tp.negative_reduction,
                                  tp.uniformity_t, tp.uniformity_weight, tp.triplet_margin, tp.temperature)
        if tp.distill_weight > 0:
            idx = torch.tensor(rows)
            kd = distill_loss(track_pair_distances(emb, tp.negative_reduction), teacher_t[idx][:, idx].to(device),
                              tp.distill_temperature)
            loss = loss + tp.distill_weight * kd
            diag["distill"] = float(kd.detach())
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
        checkpoint_now = step % tp.validate_every == 0 or step == tp.max_steps
        if val_score is not None and checkpoint_now:
            rec["val_map"] = val_score(scored, device)
            if rec["val_map"] > best[0]:
                best = (rec["val_map"], step, weights())
        history.append(rec)
        if log_fn and (step % 10 == 0 or "val_map" in rec):
            log_fn({k: v for k, v in rec.items() if k != "step"}, step)
        if checkpoint_now:
            save()
    if val_score is not None:
        model.load_state_dict(best[2])
    else:
        if ema is not None:
            model.load_state_dict(ema.state_dict())
        best = (float("nan"), step, None)
    model.eval()
    return VersionTrainResult(model, step, elapsed(), best[1], best[0], history, resumed)
