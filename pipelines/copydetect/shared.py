"""Helpers that several copydetect stages run (a change here re-runs each of them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.copydetect.metrics import VideoFeatures
from avmatch.core.manifest import read_manifest
from pipelines.copydetect.paths import CopydetectPaths


def set_items(paths: CopydetectPaths, name: str) -> pd.DataFrame:
    """The frames stage's rows of a set whose frames were decoded (status ok)."""
    items = read_manifest(paths.items(name))
    return items[items["status"] == "ok"].reset_index(drop=True)


def iter_set_frames(paths: CopydetectPaths, name: str):
    """(video id, frames, times) of a set, one video at a time: a stage that needs each video's frames once holds
    one video's, not the whole set's (VSC22's 8k queries at 112 px are ~18 GB)."""
    from avmatch.core.frame_cache import load_frames

    items = set_items(paths, name)
    for video_id, f in zip(items["id"].astype(str), items["frames_file"]):
        fr, ts = load_frames(f)
        yield video_id, fr, ts


def load_set_frames(paths: CopydetectPaths, name: str) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    items = set_items(paths, name)
    frames_, times = [], []
    for _, fr, ts in iter_set_frames(paths, name):
        frames_.append(fr)
        times.append(ts)
    return items, frames_, times


def stored_features(paths: CopydetectPaths, name: str) -> list[VideoFeatures]:
    from avmatch.copydetect.vsc_npz import read_vsc_npz

    return read_vsc_npz(paths.npz(name))


def noise_matrix(noise: list[VideoFeatures], dim: int) -> np.ndarray:
    return np.concatenate([n.features for n in noise]) if noise else np.zeros((0, dim), np.float32)
