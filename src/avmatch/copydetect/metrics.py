"""VSC22 (Meta Video Similarity Challenge 2022) metrics, computed as the challenge defines them.

Two tracks, both micro-averaged over the whole query set (one ranking of all predictions, not a
mean over queries):

* **Matching track, segment µAP** (the VCSL-style localisation metric). Predictions are visited in
  descending score order; predictions with the *same* score are added as one group. For every
  (query, ref) pair we keep the union of its predicted intervals and, on each axis (query time, ref
  time), intersect it with the union of that pair's ground-truth intervals -- counting only the
  ground-truth segments whose 2-D box overlaps (positive area) at least one prediction of the pair
  so far. Summed over pairs this gives, per axis, precision = intersection / predicted length and
  recall = intersection / ground-truth length; the two axes combine by geometric mean, and
  AP = Σ P(i)·ΔR(i) over the score groups. Predictions for pairs that are not in the ground truth add
  predicted length (lower precision) and nothing else.
* **Matching track, pairwise µAP** and **descriptor track µAP**: average precision of (query, ref)
  pairs ranked by score: the sum over hits of the precision at the hit's rank, divided by the number
  of ground-truth pairs, so pairs never predicted count as missed. Tied pairs are *not* pooled (the
  official `average_precision` sorts stably and scores each rank; scikit-learn's
  `average_precision_score` would pool them): they keep the order in which the pairs first appear,
  in the submission's rows for matching and in (similarity, query frame, ref frame) order for
  descriptors, as the official code builds its pair lists. Matching predictions become pairs by their max score
  *floored at 0*, as the official `CandidatePair.from_matches` does (its running maximum starts from
  `defaultdict(float)`'s 0.0): every pair whose matches all score below 0 ties at 0. Descriptor-track
  pairs keep their raw maximum similarity (the official `MaxScoreAggregation` has no floor).
  The descriptor track first turns descriptors into pairs the challenge's way: the
  `RETRIEVAL_CANDIDATES_PER_QUERY` × (number of query videos) most similar (query frame, ref frame)
  inner products over the whole query set, max-aggregated per pair, the best
  `AGGREGATED_CANDIDATES_PER_QUERY` × (number of query videos) pairs kept.

Where the official code divides by zero we return a defined value instead (the official value is
used everywhere else):

* empty ground truth (no positive pair, or zero total ground-truth length on an axis): µAP = 0.0;
* an empty submission: µAP = 0.0 (the official loop also yields 0 here);
* predictions of zero length on an axis (0/0 precision): that axis' precision is 0 until some
  predicted length exists; such a group cannot raise recall, so the AP is unaffected.

Ground truth and predictions are read from the VSC22 CSV columns
`query_id,ref_id,query_start,query_end,ref_start,ref_end[,score]`. Video ids are kept as strings
(the official reader requires `Q…`/`R…` ids; ours accept any id).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

MATCH_COLUMNS = ["query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end", "score"]
GT_COLUMNS = MATCH_COLUMNS[:-1]
RETRIEVAL_CANDIDATES_PER_QUERY = 20 * 60   # the challenge's global k: ~K=20 for ~60 s videos
AGGREGATED_CANDIDATES_PER_QUERY = 25       # pairs kept per query video


class VscFormatError(ValueError):
    """A CSV or npz that does not follow the VSC22 layout; the message names the file and the problem."""


@dataclass(frozen=True)
class Match:
    """A ground-truth or predicted copied segment: [query_start, query_end) of the query is a copy of
    [ref_start, ref_end) of the reference (seconds)."""

    query_id: str
    ref_id: str
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float = 1.0

    @property
    def pair(self) -> tuple[str, str]:
        return (self.query_id, self.ref_id)

    def interval(self, axis: str) -> tuple[float, float]:
        return (self.query_start, self.query_end) if axis == "query" else (self.ref_start, self.ref_end)

    def overlaps(self, other: "Match") -> bool:
        """True when the two boxes (query × ref time) share a positive area."""
        dq = min(self.query_end, other.query_end) - max(self.query_start, other.query_start)
        dr = min(self.ref_end, other.ref_end) - max(self.ref_start, other.ref_start)
        return max(dq, 0.0) * max(dr, 0.0) > 0.0


@dataclass
class APResult:
    """An average precision with the points of its precision-recall curve (one per recall step)."""

    ap: float
    precisions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recalls: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


# ---------------------------------------------------------------- CSV I/O
def read_matches(path: str | Path, is_gt: bool = False) -> list[Match]:
    """VSC22 matching CSV (ground truth: score optional and set to 1.0)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"query_id": str, "ref_id": str})
    except pd.errors.EmptyDataError:
        raise VscFormatError(f"{path}: empty file (expected a header {','.join(GT_COLUMNS if is_gt else MATCH_COLUMNS)})") from None
    need = GT_COLUMNS if is_gt else MATCH_COLUMNS
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise VscFormatError(f"{path}: missing column(s) {missing}; VSC22 columns are {','.join(need)}")
    if is_gt:
        df["score"] = 1.0
    for c in need[2:] + ["score"]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = df[need + ["score"]].isna().any(axis=1)
    if bad.any():
        raise VscFormatError(f"{path}: {int(bad.sum())} row(s) with empty or non-numeric values "
                             f"(first at data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1})")
    if not is_gt and not np.isfinite(df["score"].to_numpy(float)).all():
        raise VscFormatError(f"{path}: scores must be finite")
    return [Match(str(r.query_id), str(r.ref_id), float(r.query_start), float(r.query_end), float(r.ref_start),
                  float(r.ref_end), float(r.score)) for r in df.itertuples(index=False)]


