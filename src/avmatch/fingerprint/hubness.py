"""Discount reference segments that resemble all music (hubs) when scoring a match.

Some reference segments (sustained chords, drones, quiet passages, dense mixes) lie close to
fingerprints of *any* music: an excerpt of a song that is not in the database finds them among its
nearest neighbours and scores as high as a true but degraded excerpt finds its own segment. One
no-match threshold then has to choose between answering those hubs and rejecting true short queries.

The remedy of cross-domain similarity local scaling (CSLS, Conneau et al. 2018) is used here: each
reference segment r gets a hub score h(r), the mean similarity of r to its `k` nearest neighbours
in a *background* set, fingerprints of degraded excerpts of music that is not in the database (the
training music), and rescoring compares `dot(q, r) - weight * h(r)` instead of `dot(q, r)`. A segment
every tune resembles is discounted by how much every tune resembles it; a distinctive segment keeps
its score. The background travels inside the encoder file (`save_encoder(..., background=)`), so the
pipeline's evaluation and every user database discount the same way with the same numbers.

Hub scores are computed when first needed, for the reference rows a search touches, and cached per
row: a database never stores them, so adding recordings needs nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from avmatch.fingerprint.calibration import null_excerpts

if TYPE_CHECKING:
    from avmatch.fingerprint.params import FpAudioParams

# the background's excerpts are cut with this seed offset, never the null queries' own excerpts
BACKGROUND_SEED_OFFSET = 7919


class HubPenalty:
    """`weight` x h(row) for index rows, h computed against `background` and cached per row.

    One instance serves one index (rows are that index's row numbers).
    """

    def __init__(self, background: np.ndarray, k: int = 10, weight: float = 1.0):
        import faiss

        bg = np.ascontiguousarray(np.asarray(background, np.float32))
        if bg.ndim != 2 or len(bg) == 0:
            raise ValueError(f"background must be a non-empty (n, dim) matrix, got shape {bg.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = min(int(k), len(bg))
        self.weight = float(weight)
        self.dim = bg.shape[1]
        self._index = faiss.IndexFlatIP(self.dim)
        self._index.add(bg)
        self._cache = np.full(0, np.nan)   # h by index row, NaN until computed (grows with the rows seen)

    def hub_scores(self, vectors: np.ndarray) -> np.ndarray:
        """h for each row of `vectors`: its mean similarity to its k nearest background fingerprints."""
        x = np.ascontiguousarray(np.asarray(vectors, np.float32))
        if len(x) == 0:
            return np.zeros(0, np.float64)
        sims, _ = self._index.search(x, self.k)
        return sims.astype(np.float64).mean(axis=1)

    def __call__(self, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """The penalty of each of `rows` (index rows whose vectors are `vectors`, in the same order)."""
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return np.zeros(0, np.float64)
        top = int(rows.max()) + 1
        if top > len(self._cache):
            self._cache = np.r_[self._cache, np.full(max(top - len(self._cache), len(self._cache)), np.nan)]
        missing = np.isnan(self._cache[rows])
        if missing.any():
            new_rows, first = np.unique(rows[missing], return_index=True)
            self._cache[new_rows] = self.hub_scores(np.asarray(vectors)[np.flatnonzero(missing)[first]])
        return self.weight * self._cache[rows]


def penalty_for(background: np.ndarray | None, k: int, weight: float) -> HubPenalty | None:
    """The penalty a search should apply: None when disabled (weight 0) or the encoder has no background."""
    if weight <= 0 or background is None or len(background) == 0:
        return None
    return HubPenalty(background, k, weight)


def background_excerpts(tracks: Sequence[np.ndarray], noises: Sequence[np.ndarray], n_excerpts: int,
                        length_s: float, sample_rate: int, seed: int, max_speed_change: float) -> list[np.ndarray]:
    """`n_excerpts` degraded excerpts of music that is not in the database (cut like the null queries that
    calibrate the thresholds, with another seed so that none of them is also a null query)."""
    cut = null_excerpts(tracks, noises, [length_s], n_excerpts, sample_rate, seed + BACKGROUND_SEED_OFFSET,
                        max_speed_change)
    return [x for _, x in cut]


def embed_background(model, tracks: Sequence[np.ndarray], noises: Sequence[np.ndarray], *, excerpts: int,
                     length_s: float, audio: "FpAudioParams", max_speed_change: float, batch_size: int, seed: int,
                     device) -> np.ndarray | None:
    """The background fingerprints of an encoder (`excerpts` excerpts of `tracks`, music that is not in the
    database), or None when none are asked for. The settings come one by one, not as the whole params
    section, so that the train stage's dvc.yaml entry lists just the parameters it reads."""
    from avmatch.fingerprint.embedding import embed_many

    if excerpts == 0 or not tracks:
        return None
    clips = background_excerpts(tracks, noises, excerpts, length_s, audio.sample_rate, seed, max_speed_change)
    return np.concatenate(embed_many(model, clips, audio, device, batch_size)).astype(np.float32)
