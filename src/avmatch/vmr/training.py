"""Training of the two-branch encoder on (video, music) pairs, stopped by a number of steps.

Each step draws `batch_size` training pairs and, per pair, one window start in [0, crop_jitter_s] used
for both modalities (the picture stays aligned with its music). The loss is symmetric InfoNCE or
VM-NET's bidirectional top-K hinge plus the soft intra-modal structure term (`avmatch.vmr.losses`),
the input descriptors of the structure term being each window's mean features. The schedule (warm-up,
cosine decay to 0 at max_steps) depends on the step alone and each step's draws come from generators
seeded by (seed, step) (`avmatch.core.training`), so the weights are the same on a busy or a quiet
machine and a resumed run continues the very sequence of the uninterrupted one. A checkpoint is written
every `checkpoint_every` steps and resumed when parameters and data match; `max_minutes` is a safety
stop that saves it and raises `TimeLimitReached`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from avmatch.core.device import seed_everything
from avmatch.core.training import Checkpoint, SafetyTimer, TimeLimitReached, step_rng, warmup_cosine
from avmatch.vmr.losses import infonce, soft_intra_structure, vmnet_hinge
from avmatch.vmr.model import VmrEncoder, embed_items, fit_window

log = logging.getLogger(__name__)
CKPT_FORMAT = "avmatch-vmr-ckpt-v1"


@dataclass
class VmrTrainResult:
    model: VmrEncoder
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None


def _digest(items: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for x in items:
        h.update(np.ascontiguousarray(x, np.float32).tobytes())
    return h.hexdigest()[:16]


def config_hash(tp: Any, mp: Any, window: int, seed: int, videos: list[np.ndarray], music: list[np.ndarray],
                families: tuple[list[str], list[str]]) -> str:
    blob = {"train": json.loads(tp.model_dump_json(exclude={"checkpoint_every", "max_minutes", "threads"})),
            "model": json.loads(mp.model_dump_json()), "window": window, "seed": int(seed), "families": families,
            "data": _digest(videos) + _digest(music), "format": CKPT_FORMAT}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def _batch(items: list[np.ndarray], idx: np.ndarray, starts: np.ndarray, window: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([fit_window(items[i][s:], window) for i, s in zip(idx, starts)]).astype(np.float32))


def splice_pairs(xv: torch.Tensor, xm: torch.Tensor, videos: list[np.ndarray], music: list[np.ndarray],
                 idx: np.ndarray, lengths: np.ndarray, window: int, fraction: float, jitter: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal splicing, a way to make new training pairs from the same material: for a `fraction` of
    the batch, the seconds from a random splice point on are replaced, in both modalities alike, by the
    same seconds of another training pair that is not in the batch. The picture still follows its music
    second by second (the edit rule is local in time), so the spliced window is a valid pair that no
    clip showed, and no other item of the batch shares either half (no false negatives)."""
    n_splice = int(round(fraction * len(idx)))
    spare = np.setdiff1d(np.arange(len(videos)), idx)
    n_splice = min(n_splice, len(spare))
    if n_splice == 0 or window < 4:
        return xv, xm
    rows = rng.choice(len(idx), n_splice, replace=False)
    partners = rng.choice(spare, n_splice, replace=False)
    cuts = rng.integers(2, window - 1, n_splice)
    pstarts = np.array([int(rng.integers(0, max(0, min(jitter, lengths[j] - window)) + 1)) for j in partners])
    pv, pm = _batch(videos, partners, pstarts, window), _batch(music, partners, pstarts, window)
    xv, xm = xv.clone(), xm.clone()
    for r, c, k in zip(rows, cuts, range(n_splice)):
        xv[r, c:], xm[r, c:] = pv[k, c:], pm[k, c:]
    return xv, xm


def recall_at(v: np.ndarray, m: np.ndarray, k: int) -> float:
    """Fraction of videos whose own music (same row) is among the k most similar (diagnostics)."""
    s = v @ m.T
    rank = (s > s.diagonal()[:, None]).sum(1)
    return float((rank < k).mean())


