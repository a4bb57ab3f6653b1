"""A small synthetic voice–face cohort for the list and metric tests: identity tables, tracks and embeddings
with an identity signal (so the metrics are neither chance nor perfect)."""

from __future__ import annotations

import pickle

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


def eft_pickles(folder, lists) -> None:
    """Write `lists` in the structure of EFT's released dataset/evals/*.pkl."""
    def dump(name, obj):
        obj["wav_set"] = set(lists.tracks("voice"))
        obj["jpg_set"] = set(lists.tracks("face"))
        with open(folder / f"{name}.pkl", "wb") as fh:
            pickle.dump(obj, fh)
    for name in lists.names():
        df = lists[name]
        if "label" in df:
            dump(name, {"list": [(v, f, np.int64(y)) for v, f, y in df.itertuples(index=False)]})
        elif name == "test_retrieval":
            dump(name, {"retrieval_lists": [np.array(g[["voice", "face", "name"]]) for _, g in df.groupby("group")]})
        elif name == "test_matching_1N":
            dump(name, {"match_list": [(list(g["voice"]), list(g["face"])) for _, g in df.groupby("item")]})
        else:
            dump(name, {"match_list": [tuple(r) for r in df.itertuples(index=False)]})
