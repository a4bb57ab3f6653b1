"""Helpers that several copydetect stages run (a change here re-runs each of them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.copydetect.metrics import VideoFeatures
from avmatch.core.manifest import read_manifest
from pipelines.copydetect.paths import CopydetectPaths


def load_set_frames(paths: CopydetectPaths, name: str) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    from avmatch.core.frame_cache import load_frames

    items = read_manifest(paths.items(name))
    items = items[items["status"] == "ok"].reset_index(drop=True)
    frames_, times = [], []
    for f in items["frames_file"]:
        fr, ts = load_frames(f)
        frames_.append(fr)
        times.append(ts)
    return items, frames_, times


def stored_features(paths: CopydetectPaths, name: str) -> list[VideoFeatures]:
    from avmatch.copydetect.vsc_npz import read_vsc_npz

    return read_vsc_npz(paths.npz(name))


def noise_matrix(noise: list[VideoFeatures], dim: int) -> np.ndarray:
    return np.concatenate([n.features for n in noise]) if noise else np.zeros((0, dim), np.float32)
