"""Training a voice-face pair as EFT does: symmetric InfoNCE over (voice track, face track) pairs of one clip,
batches cleaned by SBC, the model of the best validation AUC kept.

Batches (EFT's loaders/loader.py, re-done here): each step draws `big_batch` training pairs at random (a pair
is a voice track and a face track of the same video; `pairs_of` zips them clip by clip) and builds the batch
of `batch_size` from them:
- `off` ("vanilla"): the first `batch_size` pairs.
- `sbc` (EFT's sbc_k): the similarity of two pairs is the smaller of their face similarity and their voice
  similarity, measured on the first face expert's and the first voice expert's raw vectors (EFT uses its
  first face and first voice feature), here centred by the training mean and unit-normalised; the diagonal is
  zeroed and threshold = mean + k * std of that matrix. Going through the pairs in order, a pair whose identity
  is not yet in the batch is kept; a pair whose identity IS already in the batch (EFT reads the name from the
  track path) is kept only when its largest similarity to the earlier pairs is <= threshold, otherwise dropped
  and its column zeroed. It stops at `batch_size`. What it removes are the same-identity pairs that would be
  nearly identical false negatives in InfoNCE; it does not touch the noisy-label pairs (a face track that shows
  someone else), which no step of EFT detects.
- `label`: one pair per identity (the oracle EFT compares with).
When the big batch cannot fill `batch_size` (a tiny cohort), the step trains on the pairs kept.

Loss: CE(v f^T / tau, diag) + CE(f v^T / tau, diag) (EFT adds the two directions). Adam, constant learning
rate (EFT). Every `eval_every` steps the verification AUC on the validation list is measured; the weights of the
best step are the result (EFT's model selection). Training stops at `max_steps`, never at a time; each step's
draws come from (seed, step), so a resumed run equals an uninterrupted one (avmatch.core.training).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from avmatch.core.training import Checkpoint, SafetyTimer, TimeLimitReached, step_rng, step_seed
from avmatch.voiceface.model import VoiceFacePair
from avmatch.voiceface.vectors import expert_matrix

log = logging.getLogger(__name__)
CKPT_FORMAT = "avmatch-vf-ckpt-v1"


@dataclass
class SplitData:
    """One split's expert vectors: per modality the track ids, expert -> [n, dim] matrix and presence mask,
    and the training pairs (voice row, face row) with the identity code of each pair."""

    voice_tracks: list[str]
    face_tracks: list[str]
    voice: dict[str, np.ndarray]
    voice_present: dict[str, np.ndarray]
    face: dict[str, np.ndarray]
    face_present: dict[str, np.ndarray]
    pairs: np.ndarray
    pair_identity: np.ndarray
    identities: list[str] = field(default_factory=list)

    def modality(self, m: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return (self.voice, self.voice_present) if m == "voice" else (self.face, self.face_present)

    def dims(self) -> dict[str, int]:
        return {e: int(x.shape[1]) for e, x in {**self.voice, **self.face}.items()}


def pairs_of(tracks: pd.DataFrame) -> pd.DataFrame:
    """(voice, face, identity) training pairs: within each video the voice and the face tracks zipped in file
    order (clip 1 with clip 1, ...); a video with more tracks of one modality leaves the rest unpaired."""
    rows = []
    for (_, _), g in tracks.groupby(["identity", "video"], sort=False):
        v = g.loc[g["modality"] == "voice", "track"].tolist()
        f = g.loc[g["modality"] == "face", "track"].tolist()
        rows += [(a, b, g["identity"].iat[0]) for a, b in zip(v, f)]
    return pd.DataFrame(rows, columns=["voice", "face", "identity"])


def load_split(root: Path, tracks: pd.DataFrame, identities: pd.DataFrame, split: str,
               voice_experts: list[str], face_experts: list[str], expert_dir: Path | None = None) -> SplitData:
    """The split's tracks and their expert vectors from the corpus folder (`expert_dir`: default root/experts)."""
    expert_dir = Path(expert_dir or Path(root) / "experts")
    names = set(identities.loc[identities["split"] == split, "identity"])
    t = tracks[tracks["identity"].isin(names)]
    vt = t.loc[t["modality"] == "voice", "track"].tolist()
    ft = t.loc[t["modality"] == "face", "track"].tolist()
    voice, vp, face, fp = {}, {}, {}, {}
    for e in voice_experts:
        voice[e], vp[e] = expert_matrix(expert_dir / f"{e}.parquet", vt)
    for e in face_experts:
        face[e], fp[e] = expert_matrix(expert_dir / f"{e}.parquet", ft)
    pairs = pairs_of(t)
    vi, fi = {k: i for i, k in enumerate(vt)}, {k: i for i, k in enumerate(ft)}
    ids = sorted(names)
    code = {k: i for i, k in enumerate(ids)}
    return SplitData(vt, ft, voice, vp, face, fp,
                     np.array([[vi[a], fi[b]] for a, b in zip(pairs["voice"], pairs["face"])], np.int64).reshape(-1, 2),
                     np.array([code[k] for k in pairs["identity"]], np.int64), ids)


