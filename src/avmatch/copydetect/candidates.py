"""Candidate (query, reference) pairs for copy detection: FAISS k-NN over frame descriptors with
CSLS-style score normalisation against a noise set.

Raw cosine similarities are not comparable across queries: a dark, flat or text-heavy frame is
close to many unrelated frames. Normalisation (as in the VSC22 baseline and the ISC21 winners)
subtracts from every similarity of query frame q a bias β · sim(q, its nearest noise frame), where
the noise set is footage that is certainly not in the references. A copied frame stays high; a
frame that is merely "generic" drops towards zero. β = 0 turns normalisation off.

The normalised score of (q, r) equals the inner product of the augmented descriptors
[q, -β·n(q)] and [r, 1]; `augment_for_normalisation` builds them so VSC22 descriptor submissions
(and the descriptor-track µAP) can carry the normalisation too.

The reference frames sit in an exact flat index, or, for large collections, an IVF-PQ index
(`core.index.SegmentIndex`): its inverted lists cut a 30 s query against 10^6 reference frames from
~2 s to milliseconds, and its lossy codes only pick a shortlist (`shortlist` × k per query frame)
that is re-scored with the exact vectors, so the scores handed on are exact cosines and only the
neighbour set is approximate (benchmarks/bench_copydetect_recall.py measures its recall).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from avmatch.copydetect.metrics import VideoFeatures
from avmatch.core.index import IndexKind, SegmentIndex, build_index, search_similarity


def noise_bias(vectors: np.ndarray, noise: np.ndarray, beta: float) -> np.ndarray:
    """β × the similarity of each vector to its nearest noise vector (0 when β = 0 or no noise)."""
    if beta == 0 or len(noise) == 0 or len(vectors) == 0:
        return np.zeros(len(vectors), np.float32)
    sims, _ = search_similarity(build_index(noise), vectors, 1)
    return (beta * sims[:, 0]).astype(np.float32)


def augment_for_normalisation(queries: list[VideoFeatures], refs: list[VideoFeatures], noise: np.ndarray,
                              beta: float) -> tuple[list[VideoFeatures], list[VideoFeatures]]:
    """Descriptors whose inner products are the normalised similarities (one extra dimension)."""
    q_out = [VideoFeatures(q.video_id, q.timestamps,
                           np.concatenate([q.features, -noise_bias(q.features, noise, beta)[:, None]], 1))
             for q in queries]
    r_out = [VideoFeatures(r.video_id, r.timestamps, np.concatenate([r.features, np.ones((len(r), 1), np.float32)], 1))
             for r in refs]
    return q_out, r_out


def descriptor_submission(queries: list[VideoFeatures], refs: list[VideoFeatures], noise: np.ndarray,
                          beta: float) -> tuple[list[VideoFeatures], list[VideoFeatures]]:
    """The descriptors a VSC22 descriptor-track submission carries: with normalisation on (β > 0) the
    augmented ones (one extra dimension, see `augment_for_normalisation`), else the encoder's own. The
    exports and the reported descriptor µAP both come from here, so the official evaluation of the
    exported npz gives the reported number."""
    return augment_for_normalisation(queries, refs, noise, beta) if beta else (queries, refs)


def reference_index(refs: list[VideoFeatures], kind: IndexKind = "flat", *, nlist: int = 1024, nprobe: int = 16,
                    pq_m: int = 16, train_per_list: int = 64, seed: int = 0) -> SegmentIndex:
    """FAISS index over all reference frames (rows of a video contiguous): exact inner product ("flat")
    or IVF-PQ trained on a seeded sample of `train_per_list` × `nlist` frames (k-means needs ~40 per list;
    more only costs training time)."""
    vecs = np.concatenate([r.features for r in refs]).astype(np.float32)
    rows = pd.DataFrame({"item_id": np.concatenate([[r.video_id] * len(r) for r in refs]),
                         "segment": np.concatenate([np.arange(len(r)) for r in refs]),
                         "start_s": np.concatenate([r.timestamps[:, 0] for r in refs])})
    if kind == "flat":
        return SegmentIndex.build(vecs, rows, "flat")
    n_train = min(len(vecs), train_per_list * nlist)
    train = vecs[np.sort(np.random.default_rng(seed).choice(len(vecs), n_train, replace=False))]
    return SegmentIndex.build(vecs, rows, kind, nlist=nlist, nprobe=nprobe, pq_m=pq_m, train_vectors=train)


def search_references(index: SegmentIndex, x: np.ndarray, k: int, shortlist: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Top-k reference rows of each query frame with exact cosine scores (rows -1 where fewer exist).

    A flat index is exact already; an IVF-PQ index returns `shortlist` × k rows by its lossy codes, which
    are re-scored with the stored float32 vectors and cut to the best k.
    """
    k = min(k, index.ntotal)
    if index.kind == "flat":
        return index.search(x, k)
    sims, rows = index.search(x, min(index.ntotal, k * max(1, shortlist)))
    valid = rows >= 0
    exact = np.full(rows.shape, -np.inf, np.float32)
    vecs = index.vectors_at(rows[valid])
    exact[valid] = np.einsum("ij,ij->i", np.repeat(x, rows.shape[1], axis=0)[valid.reshape(-1)], vecs)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    rows = np.take_along_axis(rows, order, 1)
    exact = np.take_along_axis(exact, order, 1)
    exact[rows < 0] = 0.0
    return exact, rows


