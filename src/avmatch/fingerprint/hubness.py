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
    from avmatch.fingerprint.params import FingerprintParams

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
        self._cache: dict[int, float] = {}

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
        out = np.empty(len(rows), np.float64)
        unique, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        cached = np.array([self._cache.get(int(r), np.nan) for r in unique], np.float64)
        todo = np.flatnonzero(np.isnan(cached))
        if len(todo):
            cached[todo] = self.hub_scores(vectors[first[todo]])
            self._cache.update(zip(unique[todo].tolist(), cached[todo].tolist()))
        out[:] = cached[inverse]
        return self.weight * out


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


def embed_background(model, tracks: Sequence[np.ndarray], noises: Sequence[np.ndarray], fp: "FingerprintParams",
                     seed: int, device) -> np.ndarray | None:
    """The background fingerprints of an encoder (`fp.train.background_excerpts` excerpts of `tracks`,
    music that is not in the database), or None when none are asked for."""
    from avmatch.fingerprint.embedding import embed_many

    n = fp.train.background_excerpts
    if n == 0 or not tracks:
        return None
    clips = background_excerpts(tracks, noises, n, fp.train.background_length_s, fp.audio.sample_rate, seed,
                                fp.corpus.max_speed_change)
    return np.concatenate(embed_many(model, clips, fp.audio, device, fp.extract.batch_size)).astype(np.float32)