def train_encoder(videos: list[np.ndarray], music: list[np.ndarray], *, train_params: Any, model_params: Any,
                  window: int, families: tuple[list[str], list[str]], seed: int, checkpoint_dir: str | os.PathLike,
                  val: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
                  log_fn: Callable[[dict, int], None] | None = None) -> VmrTrainResult:
    """Train (or resume) on aligned lists of per-second [t, D] features (row i of each is a pair)."""
    tp, mp = train_params, model_params
    if len(videos) != len(music) or len(videos) < 4:
        raise RuntimeError(f"need at least 4 aligned training pairs, got {len(videos)} videos and {len(music)} music")
    timer = SafetyTimer(tp.max_minutes)
    if tp.threads:
        torch.set_num_threads(tp.threads)
    seed_everything(seed)
    model = VmrEncoder(videos[0].shape[1], music[0].shape[1], window, mp, *families)
    model.set_normalisation(np.concatenate(videos), np.concatenate(music))
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    ckpt = Checkpoint(Path(checkpoint_dir) / "last.pt", CKPT_FORMAT,
                      config_hash(tp, mp, window, seed, videos, music, families))
    ckpt_path = ckpt.path
    step, prev_elapsed, history, resumed = 0, 0.0, [], None
    if (state := ckpt.resume_into(model, opt)) is not None:
        step, prev_elapsed, history = state
        resumed = step
    lengths = np.array([min(len(v), len(m)) for v, m in zip(videos, music)])
    batch = min(tp.batch_size, len(videos))
    warmup = max(1, min(100, tp.max_steps // 10))

    def elapsed() -> float:
        return prev_elapsed + timer.elapsed_s()

    def save() -> None:
        ckpt.save_training(model, opt, step, elapsed(), history)

    def val_recall() -> dict:
        if not val or len(val[0]) < 2:
            return {}
        model.eval()
        v = embed_items(model.video, val[0], window)
        m = embed_items(model.music, val[1], window)
        model.train()
        return {"val_v2m_r1": recall_at(v, m, 1), "val_v2m_r10": recall_at(v, m, 10)}

    model.train()
    while step < tp.max_steps:
        if timer.expired():
            save()
            raise TimeLimitReached(system="vmr", steps=step, max_steps=tp.max_steps,
                                   max_minutes=float(tp.max_minutes), checkpoint=ckpt_path)
        lr = tp.lr * warmup_cosine(step, tp.max_steps, warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        rng = step_rng(seed, step)
        idx = rng.choice(len(videos), batch, replace=False)
        starts = np.array([int(rng.integers(0, max(0, min(tp.crop_jitter_s, lengths[i] - window)) + 1)) for i in idx])
        xv, xm = _batch(videos, idx, starts, window), _batch(music, idx, starts, window)
        if tp.splice > 0:
            xv, xm = splice_pairs(xv, xm, videos, music, idx, lengths, window, tp.splice, tp.crop_jitter_s,
                                  step_rng(seed, step, 1))
        zv, zm = model.video(xv), model.music(xm)
        if tp.loss == "infonce":
            loss = infonce(zv, zm, tp.temperature)
        else:
            loss = vmnet_hinge(zv, zm, tp.margin, tp.top_k)
            if tp.intra_weight > 0:
                loss = loss + tp.intra_weight * (soft_intra_structure(zv, xv.mean(1), tp.margin)
                                                 + soft_intra_structure(zm, xm.mean(1), tp.margin))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == 1:
            rec = {"step": step, "loss": float(loss.detach()), "lr": lr, "elapsed_s": elapsed()}
            if step % max(1, tp.max_steps // 5) == 0 or step == tp.max_steps:
                rec.update(val_recall())
            history.append(rec)
            if log_fn:
                log_fn({k: v for k, v in rec.items() if k != "step"}, step)
        if step % tp.checkpoint_every == 0:
            save()
    save()
    model.eval()
    return VmrTrainResult(model, step, elapsed(), history, resumed)
