"""Helpers that several voiceface stages run (a change here re-runs each of them)."""

from __future__ import annotations

import pandas as pd

from avmatch.voiceface.training import SplitData, load_split
from pipelines.voiceface.paths import VoicefacePaths


def metadata(paths: VoicefacePaths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(identities, tracks) as the ingest stage validated them."""
    return pd.read_parquet(paths.identities), pd.read_parquet(paths.tracks)


def split_data(paths: VoicefacePaths, split: str, voice: list[str], face: list[str]) -> SplitData:
    identities, tracks = metadata(paths)
    return load_split(paths.corpus, tracks, identities, split, voice, face, expert_dir=paths.experts)


def is_simulated(paths: VoicefacePaths) -> bool:
    import json

    return json.loads(paths.ingest_summary.read_text()).get("simulated", False)
