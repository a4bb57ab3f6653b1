"""The versions pipeline's `baseline` stage (dvc.yaml: versions_baseline)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.shared import ok_items, write_eval_outputs

log = logging.getLogger(__name__)


def baseline(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Essentia chroma cross-similarity + Qmax on the same test collection (track level; segment level
    with the same 20 s segments against each other)."""
    from avmatch.core.pcm_cache import load_pcm
    from avmatch.core.progress import progress
    from avmatch.versions.metrics import per_query, precision_recall, summarize
    from avmatch.versions.qmax_baseline import QmaxScorer, hpcp
    from pipelines.versions.evaluation import evaluate_track_distances, plot_results

    vp, bp = params.versions, params.versions.baseline
    items = ok_items(paths, ("test",))
    if len(items) > bp.max_tracks:
        items = items.sample(bp.max_tracks, random_state=params.common.seed).sort_values("id").reset_index(drop=True)
        log.warning("baseline: test collection capped at %d tracks (versions.baseline.max_tracks)", bp.max_tracks)
    sr = vp.audio.sample_rate
    t0 = time.perf_counter()
    chroma = [hpcp(load_pcm(f), sr, bp.frame_size, bp.hop_size)
              for f in progress(items["pcm_file"], desc="HPCP", total=len(items), unit="track")]
    feat_s = time.perf_counter() - t0
    scorer = QmaxScorer(bp.frame_stack)
    n = len(items)
    dist = np.full((n, n), np.inf, np.float32)
    t1 = time.perf_counter()
    # each unordered pair is aligned once (both directions share it): half the cost; a query's time is
    # reported as the time of its n-1 alignments
    for i in progress(range(n), desc="Qmax", total=n, unit="query"):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = scorer.distance(chroma[i], chroma[j])
    pairs = n * (n - 1) / 2
    query_s = (time.perf_counter() - t1) / max(1.0, pairs) * (n - 1)
    cliques = list(items["label"])
    track = evaluate_track_distances(dist, cliques, vp.evaluate.bootstrap, params.common.seed)

    # segment level: 20 s chroma windows (hop as at extraction) aligned against each other with Qmax
    fps = sr / bp.hop_size
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
    for qi, r in enumerate(progress(q_rows, desc="Qmax segments", total=len(q_rows), unit="query")):
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
    res = {"track": track, "segment": segment}
    m = write_eval_outputs(paths, tracker, "versions_baseline", res,
                            {"tracks": n, "seconds_per_query": query_s, "chroma_seconds": feat_s,
                             "method": "essentia HPCP + ChromaCrossSimilarity (OTI) + CoverSongSimilarity (Qmax)"},
                            "qmax")
    ranks, pr = [pd.read_csv(paths.plots / f"versions_baseline_{k}.csv") for k in ("ranks", "pr")]
    tracker.log_artifact(plot_results(ranks, pr, paths.results / "versions_baseline.png"), "plots")
    return {**{f"{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()},
            "seconds_per_query": query_s, "tracks": n}
