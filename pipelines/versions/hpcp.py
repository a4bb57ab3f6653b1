"""The versions pipeline's `hpcp` stage (dvc.yaml: versions_hpcp): Essentia's HPCP of each track, once.

The baseline aligns every pair of a collection and the re-ranker a query's top K candidates, both on the
same HPCP (`versions.baseline.hpcp`). Computing it once per track here (decode at 32 kHz + hpcpgram,
~0.3 s per track) and storing it makes a re-ranked query cost only its K alignments, and a change to the
alignment or the re-ranking settings re-runs no audio decoding."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.versions.paths import VersionsPaths
from pipelines.versions.qmax_collections import hpcp_chroma, hpcp_splits
from pipelines.versions.shared import ok_items

log = logging.getLogger(__name__)


def hpcp(params: Params, paths: VersionsPaths, tracker: StageTracker) -> dict:
    """data/versions/hpcp/<content hash>.npy ([frames, 12] float32) for every decodable track of the baseline's
    and the re-ranker's collections, and index.csv (id, content_hash, frames; frames 0 = failed to decode)."""
    import shutil

    splits = hpcp_splits(params)
    items = ok_items(paths, splits)
    if paths.hpcp.exists():
        shutil.rmtree(paths.hpcp)
    paths.hpcp.mkdir(parents=True)
    t0 = time.perf_counter()
    chroma, failed = hpcp_chroma(params, items, desc="HPCP")
    seconds = time.perf_counter() - t0
    for h, c in zip(items["content_hash"], chroma):
        if len(c):
            np.save(paths.hpcp / f"{h}.npy", c.astype(np.float32))
    write_csv(paths.hpcp / "index.csv", pd.DataFrame({"id": items["id"], "content_hash": items["content_hash"],
                                                      "frames": [len(c) for c in chroma]}))
    summary = {"tracks": len(items), "failed": len(failed), "ms_per_track": 1000 * seconds / max(1, len(items)),
               "collections": list(splits)}
    write_json(paths.metrics / "versions_hpcp.json", {**summary, "failed_files": failed})
    tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    return {k: v for k, v in summary.items() if k != "collections"}
