"""Voice–face metrics with EFT's names, scales and quirks, so our numbers sit next to the paper's.

The values equal those of EFT's own functions (utils/eval_core_func.py, map_evaluate.py, distance_util.py)
on the same embeddings and lists; tests/voiceface/test_metrics.py checks each against a direct
reimplementation and hand-worked cases. What EFT does, quirks included:

- Verification (auc, auc_g, auc_n, auc_gn, valid_auc; percent): the score of a (voice, face) pair is
  (cos + 1) / 2, computed in the dtype of the embeddings (float32 for torch output). AUC as scikit-learn's
  roc_auc_score: ROC points at the distinct scores, trapezoid area, so a tie between a positive and a negative
  counts one half. Quirk: (cos + 1) / 2 in float32 rounds away low bits of cos, so two slightly different
  cosines can become a tie.
- 1:2 matching (ms_v2f, ms_f2v, ms_v2f_g, ms_f2v_g; percent): distance 1 - cos (embedding dtype); v2f is right
  when d(voice1, face1) < d(voice1, face2), f2v when d(face1, voice1) < d(face1, voice2). Strict '<': a tie
  counts as wrong.
- 1:N matching (1N_v2f, 1N_f2v; fractions, NOT percent): the probe is position 0's voice (face); distances
  to the item's faces (voices) with scipy's cdist 'cosine' (float64); for each n = 2..len(gallery), right
  when argmin of the first n distances is 0 — numpy's argmin takes the first minimum, so a tie with the true
  match counts as right (the opposite of 1:2). Keys are the ints n; an n is averaged over the items whose
  gallery has at least n entries.
- Retrieval (map_v2f, map_f2v; percent): within each group, cdist 'cosine' (float64) between the group's
  voices and faces; every query (a voice for v2f, a face for f2v) ranks ALL the group's other-modality entries
  with numpy's default argsort (not a stable sort: the order of tied distances is numpy's; exact ties are
  rare except for duplicated tracks); relevant = same name, which includes the query's own partner and every
  other entry of the identity; AP = mean over the relevant entries of the precision at their rank (k = all
  entries, so every relevant entry is found); the mean over queries is the group's mAP, the mean over groups
  (not over all queries: groups of unequal size weigh the same) is reported.
- Metrics of lists that are absent are omitted, never reported as 0.

Bootstrap (``bootstrap=B > 0``): percentile 95 % intervals under ``"ci"``, resampling the entries of each
list with replacement (pairs, triplets, 1:N items; whole groups for retrieval); a verification resample
with a single class is drawn again; each metric has its own random stream from (seed, metric name).

Missing embeddings: a track a list names without an embedding is an error (MissingEmbeddings) naming the
track, the list and its file — a partial score would silently differ from the paper's protocol.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import numpy as np
import scipy.spatial.distance
from numpy.typing import ArrayLike

from avmatch.voiceface.evals import (
    MATCHING,
    MATCHING_1N,
    RETRIEVAL,
    VERIFICATION,
    EvalLists,
)

METRIC_OF = {
    "valid_verification": "valid_auc",
    "test_verification": "auc",
    "test_verification_g": "auc_g",
    "test_verification_n": "auc_n",
    "test_verification_gn": "auc_gn",
}
MATCHING_OF = {"test_matching": ("ms_v2f", "ms_f2v"), "test_matching_g": ("ms_v2f_g", "ms_f2v_g")}


class MissingEmbeddings(KeyError):
    """Some tracks a list names have no embedding; the message names them, the list and its file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# ---------------------------------------------------------------------------------------- primitives

