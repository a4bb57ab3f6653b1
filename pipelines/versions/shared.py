"""Helpers that several versions stages run (a change here re-runs each of them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.versions.paths import VersionsPaths


def ok_items(paths: VersionsPaths, splits: tuple[str, ...]) -> pd.DataFrame:
    items = read_manifest(paths.items)
    return items[(items["status"] == "ok") & items["split"].isin(splits)].reset_index(drop=True)


def segment_sizes(params: Params) -> tuple[int, int]:
    from avmatch.versions.cqt import frames_per_second

    fps = frames_per_second(params.versions.cqt)
    return int(round(params.versions.audio.segment_s * fps)), max(1, int(round(params.versions.audio.hop_s * fps)))


def embed_items(model, items: pd.DataFrame, params: Params, device, desc: str = "embed"
                ) -> tuple[pd.DataFrame, np.ndarray]:
    """Segment embeddings of every item (rows: item_id, segment, start_s, end_s)."""
    from avmatch.core.progress import progress
    from avmatch.versions.cqt import frames_per_second, segment_frames
    from avmatch.versions.training import embed_windows

    seg, hop = segment_sizes(params)
    fps = frames_per_second(params.versions.cqt)
    metas, vecs = [], []
    for row in progress(items.itertuples(), desc=desc, total=len(items), unit="track"):
        win, starts = segment_frames(np.load(row.cqt_file).astype(np.float32), seg, hop)
        v = embed_windows(model, win, device, params.versions.extract.batch_size)
        metas.append(pd.DataFrame({"item_id": row.id, "segment": np.arange(len(v)), "start_s": starts / fps,
                                   "end_s": (starts + seg) / fps}))
        vecs.append(v)
    if not metas:
        empty = pd.DataFrame(columns=["item_id", "segment", "start_s", "end_s"])
        return empty, np.zeros((0, params.versions.model.dim), np.float32)
    return pd.concat(metas, ignore_index=True), np.concatenate(vecs)


def shard_key(params: Params, paths: VersionsPaths) -> str:
    """What the stored embeddings depend on: the encoder and how tracks are cut into segments (a changed
    hop or segment length must re-extract, not reuse shards of the old segmentation)."""
    from avmatch.core.hashing import file_hash

    a = params.versions.audio
    return f"{file_hash(paths.encoder)}-seg{a.segment_s:g}-hop{a.hop_s:g}"


def write_eval_outputs(paths: VersionsPaths, tracker: StageTracker, name: str, result: dict, extra: dict,
                        label: str) -> dict:
    from pipelines.versions.evaluation import metrics_json, plot_data

    m = metrics_json(result, extra)
    write_json(paths.metrics / f"{name}.json", m)
    ranks, pr = plot_data(result, label)
    write_csv(paths.plots / f"{name}_ranks.csv", ranks)
    write_csv(paths.plots / f"{name}_pr.csv", pr)
    tracker.log_metrics({f"{label}_{lvl}_{k}": v for lvl in ("track", "segment") for k, v in m[lvl].items()})
    tracker.log_dict(m, f"{name}.json")
    return m
