"""The versions pipeline's `baseline` stage (dvc.yaml: versions_baseline)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.qmax_collections import (
    collection_items,
    load_hpcp,
    qmax_scorer,
    write_collections,
)

log = logging.getLogger(__name__)


def baseline(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Essentia's cover-song chain (HPCP from the hpcp stage, cross-similarity, Qmax) on each collection of
    `versions.baseline.collections`: every track queries every other (track level; one alignment per ordered
    pair, the distance being asymmetric), and sampled 20 s segments query all segments of other tracks."""
    from pipelines.versions.evaluation import metrics_json, plot_data, plot_results

    bp = params.versions.baseline
    scorer = qmax_scorer(params)
    docs, plots, summary = {}, {}, {}
    for split in bp.collections:
        items = collection_items(paths, split, "versions.baseline.collections")
        if bp.max_tracks is not None and len(items) > bp.max_tracks:
            items = items.sample(bp.max_tracks, random_state=params.common.seed).sort_values("id").reset_index(drop=True)
            log.warning("baseline: collection %s capped at %d tracks (versions.baseline.max_tracks)", split,
                        bp.max_tracks)
        t0 = time.perf_counter()
        chroma, failed = load_hpcp(paths, items)   # the hpcp stage's (its metrics file has the HPCP time)
        feat_s = time.perf_counter() - t0
        keep = np.array([len(c) > 0 for c in chroma])
        if not keep.all():
            items = items[keep].reset_index(drop=True)
            chroma = [c for c, k in zip(chroma, keep) if k]
        res, query_s = _evaluate(params, scorer, items, chroma, split)
        # seconds_per_query: the all-pairs time over the queries (each pair's matrix shared by its two directions)
        extra = {"tracks": len(items), "failed_files": failed, "seconds_per_query": query_s,
                 "ms_per_pair": 2000 * query_s / max(1, len(items) - 1), "chroma_seconds": feat_s,
                 "method": "essentia hpcpgram + ChromaCrossSimilarity + CoverSongSimilarity (Qmax), "
                           "cover-song tutorial settings"}
        docs[split] = metrics_json(res, extra)
        plots[split] = plot_data(res, f"qmax {split}")
        summary.update({f"{split}_{lvl}_{k}": v for lvl in ("track", "segment") for k, v in docs[split][lvl].items()})
        summary[f"{split}_seconds_per_query"] = query_s
    write_collections(paths, tracker, "versions_baseline", docs, plots)
    ranks, pr = [pd.read_csv(paths.plots / f"versions_baseline_{k}.csv") for k in ("ranks", "pr")]
    tracker.log_artifact(plot_results(ranks, pr, paths.results / "versions_baseline.png"), "plots")
    return summary


def _evaluate(params: Params, scorer, items: pd.DataFrame, chroma: list[np.ndarray], split: str
              ) -> tuple[dict, float]:
    """Track- and segment-level metric blocks of one collection, and the seconds per track query."""
    from avmatch.core.progress import progress
    from avmatch.versions.metrics import per_query, precision_recall, summarize
    from pipelines.versions.evaluation import evaluate_track_distances

    vp, bp = params.versions, params.versions.baseline
    n = len(items)
    dist = np.full((n, n), np.inf, np.float32)
    t1 = time.perf_counter()
    # every ordered pair (the distance is asymmetric); one cross-similarity matrix serves both directions
    for i in progress(range(n), desc=f"Qmax {split}", total=n, unit="query"):
        for j in range(i + 1, n):
            dist[i, j], dist[j, i] = scorer.distances(chroma[i], chroma[j])
    query_s = (time.perf_counter() - t1) / n
    cliques = list(items["label"])
    track = evaluate_track_distances(dist, cliques, vp.evaluate.bootstrap, params.common.seed)

    # segment level: 20 s chroma windows (hop as at extraction) aligned against each other with Qmax
    fps = bp.hpcp.sample_rate / bp.hpcp.hop_size / bp.hpcp.pool
    seg, hop = int(round(vp.audio.segment_s * fps)), max(1, int(round(vp.audio.hop_s * fps)))
    segs, owner = [], []
    for ti, c in enumerate(chroma):
        for s in range(0, max(1, len(c) - seg + 1), hop):
            segs.append(c[s:s + seg])
            owner.append(ti)
    owner_a = np.asarray(owner)
    rng = np.random.default_rng(params.common.seed)
    sizes = pd.Series(cliques).value_counts()
    cand_rows = np.flatnonzero([sizes[cliques[t]] > 1 for t in owner_a])
    q_rows = np.sort(rng.choice(cand_rows, min(len(cand_rows), bp.max_segment_queries), replace=False))
    sd = np.full((len(q_rows), len(segs)), np.inf, np.float32)
    for qi, r in enumerate(progress(q_rows, desc=f"Qmax segments {split}", total=len(q_rows), unit="query")):
        for j in range(len(segs)):
            if owner_a[j] != owner_a[r]:
                sd[qi, j] = scorer.distance(segs[r], segs[j])
    c_rows = np.asarray(cliques, dtype=object)[owner_a]
    valid = owner_a[None, :] != owner_a[q_rows][:, None]
    relevant = (c_rows[None, :] == c_rows[q_rows][:, None]) & valid
    pq = per_query(sd, relevant, valid)
    sp, sci = summarize(pq, vp.evaluate.bootstrap, params.common.seed)
    segment = {"metrics": sp, "ci95": sci, "n_queries": int(len(pq["AP"])), "ranks": pq["R1"],
               "pr": precision_recall(sd, relevant, valid)}
    return {"track": track, "segment": segment}, query_s
