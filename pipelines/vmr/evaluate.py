"""The vmr pipeline's `evaluate` stage (dvc.yaml: vmr_evaluate)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.vmr.paths import VmrPaths
from pipelines.vmr.shared import aligned_pairs, split_pairs


def _trained_scores(paths: VmrPaths) -> tuple[np.ndarray, list[str], list[str]]:
    """Video x music scores of the test pairs: every window of each video searched in the FAISS index of
    the music windows, a pair scored by its best pair of windows (as `avmatch vmr suggest` ranks tracks)."""
    from avmatch.core.index import SegmentIndex
    from avmatch.vmr.model import best_window_scores

    with np.load(paths.embeddings("test")) as d:
        video_ids, music_ids = [str(x) for x in d["video_ids"]], [str(x) for x in d["music_ids"]]
        vw, v_item = d["video_windows"], d["video_window_item"]
    seg = SegmentIndex.load(paths.index)
    sims, rows = seg.search(vw, seg.ntotal)
    col = {mid: j for j, mid in enumerate(music_ids)}
    row_music = np.array([col[i] for i in seg.item_ids])[seg.row_item_codes]   # music item of each index row
    dense = np.full((len(vw), seg.ntotal), -np.inf)
    for i in range(len(vw)):
        ok = rows[i] >= 0
        dense[i, rows[i][ok]] = sims[i][ok]
    return best_window_scores(dense, v_item, row_music, len(video_ids), len(music_ids)), video_ids, music_ids


def reevaluate(params: Params, paths: VmrPaths, tracker: StageTracker, model_file) -> dict:
    """A given (registered) encoder on the current test pairs (scheduled runs): the trained variant's
    recalls and median ranks, flat, as the evaluate stage reports them."""
    from avmatch.vmr.metrics import evaluate_scores
    from avmatch.vmr.model import best_window_scores, embed_item_windows, load_encoder

    ep = params.vmr.evaluate
    model = load_encoder(model_file)
    _, videos, music = aligned_pairs(paths, "test", (model.video_families, model.music_families))
    vw, vi, _ = embed_item_windows(model.video, videos, model.window)
    mw, mi, _ = embed_item_windows(model.music, music, model.window)
    res = evaluate_scores(best_window_scores(vw @ mw.T, vi, mi, len(videos), len(music)), ep.ks, bootstrap=0)
    out = {f"{d}_{k}".replace("@", "_at_"): val for d in ("v2m", "m2v") for k, val in res[d].items() if k != "ci"}
    tracker.log_dict(out, "reevaluate_metrics.json")
    return out


def evaluate(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """R@1/5/10/25/50 and median rank both ways on the test pool, with bootstrap intervals, for the trained
    encoder, the training-free rhythm peer and a random ranking."""
    from avmatch.vmr.features import FeatureTable
    from avmatch.vmr.metrics import evaluate_scores, peer_scores, random_scores

    ep = params.vmr.evaluate
    scores, video_ids, music_ids = _trained_scores(paths)
    pairs = split_pairs(paths, "test")
    if list(pairs["video_id"]) != video_ids:
        raise RuntimeError("test embeddings do not match the test pairs: run the extract stage again")
    vt, mt = FeatureTable.load(paths.features("video", "test")), FeatureTable.load(paths.features("music", "test"))
    vi, mi = {k: i for i, k in enumerate(vt.ids)}, {k: i for i, k in enumerate(mt.ids)}
    vfam = [{f: vt.families[f][vi[k]] for f in vt.families} for k in video_ids]
    mfam = [{f: mt.families[f][mi[k]] for f in mt.families} for k in music_ids]
    n = len(video_ids)
    variants = {"trained": scores, "peer": peer_scores(vfam, mfam), "random": random_scores(n, ep.seed)}
    full = {name: evaluate_scores(s, ep.ks, ep.bootstrap, ep.seed) for name, s in variants.items()}
    metrics: dict = {"pool_size": n}
    for name, res in full.items():
        metrics[name] = {d: {k: v for k, v in res[d].items() if k != "ci"} for d in ("v2m", "m2v")}
    write_json(paths.metrics / "vmr.json", metrics)
    write_json(paths.metrics / "vmr_compare.json", {"pool_size": n, **full})
    rows = [{"variant": name, "direction": d, "k": k, "recall": full[name][d][f"R@{k}"]}
            for name in full for d in ("v2m", "m2v") for k in ep.ks]
    write_csv(paths.plots / "recall_at_k.csv", pd.DataFrame(rows))
    # the ranking itself, for people who want to look: top 10 music per test video
    top = np.argsort(-scores, axis=1)[:, :10]
    ranking = pd.DataFrame([{"video_id": video_ids[i], "rank": r + 1, "music_id": music_ids[j],
                             "score": float(scores[i, j]), "correct": j == i}
                            for i in range(n) for r, j in enumerate(top[i])])
    write_csv(paths.results / "ranking.csv", ranking)
    tracker.log_dict({"pool_size": n, **full}, "vmr_compare.json")
    tracker.log_artifact(paths.plots / "recall_at_k.csv", "plots")
    summary = {"pool_size": n}
    for name, res in metrics.items():
        if isinstance(res, dict):
            for d, vals in res.items():
                for k, v in vals.items():
                    key = f"{d}_{k}".replace("@", "_at_")   # MLflow metric names take no "@"
                    summary[key if name == "trained" else f"{name}_{key}"] = v
    return summary
