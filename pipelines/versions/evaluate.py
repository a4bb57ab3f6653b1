"""The versions pipeline's `evaluate` stage (dvc.yaml: versions_evaluate)."""

from __future__ import annotations

import time

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.shared import (
    embed_items,
    ok_items,
    shard_key,
    write_eval_outputs,
)


def evaluate(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Every test track queries all others; segment queries against all segments; trained and untrained."""
    import torch

    from avmatch.core.device import resolve_device
    from avmatch.core.shards import ShardStore
    from avmatch.versions.model import VersionEncoder
    from avmatch.versions.retrieval import Collection
    from pipelines.versions.evaluation import evaluate_collection, plot_results

    vp, ev = params.versions, params.versions.evaluate
    items = ok_items(paths, ("test",))
    clique_of = dict(zip(items["id"], items["label"]))
    store = ShardStore(paths.shards, vp.model.dim, shard_key(params, paths))
    meta, vecs = store.read(dict(zip(items["id"], items["content_hash"])))
    if len(vecs) == 0:
        raise RuntimeError(f"no test embeddings in {paths.shards} (run the extract stage)")
    args = (ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates, ev.max_segment_queries, ev.bootstrap,
            params.common.seed)
    t0 = time.perf_counter()
    res = evaluate_collection(Collection.from_rows(meta, vecs), clique_of, *args)
    per_query_s = (time.perf_counter() - t0) / max(1, res["track"]["n_queries"])
    m = write_eval_outputs(paths, tracker, "versions", res, {"reduction": ev.reduction, "tracks": len(items),
                                                              "seconds_per_query": per_query_s}, "trained")
    ranks, pr = [pd.read_csv(paths.plots / f"versions_{k}.csv") for k in ("ranks", "pr")]
    summary = {f"{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()}
    if ev.compare_untrained:
        torch.manual_seed(params.common.seed)
        device = resolve_device(params.common.device)
        model = VersionEncoder.from_params(vp.model, vp.cqt).to(device).eval()
        umeta, uvecs = embed_items(model, items, params, device, desc="untrained")
        ures = evaluate_collection(Collection.from_rows(umeta, uvecs), clique_of, *args)
        um = write_eval_outputs(paths, tracker, "versions_untrained", ures, {"reduction": ev.reduction}, "untrained")
        summary.update({f"untrained_{lvl}_{k}": v for lvl in ("track", "segment") for k, v in um[lvl].items()})
        ranks = pd.concat([ranks, pd.read_csv(paths.plots / "versions_untrained_ranks.csv")])
        pr = pd.concat([pr, pd.read_csv(paths.plots / "versions_untrained_pr.csv")])
    png = plot_results(ranks, pr, paths.results / "versions.png")
    tracker.log_artifact(png, "plots")
    summary["seconds_per_query"] = per_query_s
    return summary


def reevaluate(params: Params, paths: VersionsPaths, tracker: StageTracker, model_file) -> dict:
    """A given (registered) encoder on the current test collection (scheduled runs); flat metrics."""
    from avmatch.core.device import resolve_device
    from avmatch.versions.model import load_encoder
    from avmatch.versions.retrieval import Collection
    from pipelines.versions.evaluation import evaluate_collection, metrics_json

    ev = params.versions.evaluate
    device = resolve_device(params.common.device)
    model, _ = load_encoder(model_file, device)
    items = ok_items(paths, ("test",))
    meta, vecs = embed_items(model, items, params, device, desc="reevaluate")
    res = evaluate_collection(Collection.from_rows(meta, vecs), dict(zip(items["id"], items["label"])),
                              ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates, ev.max_segment_queries,
                              0, params.common.seed)
    m = metrics_json(res)
    tracker.log_dict(m, "reevaluate_metrics.json")
    return {f"{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()}
