"""Evaluation of a version-identification system on a collection: every track queries all others
(itself excluded) and every sampled 20 s segment queries all segments of other tracks.

Relevance: another track of the same clique. Cliques with a single track in the collection (the
distractors, or a family whose other settings failed to decode) are not queries (counted, logged) but
stay in the collection as candidates.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.versions.metrics import per_query, precision_recall, summarize
from avmatch.versions.retrieval import (
    Collection,
    segment_distance_matrix,
    track_distance_matrix,
)

log = logging.getLogger(__name__)


def evaluate_track_distances(dist: np.ndarray, cliques: list[str], bootstrap: int = 1000, seed: int = 0) -> dict:
    """Track-level metrics from a [T, T] distance matrix (diagonal ignored) and each track's clique."""
    c = np.asarray(cliques, dtype=object)
    relevant = c[:, None] == c[None]
    valid = ~np.eye(len(c), dtype=bool)
    relevant &= valid
    pq = per_query(dist, relevant, valid)
    point, ci = summarize(pq, bootstrap, seed)
    single = int((relevant.sum(1) == 0).sum())
    recall, precision = precision_recall(dist, relevant, valid)
    return {"metrics": point, "ci95": ci, "n_queries": int(len(pq["AP"])), "n_single_version_tracks": single,
            "ranks": pq["R1"], "pr": (recall, precision)}


def evaluate_collection(coll: Collection, clique_of: dict[str, str], reduction: str, faiss_above_tracks: int,
                        n_candidates: int, max_segment_queries: int, bootstrap: int, seed: int) -> dict:
    """{"track": {...}, "segment": {...}} metric blocks with CIs and plot data."""
    cliques = [clique_of[t] for t in coll.track_ids]
    dist = track_distance_matrix(coll, reduction, faiss_above_tracks, n_candidates)
    track = evaluate_track_distances(dist, cliques, bootstrap, seed)
    if track["n_single_version_tracks"]:
        log.info("%d track(s) have no other version in the collection (single-version cliques): "
                 "kept as candidates, not evaluated as queries", track["n_single_version_tracks"])

    # segment level: sampled segments of tracks that have versions, against every segment of other tracks
    row_clique = np.asarray(cliques, dtype=object)[coll.track_of_row]
    clique_sizes = pd.Series(cliques).value_counts()
    has_versions = np.array([clique_sizes[c] > 1 for c in row_clique])
    rows = np.flatnonzero(has_versions)
    rng = np.random.default_rng(seed)
    if len(rows) > max_segment_queries:
        rows = np.sort(rng.choice(rows, max_segment_queries, replace=False))
    seg_dist = segment_distance_matrix(coll, rows)
    valid = coll.track_of_row[None, :] != coll.track_of_row[rows][:, None]
    relevant = (row_clique[None, :] == row_clique[rows][:, None]) & valid
    pq = per_query(seg_dist, relevant, valid)
    seg_point, seg_ci = summarize(pq, bootstrap, seed)
    recall, precision = precision_recall(seg_dist, relevant, valid)
    segment = {"metrics": seg_point, "ci95": seg_ci, "n_queries": int(len(pq["AP"])), "ranks": pq["R1"],
               "pr": (recall, precision)}
    return {"track": track, "segment": segment, "dist": dist, "cliques": cliques}


def metrics_json(result: dict, extra: dict | None = None) -> dict:
    """The DVC metrics file: {"track": {MAP, MR1, NAR}, "segment": {...}} plus CIs and counts."""
    out = {"track": result["track"]["metrics"], "segment": result["segment"]["metrics"],
           "ci95": {"track": result["track"]["ci95"], "segment": result["segment"]["ci95"]},
           "n_queries": {"track": result["track"]["n_queries"], "segment": result["segment"]["n_queries"]},
           "single_version_tracks_not_queried": result["track"].get("n_single_version_tracks", 0)}
    out.update(extra or {})
    return out


def plot_data(result: dict, label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rank distribution of the first relevant item, PR curve) as tidy tables for DVC plots."""
    ranks = []
    for level in ("track", "segment"):
        r = result[level]["ranks"]
        if len(r):
            edges = [1, 2, 3, 6, 11, 21, 51, 101, np.inf]
            counts = np.histogram(r, bins=edges)[0]
            for lo, hi, n in zip(edges[:-1], edges[1:], counts):
                ranks.append({"system": label, "level": level, "rank": f"{lo}" if hi == lo + 1 else
                              f"{lo}-{'' if hi == np.inf else int(hi) - 1}", "fraction": float(n / len(r))})
    pr = []
    for level in ("track", "segment"):
        recall, precision = result[level]["pr"]
        pr += [{"system": label, "level": level, "recall": float(a), "precision": float(b)}
               for a, b in zip(recall, precision)]
    return pd.DataFrame(ranks), pd.DataFrame(pr)


def plot_results(ranks: pd.DataFrame, pr: pd.DataFrame, path_png: Path) -> Path:
    """Rank distribution and PR curves (every system in the tables) in one PNG for MLflow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for (system, level), g in ranks.groupby(["system", "level"]):
        ax1.plot(g["rank"], g["fraction"], marker="o", label=f"{system} ({level})")
    ax1.set_xlabel("rank of the first other version")
    ax1.set_ylabel("fraction of queries")
    ax1.legend(fontsize="small")
    for (system, level), g in pr.groupby(["system", "level"]):
        ax2.plot(g["recall"], g["precision"], marker=".", label=f"{system} ({level})")
    ax2.set_xlabel("recall")
    ax2.set_ylabel("interpolated precision")
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize="small")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png)
    return path_png
