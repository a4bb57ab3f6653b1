"""The vmr pipeline's `features` stage (dvc.yaml: vmr_features)."""

from __future__ import annotations

import time

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest
from avmatch.core.tracking import StageTracker
from pipelines.vmr.paths import SPLITS, VmrPaths


def features(params: Params, paths: VmrPaths, tracker: StageTracker) -> dict:
    """Per-second video features (colour, motion, cuts) and music features (timbre, chroma, contrast,
    rhythm) of every usable item, one npz per modality and split."""
    from avmatch.vmr.features import FeatureTable, collection_features

    vp = params.vmr
    t0 = time.perf_counter()
    videos, music = {}, {}
    for split in SPLITS:
        v, m = read_manifest(paths.frames(split)), read_manifest(paths.audio(split))
        videos[split], music[split] = v[v["status"] == "ok"], m[m["status"] == "ok"]
    v_rows, m_rows = collection_features([f for s in SPLITS for f in videos[s]["frames_file"]], vp.frames.fps,
                                         [f for s in SPLITS for f in music[s]["pcm_file"]], vp.audio.sample_rate,
                                         vp.features.hop, vp.features.workers)
    summary = {}
    for split in SPLITS:
        nv, nm = len(videos[split]), len(music[split])
        FeatureTable.from_rows(list(videos[split]["id"]), v_rows[:nv]).save(paths.features("video", split))
        FeatureTable.from_rows(list(music[split]["id"]), m_rows[:nm]).save(paths.features("music", split))
        v_rows, m_rows = v_rows[nv:], m_rows[nm:]
        summary[f"{split}_videos"], summary[f"{split}_music"] = nv, nm
    summary["feature_seconds"] = time.perf_counter() - t0
    return summary