def symmetric_infonce(v: torch.Tensor, f: torch.Tensor, temperature: float) -> torch.Tensor:
    """CE(v f^T / tau) + CE(f v^T / tau), the matching row being the positive (EFT's two InfoNCE calls)."""
    v, f = F.normalize(v, dim=1), F.normalize(f, dim=1)
    logits = v @ f.t() / temperature
    target = torch.arange(len(v), device=v.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


def sbc_select(identity: np.ndarray, face_unit: np.ndarray, voice_unit: np.ndarray, batch_size: int, k: float
               ) -> np.ndarray:
    """EFT's SBC over one big batch (rows in draw order): the positions kept, at most `batch_size`."""
    sim = np.minimum(face_unit @ face_unit.T, voice_unit @ voice_unit.T)
    np.fill_diagonal(sim, 0.0)
    threshold = sim.mean() + k * sim.std()
    kept = [0]
    seen = {int(identity[0])}
    for i in range(1, len(identity)):
        if len(kept) == batch_size:
            break
        who = int(identity[i])
        if who in seen:
            if sim[i, :i].max() <= threshold:
                kept.append(i)
            else:
                sim[:, i] = 0.0
        else:
            kept.append(i)
            seen.add(who)
    return np.array(kept, np.int64)


def drop_experts(present: dict[str, np.ndarray], p: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Expert dropout: each present expert vector of a row is hidden with probability `p`; a row keeps at
    least one of the experts it had (one of them, drawn uniformly, when all would go). The rows' input is
    unchanged: only the presence mask is, so the fusion masks the token and concat zeroes the block, as for
    a truly missing expert."""
    names = list(present)
    if p <= 0 or len(names) < 2:
        return present
    had = np.stack([np.asarray(present[n], bool) for n in names], 1)
    keep = had & (rng.random(had.shape) >= p)
    lost = had.any(1) & ~keep.any(1)
    for i in np.flatnonzero(lost):
        keep[i, rng.choice(np.flatnonzero(had[i]))] = True
    return {n: keep[:, j] for j, n in enumerate(names)}


def label_select(identity: np.ndarray, batch_size: int) -> np.ndarray:
    seen: set[int] = set()
    kept = []
    for i, who in enumerate(identity.tolist()):
        if who not in seen:
            seen.add(who)
            kept.append(i)
            if len(kept) == batch_size:
                break
    return np.array(kept, np.int64)


def _unit_rows(x: np.ndarray, present: np.ndarray, mean: np.ndarray) -> np.ndarray:
    y = (x - mean) * present[:, None]
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half), in [0, 1]; NaN when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def verification_auc(pair: VoiceFacePair, data: SplitData, lists: pd.DataFrame) -> float:
    """Verification AUC (percent, as EFT reports) of a voice-face list (voice, face, label) of the split."""
    v = pair.embed("voice", data.voice, data.voice_present)
    f = pair.embed("face", data.face, data.face_present)
    vi, fi = {k: i for i, k in enumerate(data.voice_tracks)}, {k: i for i, k in enumerate(data.face_tracks)}
    ok = lists["voice"].isin(vi.keys()) & lists["face"].isin(fi.keys())
    lst = lists[ok]
    s = np.einsum("ij,ij->i", v[[vi[x] for x in lst["voice"]]], f[[fi[x] for x in lst["face"]]])
    return 100.0 * roc_auc(lst["label"].to_numpy(), s)


@dataclass
class TrainResult:
    pair: VoiceFacePair
    steps: int
    best_step: int
    best_valid_auc: float
    history: list[dict]
    seconds: float
    resumed_from_step: int | None
    batch_stats: dict[str, float]


def _fingerprint(config: dict, tp: Any, n_pairs: int) -> str:
    data = {"config": config, "train": tp.model_dump() if hasattr(tp, "model_dump") else dict(tp), "pairs": n_pairs}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_pair(config: dict[str, Any], train: SplitData, tp: Any, *, valid: tuple[SplitData, pd.DataFrame] | None = None,
               checkpoint: Path | None = None, meta: dict | None = None, sbc_mode: str | None = None,
               device: str | torch.device = "cpu", log_fn: Callable[[dict, int], None] | None = None,
               name: str = "voiceface") -> TrainResult:
    """Train one pair (`config`: VoiceFacePair config) for `tp.max_steps` steps; see the module docstring.

    `sbc_mode` overrides tp.sbc.mode (the SBC ablation). `checkpoint`: a file to save every
    `tp.checkpoint_every` steps and resume from when it was written with the same config and params."""
    mode = sbc_mode or tp.sbc.mode
    torch.manual_seed(tp.seed)
    pair = VoiceFacePair(config, {**(meta or {}), "sbc_mode": mode})
    for m in ("voice", "face"):
        x, p = train.modality(m)
        pair.fit_normalisation(m, x, p)
    pair.to(device)
    opt = torch.optim.Adam(pair.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    n_pairs = len(train.pairs)
    if n_pairs < 2:
        raise ValueError(f"{name}: {n_pairs} training pairs; at least 2 are needed")
    # SBC's similarity: the first face and first voice expert, centred, unit rows
    v0, f0 = pair.voice_experts[0], pair.face_experts[0]
    v_unit = _unit_rows(train.voice[v0], train.voice_present[v0], train.voice[v0][train.voice_present[v0]].mean(0))
    f_unit = _unit_rows(train.face[f0], train.face_present[f0], train.face[f0][train.face_present[f0]].mean(0))
    fp = _fingerprint(pair.config, tp, n_pairs) + mode
    step, best = 0, {"auc": -1.0, "step": 0, "state": None}
    history: list[dict] = []
    stats = {"kept": 0.0, "dup_before": 0.0, "dup_after": 0.0, "steps": 0}
    resumed = None
    ckpt = Checkpoint(checkpoint, CKPT_FORMAT, fp) if checkpoint is not None else None
    ck = ckpt.load(weights_only=False) if ckpt is not None else None   # "best" holds a state dict
    if ck is not None:
        pair.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best, history, stats = ck["step"], ck["best"], ck["history"], ck["stats"]
        resumed = step
        log.info("%s: resumed from step %d (%s)", name, step, checkpoint)
    timer = SafetyTimer(tp.max_minutes)
    t0 = time.monotonic()

    def run_valid(at: int) -> None:
        if valid is None:
            return
        auc = verification_auc(pair, valid[0], valid[1])
        history.append({"step": at, "valid_auc": auc})
        if log_fn:
            log_fn({f"{name}_valid_auc": auc}, at)
        if auc > best["auc"]:
            best.update(auc=auc, step=at, state={k: v.detach().cpu().clone() for k, v in pair.state_dict().items()})

    def save_checkpoint() -> None:
        if ckpt is not None:
            ckpt.save({"model": pair.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                       "history": history, "stats": stats})

    pair.train()
    while step < tp.max_steps:
        rng = step_rng(tp.seed, step)
        draw = rng.choice(n_pairs, min(tp.big_batch, n_pairs), replace=tp.big_batch > n_pairs)
        ident = train.pair_identity[draw]
        if mode == "off":
            pos = np.arange(min(tp.batch_size, len(draw)))
        elif mode == "label":
            pos = label_select(ident, tp.batch_size)
        else:
            rows = train.pairs[draw]
            pos = sbc_select(ident, f_unit[rows[:, 1]], v_unit[rows[:, 0]], tp.batch_size, tp.sbc.k)
        chosen = draw[pos]
        stats["steps"] += 1
        stats["kept"] += len(pos)
        stats["dup_before"] += 1 - len(set(ident[: tp.batch_size].tolist())) / max(1, min(tp.batch_size, len(ident)))
        stats["dup_after"] += 1 - len(set(ident[pos].tolist())) / max(1, len(pos))
        rows = train.pairs[chosen]
        vx = {e: torch.from_numpy(train.voice[e][rows[:, 0]]).to(device) for e in pair.voice_experts}
        drop_rng = step_rng(tp.seed, step, 3)
        vp = {e: torch.from_numpy(m).to(device) for e, m in drop_experts(
            {e: train.voice_present[e][rows[:, 0]] for e in pair.voice_experts}, tp.expert_dropout, drop_rng).items()}
        fx = {e: torch.from_numpy(train.face[e][rows[:, 1]]).to(device) for e in pair.face_experts}
        fpr = {e: torch.from_numpy(m).to(device) for e, m in drop_experts(
            {e: train.face_present[e][rows[:, 1]] for e in pair.face_experts}, tp.expert_dropout, drop_rng).items()}
        torch.manual_seed(step_seed(tp.seed, step, 1))  # dropout masks of this step
        loss = symmetric_infonce(pair.voice(vx, vp), pair.face(fx, fpr), tp.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        entry = {"step": step, "loss": float(loss.item()), "batch": int(len(pos))}
        history.append(entry)
        if log_fn and (step % 10 == 0 or step == tp.max_steps):
            log_fn({f"{name}_loss": entry["loss"]}, step)
        if step % tp.eval_every == 0 or step == tp.max_steps:
            run_valid(step)
            pair.train()
            log.info("%s step %d/%d loss %.3f valid AUC %s", name, step, tp.max_steps, entry["loss"],
                     f"{best['auc']:.2f} (best, step {best['step']})" if valid is not None else "-")
        if step % tp.checkpoint_every == 0 or step == tp.max_steps:
            save_checkpoint()
        if timer.expired() and step < tp.max_steps:
            save_checkpoint()
            raise TimeLimitReached(system="voiceface", steps=step, max_steps=tp.max_steps,
                                   max_minutes=tp.max_minutes, checkpoint=checkpoint)
    if best["state"] is not None:
        pair.load_state_dict(best["state"])
    n = max(1, stats["steps"])
    batch_stats = {"mean_batch": stats["kept"] / n, "dup_rate_before": stats["dup_before"] / n,
                   "dup_rate_after": stats["dup_after"] / n}
    pair.meta.update({"best_step": best["step"], "best_valid_auc": best["auc"], "steps": step, **batch_stats})
    pair.eval()
    return TrainResult(pair, step, int(best["step"]) if valid is not None else step, float(best["auc"]),
                       history, time.monotonic() - t0, resumed, batch_stats)


def model_configs(voice: list[str], face: list[str], dims: dict[str, int], mp: Any, kind: str) -> dict[str, Any]:
    """The VoiceFacePair config of `kind` over the given experts (single: the first of each modality)."""
    base = {k: getattr(mp, k) for k in ("d", "heads", "layers", "dropout", "feedforward", "hidden")}
    if kind == "single":
        voice, face = voice[:1], face[:1]
    return {**base, "kind": kind, "voice_experts": [(e, dims[e]) for e in voice],
            "face_experts": [(e, dims[e]) for e in face]}


def copy_pair(pair: VoiceFacePair) -> VoiceFacePair:
    return copy.deepcopy(pair)