@dataclass
class Candidates:
    """Ranked pairs (query_id, ref_id, score) and the frame hits behind them."""

    pairs: pd.DataFrame   # query_id, ref_id, score (max normalised frame similarity), descending
    hits: pd.DataFrame    # query_id, q_frame, ref_id, r_frame, score
    bias: dict[str, np.ndarray]  # per query: the normalisation bias of each frame


def find_candidates(index: SegmentIndex, queries: list[VideoFeatures], noise: np.ndarray, beta: float, k: int,
                    max_pairs_per_query: int, shortlist: int = 4) -> Candidates:
    """k nearest reference frames per query frame, normalised; pairs ranked by max frame score
    (`shortlist`: see `search_references`; unused by a flat index)."""
    item_ids = np.array(index.item_ids, dtype=object)
    hit_frames, pair_frames, biases = [], [], {}
    for q in queries:
        if len(q) == 0:
            continue
        bias = noise_bias(q.features, noise, beta)
        biases[q.video_id] = bias
        sims, rows = search_references(index, q.features.astype(np.float32), k, shortlist)
        valid = rows >= 0
        qi = np.broadcast_to(np.arange(len(q))[:, None], rows.shape)[valid]
        r = rows[valid]
        score = (sims - bias[:, None])[valid]
        hits = pd.DataFrame({"query_id": q.video_id, "q_frame": qi, "ref_id": item_ids[index.row_item_codes[r]],
                             "r_frame": index.row_segments[r], "score": score})
        pairs = hits.groupby("ref_id", sort=False)["score"].max().sort_values(ascending=False).head(max_pairs_per_query)
        keep = hits["ref_id"].isin(pairs.index)
        hit_frames.append(hits[keep])
        pair_frames.append(pd.DataFrame({"query_id": q.video_id, "ref_id": pairs.index, "score": pairs.to_numpy()}))
    pairs = (pd.concat(pair_frames, ignore_index=True) if pair_frames
             else pd.DataFrame(columns=["query_id", "ref_id", "score"]))
    hits = (pd.concat(hit_frames, ignore_index=True) if hit_frames
            else pd.DataFrame(columns=["query_id", "q_frame", "ref_id", "r_frame", "score"]))
    return Candidates(pairs.sort_values("score", ascending=False, kind="stable").reset_index(drop=True), hits, biases)
