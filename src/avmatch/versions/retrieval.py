"""Track and segment retrieval over a collection of per-track segment embeddings.

Exact track-to-track distances need every segment pair of every track pair; that is cheap for a
few thousand tracks and what evaluation uses. Above `faiss_above_tracks`, a FAISS search of each
query segment first recalls candidate tracks (those owning the nearest segments), and only those
are reduced exactly; the others count as infinitely far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from avmatch.versions.segment_pairs import pad_tracks, track_distances


@dataclass
class Collection:
    """Segment rows (item_id, segment, start_s, end_s) + vectors, grouped by track."""

    meta: pd.DataFrame
    vectors: np.ndarray
    track_ids: list[str]
    track_of_row: np.ndarray

    @classmethod
    def from_rows(cls, meta: pd.DataFrame, vectors: np.ndarray) -> "Collection":
        meta = meta.reset_index(drop=True)
        codes, uniques = pd.factorize(meta["item_id"], sort=True)
        return cls(meta, np.ascontiguousarray(vectors, np.float32), list(uniques), codes.astype(np.int64))

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_tracks(self.vectors, self.track_of_row, len(self.track_ids))

    def segment_starts(self) -> list[np.ndarray]:
        """Per track, the start time of each padded segment slot (in pad order)."""
        out: list[list[float]] = [[] for _ in self.track_ids]
        starts = self.meta["start_s"].to_numpy()
        for row in np.argsort(self.track_of_row, kind="stable"):
            out[self.track_of_row[row]].append(float(starts[row]))
        return [np.asarray(s) for s in out]


def candidate_tracks(coll: Collection, query_vectors: np.ndarray, n_candidates: int, per_segment: int = 64
                     ) -> np.ndarray:
    """Track indices owning the nearest segments of any query segment (FAISS inner product), best first."""
    import faiss

    index = faiss.IndexFlatIP(coll.vectors.shape[1])
    index.add(coll.vectors)
    sims, rows = index.search(np.ascontiguousarray(query_vectors, np.float32), min(per_segment, index.ntotal))
    best: dict[int, float] = {}
    for s, r in zip(sims.ravel(), rows.ravel()):
        if r < 0:
            continue
        t = int(coll.track_of_row[r])
        best[t] = max(best.get(t, -1e9), float(s))
    return np.array(sorted(best, key=lambda t: -best[t])[:n_candidates], np.int64)


def track_distance_matrix(coll: Collection, reduction: str, faiss_above_tracks: int = 5000,
                          n_candidates: int = 200) -> np.ndarray:
    """[T, T] track distances (diagonal +inf: a track never retrieves itself); FAISS candidate recall
    above `faiss_above_tracks` tracks, +inf for tracks it did not recall."""
    padded, mask = coll.padded()
    n = len(coll.track_ids)
    if n <= faiss_above_tracks:
        dist, _ = track_distances(padded, mask, padded, mask, reduction)
    else:
        dist = np.full((n, n), np.inf, np.float32)
        for q in range(n):
            cand = candidate_tracks(coll, coll.vectors[coll.track_of_row == q], n_candidates + 1)
            d, _ = track_distances(padded[q:q + 1], mask[q:q + 1], padded[cand], mask[cand], reduction)
            dist[q, cand] = d[0]
    np.fill_diagonal(dist, np.inf)
    return dist


def segment_distance_matrix(coll: Collection, query_rows: np.ndarray) -> np.ndarray:
    """[Q, N] Euclidean distances from the chosen segment rows to every segment of the collection."""
    v = torch.from_numpy(coll.vectors)
    q = v[torch.from_numpy(np.asarray(query_rows, np.int64))]
    return torch.sqrt(torch.clamp(2 - 2 * q @ v.T, min=0)).numpy()
