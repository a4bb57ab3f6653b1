"""The versions pipeline's `train` stage (dvc.yaml: versions_train)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.qmax_collections import training_teacher
from pipelines.versions.shared import embed_items, ok_items, segment_sizes


def _validation_map(params: Params, items: pd.DataFrame):
    def score(model, device) -> float:
        return track_map(model, device, params, items)

    return score


def track_map(model, device, params: Params, items: pd.DataFrame) -> float:
    """Track-level MAP of a model over `items` (every track queries the others; full tracks, no augmentation)."""
    from avmatch.versions.retrieval import Collection, track_distance_matrix
    from pipelines.versions.evaluation import evaluate_track_distances

    ev = params.versions.evaluate
    clique_of = dict(zip(items["id"], items["label"]))
    meta, vecs = embed_items(model, items, params, device, desc="track MAP")
    coll = Collection.from_rows(meta, vecs)
    dist = track_distance_matrix(coll, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates)
    res = evaluate_track_distances(dist, [clique_of[t] for t in coll.track_ids], bootstrap=0)
    return float(res["metrics"]["MAP"])


def _validation_id(params: Params, items: pd.DataFrame) -> str:
    """What `track_map` on `items` measures: the tracks, their content and labels, and the distance settings."""
    ev = params.versions.evaluate
    cols = [c for c in ("id", "content_hash", "label") if c in items]
    rows = sorted(map(list, items[cols].astype(str).itertuples(index=False)))
    blob = json.dumps([rows, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """Contrastive training (CLEWS loss by default) on the train split of the chosen sources; the weights
    with the best validation MAP are kept."""
    from avmatch.versions.model import save_encoder
    from avmatch.versions.training import train_version_encoder

    vp = params.versions
    tr = ok_items(paths, ("train",))
    if vp.corpus.source == "builtin":   # `sources` picks among the built corpus' materials
        tr = tr[tr["source"].isin(vp.train.sources)].reset_index(drop=True)
    # an imported dataset (SHS100K, Discogs-VI) trains on all of its train split
    if tr.empty:
        raise RuntimeError(f"no usable training tracks in the train split (corpus source {vp.corpus.source}, "
                           f"training sources {vp.train.sources}; see {paths.bad_files})")
    feats = [np.load(f) for f in tr["cqt_file"]]
    val = ok_items(paths, ("val",))
    seg, _ = segment_sizes(params)

    def on_log(metrics: dict, step: int) -> None:
        tracker.log_metrics(metrics, step=step)

    # the best-so-far weights in a checkpoint were chosen by this validation: another one must not resume it
    val_id = _validation_id(params, val)
    teacher = training_teacher(params, paths, tr) if vp.train.distill_weight > 0 else None
    result = train_version_encoder(feats, list(tr["label"]), _validation_map(params, val) if len(val) else None,
                                   vp.train, vp.model, vp.cqt, seg, params.common.seed, params.common.device, on_log,
                                   list(tr["source"]), checkpoint_dir=paths.checkpoints, val_id=val_id,
                                   teacher=teacher)
    save_encoder(result.model, paths.encoder, {"model": vp.model.model_dump(), "cqt": vp.cqt.model_dump(),
                                               "audio": vp.audio.model_dump()})
    history = pd.DataFrame(result.history)
    write_csv(paths.plots / "train_history.csv", history)
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    # what training learnt on its own material (seen cliques, clean full tracks) vs the seeded untrained encoder
    import torch

    from avmatch.core.device import resolve_device
    from avmatch.versions.model import VersionEncoder

    device = resolve_device(params.common.device)
    torch.manual_seed(params.common.seed)
    untrained = VersionEncoder.from_params(vp.model, vp.cqt).to(device).eval()
    summary_fit = {"train_map": track_map(result.model, device, params, tr),
                   "train_map_untrained": track_map(untrained, device, params, tr)}
    summary = {**summary_fit, "steps": result.steps, "max_steps": vp.train.max_steps,
               "train_seconds": result.seconds,
               "resumed_from_step": -1 if result.resumed_from_step is None else result.resumed_from_step,
               "best_step": result.best_step,
               "best_val_map": result.best_val_map, "train_tracks": len(tr),
               "train_cliques": int(tr["label"].nunique()),
               **{f"train_tracks_{s}": int((tr["source"] == s).sum()) for s in vp.train.sources}}
    write_json(paths.metrics / "versions_train.json", summary)
    return summary
