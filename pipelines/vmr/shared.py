"""Helpers that several vmr stages run (a change here re-runs each of them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avmatch.vmr.features import FeatureTable
from pipelines.vmr.paths import VmrPaths


def split_pairs(paths: VmrPaths, split: str) -> pd.DataFrame:
    """The corpus pairs of `split` whose video and music both have features (bad files drop out)."""
    pairs = pd.read_csv(paths.pairs, dtype={"video_id": str, "music_id": str})
    pairs = pairs[pairs["split"] == split]
    v, m = FeatureTable.load(paths.features("video", split)), FeatureTable.load(paths.features("music", split))
    return pairs[pairs["video_id"].isin(set(v.ids)) & pairs["music_id"].isin(set(m.ids))].reset_index(drop=True)


def used_families(params) -> tuple[list[str], list[str]]:
    from avmatch.vmr.params import MUSIC_FAMILIES, VIDEO_FAMILIES

    fp = params.vmr.features
    return ([f for f in VIDEO_FAMILIES if f not in fp.drop_video], [f for f in MUSIC_FAMILIES if f not in fp.drop_music])


def aligned_pairs(paths: VmrPaths, split: str, families: tuple[list[str], list[str]]
                  ) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    """(pairs, video matrices, music matrices), row i of each list the pair in row i."""
    pairs = split_pairs(paths, split)
    v, m = FeatureTable.load(paths.features("video", split)), FeatureTable.load(paths.features("music", split))
    vi, mi = {k: i for i, k in enumerate(v.ids)}, {k: i for i, k in enumerate(m.ids)}
    videos = [v.matrix(vi[k], families[0]) for k in pairs["video_id"]]
    music = [m.matrix(mi[k], families[1]) for k in pairs["music_id"]]
    return pairs, videos, music
