"""A small synthetic voice–face cohort for the list and metric tests: identity tables, tracks and embeddings
with an identity signal (so the metrics are neither chance nor perfect)."""

from __future__ import annotations

import numpy as np
import pandas as pd

NATIONS = ("UK", "USA", "India", "Canada", "Ireland")


def cohort(n_per_split: dict[str, int] | None = None, tracks_per_identity: int = 4,
           seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_per_split = n_per_split or {"train": 20, "valid": 8, "test": 16}
    ids, tracks = [], []
    for split, n in n_per_split.items():
        for k in range(n):
            name = f"{split}_{k:03d}"
            ids.append((name, "mf"[k % 2], NATIONS[int(rng.integers(len(NATIONS)))], split))
            for t in range(tracks_per_identity):
                video = f"vid{t // 2}"
                tracks.append((f"{name}/{video}/{t:05d}.wav", "voice", name, video, "", False))
                tracks.append((f"{name}/1.6/{video}/{t}", "face", name, video, "", t == 3))
    identities = pd.DataFrame(ids, columns=["identity", "gender", "nationality", "split"])
    tr = pd.DataFrame(tracks, columns=["track", "modality", "identity", "video", "path", "noisy"])
    return identities, tr


def embeddings(tracks: pd.DataFrame, dim: int = 16, noise: float = 1.5, seed: int = 1,
               dtype=np.float32) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centre = {i: rng.normal(size=dim) for i in sorted(tracks["identity"].unique())}
    voice, face = {}, {}
    for r in tracks.itertuples():
        vec = (centre[r.identity] + noise * rng.normal(size=dim)).astype(dtype)
        (voice if r.modality == "voice" else face)[r.track] = vec
    return voice, face
