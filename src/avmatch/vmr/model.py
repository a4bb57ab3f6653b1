"""The two-branch encoder: per-second video and music features -> one unit-norm shared space.

Each modality has its own branch (the modalities share no weights, as in VM-NET):

- `stats` (VM-NET): the track statistics of the window -- per-dimension mean, standard deviation and
  maximum over its seconds -- through a two-layer MLP.
- `sequence` (OF-VM-Net style): the seconds as tokens (a linear projection plus a learned position
  embedding) through a small transformer encoder. The output keeps the time course: the mean token and
  every token reduced to 8 numbers, so "a cut burst in second 3" can meet "a loud onset in second 3".
- `both`: the two embeddings, each unit-norm, concatenated and normalised again.
- with `curve_channels` > 0 (sequence and both): `RhythmCurves`, a few learned activity curves per
  second, standardised over time, appended as a third unit-norm part.

Inputs are standardised with the training set's mean and standard deviation (kept in the model, so a
saved encoder carries its own normalisation). A clip longer than the window is embedded window by window
(`embed_windows`). A (video, music) pair is scored by its best pair of windows (`best_window_scores`, what
the evaluate stage and `avmatch vmr suggest` rank by): the rhythm curves are tied to positions in a window,
so the normalised mean of an item's windows (`embed_items`, kept for diagnostics) blurs their alignment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "avmatch-vmr-encoder-v1"


class StatsBranch(nn.Module):
    def __init__(self, in_dim: int, hidden: int, dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.mean(1), x.std(1, unbiased=False), x.amax(1)], 1))


class SequenceBranch(nn.Module):
    def __init__(self, in_dim: int, window: int, d_model: int, layers: int, heads: int, dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, window, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True,
                                           activation="gelu", norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.reduce = nn.Linear(d_model, 8)
        self.out = nn.Linear(d_model + 8 * window, dim)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.proj(x) + self.pos[:, : x.shape[1]])

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        h = self.tokens(x) if h is None else h
        return self.out(torch.cat([h.mean(1), self.reduce(h).flatten(1)], 1))


class RhythmCurves(nn.Module):
    """A few learned activity curves over the window, each standardised over time (so a clip's level is
    removed and only its time course is left) and flattened: the dot product of a video's and a music's
    curves is the mean correlation of the curves. This is the rhythm peer's question (does the picture
    move where the music hits?) with learned curves.

    With `substeps` > 1 each second gives `substeps` points of every curve, read from the second's token
    and its (standardised) input features, which hold the sub-second profiles (where in the second the
    flashes, motion bursts and onsets fall): a beat lasts a fraction of a second, so a per-second curve
    blurs the very alignment a music video is cut to."""

    def __init__(self, d_model: int, channels: int, in_dim: int = 0, substeps: int = 1):
        super().__init__()
        self.channels, self.substeps = channels, substeps
        self.proj = nn.Linear(d_model + (in_dim if substeps > 1 else 0), channels * substeps)

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if self.substeps > 1:
            c = self.proj(torch.cat([h, x], -1))                     # [B, T, C * S]
            b, t = c.shape[:2]
            c = c.view(b, t, self.channels, self.substeps).transpose(2, 3).reshape(b, t * self.substeps, self.channels)
        else:
            c = self.proj(h)
        c = (c - c.mean(1, keepdim=True)) / (c.std(1, keepdim=True, unbiased=False) + 1e-3)
        return c.flatten(1)


class ModalityBranch(nn.Module):
    def __init__(self, in_dim: int, window: int, mp: Any):
        super().__init__()
        self.kind = mp.kind
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.stats = StatsBranch(in_dim, mp.hidden, mp.dim, mp.dropout) if mp.kind in ("stats", "both") else None
        self.seq = (SequenceBranch(in_dim, window, mp.d_model, mp.layers, mp.heads, mp.dim, mp.dropout)
                    if mp.kind in ("sequence", "both") else None)
        self.curves = (RhythmCurves(mp.d_model, mp.curve_channels, in_dim, mp.curve_substeps)
                       if self.seq is not None and mp.curve_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        parts = []
        if self.stats is not None:
            parts.append(F.normalize(self.stats(x), dim=1))
        if self.seq is not None:
            h = self.seq.tokens(x)
            parts.append(F.normalize(self.seq(x, h), dim=1))
            if self.curves is not None:
                parts.append(F.normalize(self.curves(h, x), dim=1))
        return F.normalize(torch.cat(parts, 1), dim=1)


class VmrEncoder(nn.Module):
    """`video(x)` and `music(x)` map [B, window, D_modality] to unit-norm [B, dim] (x2 for `both`)."""

    def __init__(self, video_dim: int, music_dim: int, window: int, mp: Any, video_families: list[str],
                 music_families: list[str]):
        super().__init__()
        self.window = window
        self.video_families, self.music_families = list(video_families), list(music_families)
        self.video = ModalityBranch(video_dim, window, mp)
        self.music = ModalityBranch(music_dim, window, mp)
        self.config = {"video_dim": video_dim, "music_dim": music_dim, "window": window,
                       "model": mp.model_dump() if hasattr(mp, "model_dump") else dict(mp),
                       "video_families": self.video_families, "music_families": self.music_families}

    @property
    def out_dim(self) -> int:
        m = self.config["model"]
        curves = m.get("curve_channels", 0) * m.get("curve_substeps", 1) * self.window if m["kind"] != "stats" else 0
        return m["dim"] * (2 if m["kind"] == "both" else 1) + curves

    def set_normalisation(self, video: np.ndarray, music: np.ndarray) -> None:
        """Standardise inputs with the mean / std of the training seconds ([n, D] per modality)."""
        for branch, x in ((self.video, video), (self.music, music)):
            branch.mean.copy_(torch.from_numpy(x.mean(0).astype(np.float32)))
            branch.std.copy_(torch.from_numpy(np.maximum(x.std(0), 1e-3).astype(np.float32)))


def fit_window(x: np.ndarray, window: int) -> np.ndarray:
    """[t, D] -> [window, D]: cut, or pad by repeating the last second (a short clip stays a clip)."""
    if len(x) >= window:
        return x[:window]
    if len(x) == 0:
        raise ValueError("no whole second of features")
    return np.concatenate([x, np.repeat(x[-1:], window - len(x), 0)])


def window_starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    return starts if starts[-1] == length - window else starts + [length - window]


@torch.no_grad()
def embed_windows(branch: nn.Module, x: np.ndarray, window: int, stride: int = 1) -> tuple[np.ndarray, list[int]]:
    """Every window of one item's [t, D] features -> ([n_windows, dim], window start seconds)."""
    starts = window_starts(len(x), window, stride)
    batch = torch.from_numpy(np.stack([fit_window(x[s:], window) for s in starts]).astype(np.float32))
    return branch.eval()(batch).numpy(), starts


