"""Retrieval metrics both ways (video -> music, music -> video), with bootstrap intervals, and the two
reference rankings every trained number is read against:

- `random`: a seeded random score matrix (R@K ~ K / pool size).
- `peer`: a training-free matcher of rhythm: the video's per-second activity (frame difference plus cuts)
  correlated with the music's per-second onset strength, plus how well the video's cut rate sits on the
  music's beat grid (a whole power-of-two number of beats per cut scores best). It knows that music
  videos cut and move to the beat, nothing about this corpus's rule.

Queries and items are paired by position: query i's true item is item i (a pool of N pairs).
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10, 25, 50)


def true_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of item i among all items for query i ([N, N] scores, higher is better; ties count
    against the query, so a constant score matrix ranks every truth last)."""
    s = np.asarray(scores, np.float64)
    pos = s.diagonal()
    return (s >= pos[:, None]).sum(1).astype(np.int64)


def summarise(ranks: np.ndarray, ks=DEFAULT_KS) -> dict[str, float]:
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    return out


def bootstrap_intervals(ranks: np.ndarray, ks=DEFAULT_KS, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of R@K and the median rank, over queries resampled with replacement."""
    if n <= 0 or len(ranks) == 0:
        return {}
    rng = np.random.default_rng(seed)
    samples = ranks[rng.integers(0, len(ranks), (n, len(ranks)))]
    out = {f"R@{k}": np.mean(samples <= k, axis=1) for k in ks}
    out["median_rank"] = np.median(samples, axis=1)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in out.items()}


def evaluate_scores(scores: np.ndarray, ks=DEFAULT_KS, bootstrap: int = 1000, seed: int = 0) -> dict:
    """`scores[i, j]`: video i vs music j. Both directions with 95% intervals under `ci`."""
    out = {}
    for name, s in (("v2m", scores), ("m2v", np.asarray(scores).T)):
        r = true_ranks(s)
        out[name] = summarise(r, ks)
        out[name]["ci"] = bootstrap_intervals(r, ks, bootstrap, seed)
    return out


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, n))


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


def _beat_fit(cuts_per_s: float, tempo: float) -> float:
    """0 when a cut falls every 1, 2, 4 or 8 beats; down to -1 halfway between (log2 distance)."""
    if cuts_per_s <= 0 or tempo <= 0:
        return -1.0
    beats_per_cut = (tempo / 60.0) / cuts_per_s
    d = abs(np.log2(beats_per_cut) - np.clip(np.round(np.log2(beats_per_cut)), 0, 3))
    return -float(min(1.0, 2 * d))


def peer_scores(video: list[dict[str, np.ndarray]], music: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The rhythm peer of the module docstring from raw per-second families (`motion`, `cuts`; `rhythm`)."""
    va, cut_rate = [], []
    for v in video:
        act = v["motion"][:, 0] + v["cuts"][:, 0]
        va.append(act)
        cut_rate.append(float(v["cuts"][:, 0].sum()) / max(1, len(act)))
    mo, tempo = [], []
    for m in music:
        mo.append(m["rhythm"][:, 0])
        tempo.append(float(m["rhythm"][0, 3]) * 120.0 if len(m["rhythm"]) else 0.0)
    out = np.zeros((len(video), len(music)))
    for i, a in enumerate(va):
        for j, o in enumerate(mo):
            t = min(len(a), len(o))
            corr = float(np.mean(_z(a[:t]) * _z(o[:t]))) if t > 1 else 0.0
            out[i, j] = corr + 0.5 * _beat_fit(cut_rate[i], tempo[j])
    return out