def _stack(emb: Mapping[str, np.ndarray], keys) -> np.ndarray:
    # like EFT: np.array of the per-track vectors, so the dtype is the embeddings' own
    if hasattr(keys, "to_numpy"):  # iterating an Arrow-backed pandas column is slow
        keys = keys.to_numpy(dtype=object)
    return np.array([np.asarray(emb[k]) for k in keys])


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine, in the operation order of EFT's distance_util/eval_core_func (same rounding)."""
    ab = np.sum(a * b, axis=1)
    a_norm = np.sqrt(np.sum(a * a, axis=1))
    b_norm = np.sqrt(np.sum(b * b, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero vector gives NaN, reported by the callers
        return ab / (a_norm * b_norm)


def verification_scores(voice: np.ndarray, face: np.ndarray) -> np.ndarray:
    """EFT's verification score (cos + 1) / 2 in the embeddings' dtype."""
    return (_row_cosine(voice, face) + 1) / 2.0


def _binary_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive counts at each distinct score, highest first (scikit-learn's construction)."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], labels[order]
    last = np.r_[np.where(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[last]
    fps = 1 + last - tps
    return fps, tps


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1), collinear points dropped as scikit-learn's roc_curve does."""
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores)
    if y.size == 0 or y.min() == y.max():
        raise ValueError("AUC needs both positive and negative pairs")
    if np.isnan(s).any():  # scikit-learn (so EFT) refuses NaN scores too
        raise ValueError("verification scores contain NaN (a zero or non-finite embedding)")
    fps, tps = _binary_curve(y, s)
    if len(fps) > 2:
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    return fps / fps[-1], tps / tps[-1]


def auc_score(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC as a fraction (trapezoid under `roc_curve`); equals sklearn.metrics.roc_auc_score."""
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def group_map(dist: np.ndarray, names: ArrayLike) -> float:
    """EFT's fx_calc_map_label_v2: mean over rows of the AP of the row's ranking (see the module docstring)."""
    order = dist.argsort()
    labels = np.asarray(names)
    k = dist.shape[0]
    aps = []
    for i in range(dist.shape[0]):
        rel = labels[order[i][:k]] == labels[i]
        if not rel.any():
            aps.append(0.0)
            continue
        p, r = 0.0, 0
        for j in np.flatnonzero(rel):  # summed in EFT's order, so the float result is the same
            r += 1
            p += r / (int(j) + 1)
        aps.append(p / r)
    return float(np.mean(aps))


# ----------------------------------------------------------------------------------------- per list

def _check(lists: EvalLists, name: str, voice: Mapping, face: Mapping) -> None:
    df = lists[name]
    for modality, emb in (("voice", voice), ("face", face)):
        cols = [c for c in df.columns if c.rstrip("12") == modality]
        missing = sorted({t for c in cols for t in df[c].to_numpy(dtype=object) if t not in emb})
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise MissingEmbeddings(f"{modality} track {missing[0]!r}{more} named in list {name} "
                                    f"({lists.source(name)}) has no embedding")


def _check_dims(lists: EvalLists, voice: Mapping, face: Mapping) -> None:
    """Every embedding the lists use is a vector of one common length (voices and faces share the space)."""
    shapes: dict[tuple, str] = {}
    for modality, emb in (("voice", voice), ("face", face)):
        for t in sorted(lists.tracks(modality)):
            shape = np.shape(emb[t])
            if shape not in shapes:
                shapes[shape] = f"{modality} track {t!r}"
    if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
        raise ValueError("embeddings must be vectors of one length shared by voices and faces; found "
                         + ", ".join(f"{s} ({where})" for s, where in shapes.items()))


def _verification(df, voice, face) -> tuple[np.ndarray, np.ndarray]:
    return df["label"].to_numpy(), verification_scores(_stack(voice, df["voice"]), _stack(face, df["face"]))


def _matching(df, voice, face) -> tuple[np.ndarray, np.ndarray]:
    v1, f1 = _stack(voice, df["voice1"]), _stack(face, df["face1"])
    v2, f2 = _stack(voice, df["voice2"]), _stack(face, df["face2"])
    v2f = (1 - _row_cosine(v1, f1)) < (1 - _row_cosine(v1, f2))
    f2v = (1 - _row_cosine(f1, v1)) < (1 - _row_cosine(f1, v2))
    return v2f, f2v


def _one_to_n(df, voice, face, v2f: bool) -> np.ndarray:
    """(items, N-1) array: 1 where the probe's true match wins among the first n = 2..N of its gallery,
    NaN where an item's gallery is shorter than n."""
    df = df.iloc[np.lexsort((df["position"].to_numpy(), df["item"].to_numpy()))]
    items = df["item"].to_numpy()
    starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]])
    ends = np.r_[starts[1:], len(df)]
    probes = _stack(voice, df["voice"]) if v2f else _stack(face, df["face"])
    gallery = _stack(face, df["face"]) if v2f else _stack(voice, df["voice"])
    out = np.full((len(starts), int((ends - starts).max()) - 1), np.nan)
    for row, (s, e) in enumerate(zip(starts, ends)):
        d = scipy.spatial.distance.cdist(probes[s:s + 1], gallery[s:e], "cosine")[0]
        if np.isnan(d).any():  # argmin's NaN rule (the first NaN wins), prefix by prefix
            out[row, :len(d) - 1] = [float(np.argmin(d[:n]) == 0) for n in range(2, len(d) + 1)]
        else:  # argmin of d[:n] is 0 exactly when d[0] <= every d[1:n] (the first minimum wins a tie)
            out[row, :len(d) - 1] = d[0] <= np.minimum.accumulate(d[1:])
    return out


def _mean_1n(right: np.ndarray) -> dict[int, float]:
    out = {}
    for j in range(right.shape[1]):
        col = right[:, j]
        col = col[~np.isnan(col)]
        if col.size:
            out[j + 2] = float(np.mean(col))
    return out


def _retrieval(df, voice, face) -> tuple[np.ndarray, np.ndarray]:
    v2f, f2v = [], []
    for _, g in df.groupby("group", sort=True):
        d = scipy.spatial.distance.cdist(_stack(voice, g["voice"]), _stack(face, g["face"]), "cosine")
        names = g["name"].to_numpy()
        v2f.append(group_map(d, names))
        f2v.append(group_map(d.T, names))
    return np.array(v2f), np.array(f2v)


# ------------------------------------------------------------------------------------------ evaluate

def _percentile_ci(stat: Callable[[np.ndarray], float | None], n: int, b: int,
                   rng: np.random.Generator) -> list[float]:
    vals = []
    tries = 0
    while len(vals) < b and tries < 20 * b:
        tries += 1
        v = stat(rng.integers(0, n, size=n))
        if v is not None:
            vals.append(v)
    if not vals:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return [float(lo), float(hi)]


def evaluate(voice: Mapping[str, np.ndarray], face: Mapping[str, np.ndarray], lists: EvalLists,
             *, bootstrap: int = 0, seed: int = 0) -> dict:
    """Every metric the lists allow, with EFT's names and scales (module docstring); with bootstrap > 0 also
    "ci": {metric: [lo, hi]} (for 1N_*: {metric: {n: [lo, hi]}})."""
    for name in lists.names():
        _check(lists, name, voice, face)
    _check_dims(lists, voice, face)
    out: dict = {}
    ci: dict = {}
    def rng(metric: str) -> np.random.Generator:  # one stream per metric: adding a list moves no other CI
        return np.random.default_rng([int(seed), zlib.crc32(metric.encode())])

    for name in VERIFICATION:
        if name not in lists:
            continue
        y, s = _verification(lists[name], voice, face)
        out[METRIC_OF[name]] = auc_score(y, s) * 100
        if bootstrap:
            ci[METRIC_OF[name]] = _percentile_ci(
                lambda i, y=y, s=s: None if y[i].min() == y[i].max() else auc_score(y[i], s[i]) * 100,
                len(y), bootstrap, rng(METRIC_OF[name]))

    for name in MATCHING:
        if name not in lists:
            continue
        results = _matching(lists[name], voice, face)
        for metric, res in zip(MATCHING_OF[name], results):
            out[metric] = float(np.mean(res)) * 100
            if bootstrap:
                ci[metric] = _percentile_ci(lambda i, r=res: float(np.mean(r[i])) * 100, len(res), bootstrap,
                                            rng(metric))

    if RETRIEVAL in lists:
        for metric, aps in zip(("map_v2f", "map_f2v"), _retrieval(lists[RETRIEVAL], voice, face)):
            out[metric] = float(np.mean(aps)) * 100
            if bootstrap:
                ci[metric] = _percentile_ci(lambda i, a=aps: float(np.mean(a[i])) * 100, len(aps), bootstrap,
                                            rng(metric))

    if MATCHING_1N in lists:
        for metric, v2f in (("1N_v2f", True), ("1N_f2v", False)):
            right = _one_to_n(lists[MATCHING_1N], voice, face, v2f)
            out[metric] = _mean_1n(right)
            if bootstrap:
                samples: dict[int, list[float]] = {n: [] for n in out[metric]}
                gen = rng(metric)
                for _ in range(bootstrap):
                    for n, v in _mean_1n(right[gen.integers(0, len(right), size=len(right))]).items():
                        samples[n].append(v)
                ci[metric] = {n: [float(x) for x in np.percentile(v, [2.5, 97.5])] for n, v in samples.items() if v}
    if bootstrap:
        out["ci"] = ci
    return out


def paired_auc_differences(a: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                           b: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], lists: EvalLists,
                           *, bootstrap: int = 1000, seed: int = 0) -> dict[str, dict[str, float | list[float]]]:
    """Verification AUC of model A minus model B (percent points) on each verification list, with a PAIRED
    bootstrap 95 % interval: both models are scored on the same resampled pairs in every round, so the interval
    is that of the difference (list sampling shared by the two models cancels) rather than two overlapping
    intervals. `a`, `b`: (voice, face) embeddings by track. {metric: {"a", "b", "diff", "ci": [lo, hi]}}."""
    out: dict[str, dict[str, float | list[float]]] = {}
    for name in VERIFICATION:
        if name not in lists:
            continue
        for voice, face in (a, b):
            _check(lists, name, voice, face)
        y, sa = _verification(lists[name], *a)
        _, sb = _verification(lists[name], *b)
        metric = METRIC_OF[name]
        auc_a, auc_b = auc_score(y, sa) * 100, auc_score(y, sb) * 100
        row: dict[str, float | list[float]] = {"a": auc_a, "b": auc_b, "diff": auc_a - auc_b}
        if bootstrap:
            row["ci"] = _percentile_ci(
                lambda i, y=y, sa=sa, sb=sb: None if y[i].min() == y[i].max()
                else (auc_score(y[i], sa[i]) - auc_score(y[i], sb[i])) * 100,
                len(y), bootstrap, np.random.default_rng([int(seed), zlib.crc32(f"paired:{metric}".encode())]))
        out[metric] = row
    return out


def roc_points(voice: Mapping[str, np.ndarray], face: Mapping[str, np.ndarray],
               lists: EvalLists) -> dict[str, dict[str, list[float]]]:
    """{metric name (auc, auc_g, ...): {"fpr": [...], "tpr": [...]}} for each verification list, to plot."""
    out = {}
    for name in VERIFICATION:
        if name in lists:
            _check(lists, name, voice, face)
            fpr, tpr = roc_curve(*_verification(lists[name], voice, face))
            out[METRIC_OF[name]] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return out