def embed_items(branch: nn.Module, items: list[np.ndarray], window: int, stride: int = 1) -> np.ndarray:
    """One unit-norm vector per item: the normalised mean of its window embeddings."""
    out = []
    for x in items:
        e, _ = embed_windows(branch, x, window, stride)
        m = e.mean(0)
        out.append(m / (np.linalg.norm(m) + 1e-12))
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 1), np.float32)


def embed_item_windows(branch: nn.Module, items: list[np.ndarray], window: int, stride: int = 1
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window of every item: (vectors [n_windows, dim], the item index of each row, its start second).
    What the FAISS index of a music database holds, and what `best_window_scores` compares."""
    vecs, owner, starts = [], [], []
    for i, x in enumerate(items):
        e, st = embed_windows(branch, x, window, stride)
        vecs.append(e)
        owner += [i] * len(st)
        starts += st
    dim = vecs[0].shape[1] if vecs else 1
    return (np.concatenate(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32),
            np.asarray(owner, np.int64), np.asarray(starts, np.int64))


def best_window_scores(window_sims: np.ndarray, query_item: np.ndarray, target_item: np.ndarray, n_queries: int,
                       n_targets: int) -> np.ndarray:
    """[n_queries, n_targets] scores: for each (query item, target item) the best similarity over their
    pairs of windows, from the windows' [q_windows, t_windows] similarities (-inf where a pair was not
    scored). This is how `avmatch vmr suggest` ranks tracks: the curves of the sequence encoder are tied
    to positions within a window, so averaging an item's windows (taken at different starts) mixes
    misaligned curves, while the best pair of windows is the offset at which the picture fits the music."""
    per_target = np.full((window_sims.shape[0], n_targets), -np.inf)
    for j in range(n_targets):
        cols = np.flatnonzero(target_item == j)
        if len(cols):
            per_target[:, j] = window_sims[:, cols].max(1)
    out = np.full((n_queries, n_targets), -np.inf)
    np.maximum.at(out, query_item, per_target)
    return out


def save_encoder(model: VmrEncoder, path: str | Path, extra: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, "config": model.config, "state": model.state_dict(), "extra": extra or {}}, tmp)
    os.replace(tmp, path)


def load_encoder(path: str | Path) -> VmrEncoder:
    from avmatch.vmr.params import VmrModelParams

    ck = torch.load(path, map_location="cpu", weights_only=True)
    if ck.get("format") != FORMAT:
        raise ValueError(f"{path}: not a vmr encoder (format {ck.get('format')!r})")
    c = ck["config"]
    model = VmrEncoder(c["video_dim"], c["music_dim"], c["window"], VmrModelParams(**c["model"]),
                       c["video_families"], c["music_families"])
    model.load_state_dict(ck["state"])
    return model.eval()