def matches_frame(matches: Iterable[Match]) -> pd.DataFrame:
    return pd.DataFrame([m.__dict__ for m in matches], columns=MATCH_COLUMNS)


def write_matches(path: str | Path, matches: Iterable[Match], gt: bool = False) -> None:
    """VSC22 matching CSV (ground truth without the score column), written atomically."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = matches_frame(matches)
    if gt:
        df = df[GT_COLUMNS]
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


# ---------------------------------------------------------------- intervals
def merge_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals as sorted, disjoint intervals (touching intervals merge)."""
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    return float(sum(e - s for s, e in merge_intervals(intervals)))


def intersect_length(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """|A ∩ B| of two interval unions, as |A| + |B| - |A ∪ B|."""
    return union_length(a) + union_length(b) - union_length(list(a) + list(b))


# ---------------------------------------------------------------- matching track
AXES = ("query", "ref")


class _Pair:
    """Ground truth and predictions of one (query, ref) pair, with its running intersections/lengths."""

    def __init__(self) -> None:
        self.gts: list[Match] = []
        self.preds: list[Match] = []
        self.inter = {a: 0.0 for a in AXES}
        self.total = {a: 0.0 for a in AXES}

    def add(self, pred: Match) -> tuple[dict[str, float], dict[str, float]]:
        self.preds.append(pred)
        considered = [g for g in self.gts if any(g.overlaps(p) for p in self.preds)]
        d_inter, d_total = {}, {}
        for a in AXES:
            p = [m.interval(a) for m in self.preds]
            inter = intersect_length(p, [g.interval(a) for g in considered])
            total = union_length(p)
            d_inter[a], d_total[a] = inter - self.inter[a], total - self.total[a]
            self.inter[a], self.total[a] = inter, total
        return d_inter, d_total


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def segment_ap(gts: Sequence[Match], predictions: Sequence[Match]) -> APResult:
    """Matching-track segment µAP (see the module docstring)."""
    pairs: dict[tuple[str, str], _Pair] = defaultdict(_Pair)
    for g in gts:
        pairs[g.pair].gts.append(g)
    gt_total = {a: sum(union_length([g.interval(a) for g in p.gts]) for p in pairs.values()) for a in AXES}
    preds = sorted(predictions, key=lambda m: m.score, reverse=True)  # stable: equal scores keep file order
    inter = {a: 0.0 for a in AXES}
    total = {a: 0.0 for a in AXES}
    recall, ap = 0.0, 0.0
    pr_p, pr_r, pr_s = [], [], []
    i = 0
    while i < len(preds):
        j = i
        while j < len(preds) and preds[j].score == preds[i].score:
            d_inter, d_total = pairs[preds[j].pair].add(preds[j])
            for a in AXES:
                inter[a] += d_inter[a]
                total[a] += d_total[a]
            j += 1
        new_recall = math.sqrt(_ratio(inter["query"], gt_total["query"]) * _ratio(inter["ref"], gt_total["ref"]))
        precision = math.sqrt(_ratio(inter["query"], total["query"]) * _ratio(inter["ref"], total["ref"]))
        delta = new_recall - recall
        ap += precision * delta
        recall = new_recall
        if delta > 0:
            pr_p.append(precision)
            pr_r.append(recall)
            pr_s.append(preds[i].score)
        i = j
    return APResult(float(ap), np.array(pr_p), np.array(pr_r), np.array(pr_s))


MATCH_PAIR_SCORE_FLOOR = 0.0  # the official from_matches starts each pair's maximum at defaultdict(float)'s 0.0


def pair_scores(matches: Iterable[Match]) -> dict[tuple[str, str], float]:
    """(query, ref) → the best score of its matches, never below 0: the challenge's `from_matches`
    (with negative scores, a raw maximum would rank pairs the official code ties at 0)."""
    out: dict[tuple[str, str], float] = {}
    for m in matches:
        out[m.pair] = max(m.score, out.get(m.pair, MATCH_PAIR_SCORE_FLOOR))
    return out


def pairwise_ap(gt_pairs: Iterable[tuple[str, str]], predictions: Mapping[tuple[str, str], float]) -> APResult:
    """µAP of ranked pairs, the official `average_precision`: pairs sorted by score, highest first, with
    tied pairs kept in the order `predictions` lists them (a stable sort); AP = Σ over the hits of the
    precision at the hit's rank / number of ground-truth pairs (pairs never predicted count as missed).

    Ties are not pooled (scikit-learn pools them, the challenge does not): a hit tied with a miss
    scores precision 1 when it is listed first and 1/2 when it is listed second. Matching submissions
    list their pairs in the order each pair first appears in the CSV (`pair_scores`), descriptor
    candidates in order of similarity, then query frame, then reference frame (`descriptor_candidates`),
    as the official code builds them."""
    positives = set(gt_pairs)
    if not positives or not predictions:
        return APResult(0.0)
    items = sorted(predictions.items(), key=lambda kv: kv[1], reverse=True)  # stable: ties keep their order
    scores = np.array([s for _, s in items], dtype=np.float64)
    if not np.isfinite(scores).all():
        raise VscFormatError("scores must be finite")
    correct = np.array([k in positives for k, _ in items], dtype=bool)
    precision = np.cumsum(correct) / np.arange(1, len(items) + 1)
    recall = np.cumsum(correct) / len(positives)
    return APResult(float(np.sum(precision[correct]) / len(positives)), precision[correct], recall[correct],
                    scores[correct])


def matching_metrics(gts: Sequence[Match], predictions: Sequence[Match]) -> dict[str, APResult]:
    """Both matching-track metrics: {"segment": segment µAP, "pairwise": pairwise µAP}."""
    return {"segment": segment_ap(gts, predictions),
            "pairwise": pairwise_ap(pair_scores(gts).keys(), pair_scores(predictions))}


# ---------------------------------------------------------------- descriptor track
@dataclass
class VideoFeatures:
    """Descriptors of one video: features [n, d] float32, timestamps [n, 2] (start, end seconds)."""

    video_id: str
    timestamps: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


def global_topk(queries: Sequence[VideoFeatures], refs: Sequence[VideoFeatures], k: int,
                block_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k largest inner products over all (query descriptor, ref descriptor) pairs.

    Returns (query rows, ref rows, similarities) in descending similarity, ties in (query row, ref row)
    order; among pairs tied at the k-th similarity the first in that order are kept, as the challenge's
    sorted range search keeps them. Exact: computed block-wise so memory stays ~`block_bytes` whatever
    the collection size.
    """
    q = np.concatenate([v.features for v in queries]).astype(np.float32) if queries else np.zeros((0, 1), np.float32)
    r = np.concatenate([v.features for v in refs]).astype(np.float32) if refs else np.zeros((0, 1), np.float32)
    if len(q) == 0 or len(r) == 0 or k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows = max(1, block_bytes // (4 * len(r)))
    best_s = np.zeros(0, np.float32)
    best_q = np.zeros(0, np.int64)
    best_r = np.zeros(0, np.int64)

    def first_k(s: np.ndarray, qi: np.ndarray, ri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(s) > k:   # only the part at or above the k-th value needs the full (score, query, ref) order
            keep = np.flatnonzero(s >= s[np.argpartition(-s, k - 1)[k - 1]])
            s, qi, ri = s[keep], qi[keep], ri[keep]
        order = np.lexsort((ri, qi, -s))[:k]
        return s[order], qi[order], ri[order]

    for start in range(0, len(q), rows):
        flat = (q[start:start + rows] @ r.T).reshape(-1)
        if k < len(flat):   # everything at or above the k-th value: ties at the cut stay candidates
            kth = flat[np.argpartition(-flat, k - 1)[k - 1]]
            idx = np.flatnonzero(flat >= kth)
        else:
            idx = np.arange(len(flat))
        best_s, best_q, best_r = first_k(np.concatenate([best_s, flat[idx]]),
                                         np.concatenate([best_q, start + idx // len(r)]),
                                         np.concatenate([best_r, idx % len(r)]))
    return best_q, best_r, best_s


def descriptor_candidates(queries: Sequence[VideoFeatures], refs: Sequence[VideoFeatures],
                          retrieval_per_query: int = RETRIEVAL_CANDIDATES_PER_QUERY,
                          pairs_per_query: int = AGGREGATED_CANDIDATES_PER_QUERY) -> dict[tuple[str, str], float]:
    """The challenge's descriptor-track candidates: global k-NN, max score per pair, top pairs kept."""
    qi, ri, s = global_topk(queries, refs, retrieval_per_query * len(queries))
    q_owner = np.concatenate([[i] * len(v) for i, v in enumerate(queries)]).astype(np.int64) if queries else np.zeros(0, np.int64)
    r_owner = np.concatenate([[i] * len(v) for i, v in enumerate(refs)]).astype(np.int64) if refs else np.zeros(0, np.int64)
    best: dict[tuple[str, str], float] = {}
    for a, b, sim in zip(q_owner[qi], r_owner[ri], s):
        key = (queries[a].video_id, refs[b].video_id)
        if sim > best.get(key, -math.inf):
            best[key] = float(sim)
    ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)[:pairs_per_query * len(queries)]
    return dict(ranked)


def descriptor_ap(gts: Sequence[Match], queries: Sequence[VideoFeatures], refs: Sequence[VideoFeatures]) -> APResult:
    """Descriptor-track µAP of query/ref descriptors against matching ground truth."""
    return pairwise_ap(pair_scores(gts).keys(), descriptor_candidates(queries, refs))


# ---------------------------------------------------------------- plots
def plot_pr_curves(curves: Mapping[str, APResult], path: str | Path, title: str) -> None:
    """Precision-recall curves (one line per labelled result) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, res in curves.items():
        ax.plot(np.r_[0.0, res.recalls], np.r_[res.precisions[:1] if len(res.precisions) else [0.0], res.precisions],
                drawstyle="steps-pre", label=f"{label} (µAP {res.ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
