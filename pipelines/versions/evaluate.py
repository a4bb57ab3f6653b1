"""The versions pipeline's `evaluate` stage (dvc.yaml: versions_evaluate)."""

from __future__ import annotations

import logging
import time

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.renderings import rendering_shares, track_attributes
from pipelines.versions.shared import (
    embed_items,
    ok_items,
    shard_key,
    write_eval_outputs,
)

log = logging.getLogger(__name__)


def evaluate(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """For each collection in `versions.evaluate.collections` (`test`: the demo test set; `test_unseen`: the
    test families rendered with soundfonts and instruments training never used): every track queries all
    others, segment queries against all segments; trained and untrained. metrics/versions.json holds the
    `test` metrics at its top level (as before) and every other collection's under its name."""
    import json

    import torch

    from avmatch.core.device import resolve_device
    from avmatch.core.shards import ShardStore
    from avmatch.versions.model import VersionEncoder
    from avmatch.versions.retrieval import Collection
    from pipelines.io import write_json
    from pipelines.versions.evaluation import (
        evaluate_collection,
        metrics_json,
        plot_data,
        plot_results,
    )

    vp, ev = params.versions, params.versions.evaluate
    store = ShardStore(paths.shards, vp.model.dim, shard_key(params, paths))
    attrs = track_attributes(paths)
    args = (ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates, ev.max_segment_queries, ev.bootstrap,
            params.common.seed)
    untrained = None
    device = resolve_device(params.common.device)
    if ev.compare_untrained:
        torch.manual_seed(params.common.seed)
        untrained = VersionEncoder.from_params(vp.model, vp.cqt).to(device).eval()
    summary: dict[str, float] = {}
    others: dict[str, dict] = {"trained": {}, "untrained": {}}
    ranks_all, pr_all = [], []
    for name in ev.collections:
        items = ok_items(paths, (name,))
        if items.empty:
            if name == "test":
                raise RuntimeError(f"no usable test tracks in {paths.items} (run the features stage)")
            log.warning("collection %s: no tracks in the corpus, not evaluated", name)
            continue
        clique_of = dict(zip(items["id"], items["label"]))
        meta, vecs = store.read(dict(zip(items["id"], items["content_hash"])))
        if len(vecs) == 0:
            raise RuntimeError(f"no {name} embeddings in {paths.shards} (run the extract stage)")
        t0 = time.perf_counter()
        coll = Collection.from_rows(meta, vecs)
        res = evaluate_collection(coll, clique_of, *args)
        per_query_s = (time.perf_counter() - t0) / max(1, res["track"]["n_queries"])
        extra = {"reduction": ev.reduction, "tracks": len(items), "seconds_per_query": per_query_s,
                 **rendering_shares(res, coll.track_ids, attrs)}
        systems = [("trained", res, extra)]
        if untrained is not None:
            umeta, uvecs = embed_items(untrained, items, params, device, desc=f"untrained {name}")
            ucoll = Collection.from_rows(umeta, uvecs)
            ures = evaluate_collection(ucoll, clique_of, *args)
            systems.append(("untrained", ures, {"reduction": ev.reduction,
                                                **rendering_shares(ures, ucoll.track_ids, attrs)}))
        for label, r, ext in systems:
            prefix = "" if name == "test" else f"{name}_"
            if name == "test":  # the files and MLflow names of before
                stem = "versions" if label == "trained" else "versions_untrained"
                m = write_eval_outputs(paths, tracker, stem, r, ext, label)
                ranks_all.append(pd.read_csv(paths.plots / f"{stem}_ranks.csv"))
                pr_all.append(pd.read_csv(paths.plots / f"{stem}_pr.csv"))
            else:
                m = metrics_json(r, ext)
                others[label][name] = m
                tracker.log_metrics({f"{label}_{name}_{lvl}_{k}": v for lvl in ("track", "segment")
                                     for k, v in m[lvl].items()})
                rk, pr = plot_data(r, f"{label} ({name})")
                ranks_all.append(rk)
                pr_all.append(pr)
            key = "" if label == "trained" else "untrained_"
            summary.update({f"{key}{prefix}{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()})
            summary.update({f"{key}{prefix}{k}": v for k, v in ext.items() if k.startswith("top1_")})
        summary[f"{'' if name == 'test' else name + '_'}seconds_per_query"] = per_query_s
    if untrained is None:   # dvc.yaml declares the untrained outputs: present and empty, so DVC can record the run
        for kind in ("ranks", "pr"):
            columns = pd.read_csv(paths.plots / f"versions_{kind}.csv", nrows=0).columns
            pd.DataFrame(columns=columns).to_csv(paths.plots / f"versions_untrained_{kind}.csv", index=False)
        write_json(paths.metrics / "versions_untrained.json", {})
    # the other collections go into the same metrics files, under their names
    for label, fname in (("trained", "versions.json"), ("untrained", "versions_untrained.json")):
        if others[label]:
            f = paths.metrics / fname
            m = json.loads(f.read_text())
            m.update(others[label])
            write_json(f, m)
            tracker.log_dict(m, fname)
    png = plot_results(pd.concat(ranks_all), pd.concat(pr_all), paths.results / "versions.png")
    tracker.log_artifact(png, "plots")
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
