"""The re-ranker reorders only each query's top K and folds the CQT to the right pitch classes."""

from __future__ import annotations

import numpy as np
import pytest

from avmatch.versions.metrics import per_query
from avmatch.versions.rerank import cqt_chroma, rerank_distances


def _ranking(row: np.ndarray) -> list[int]:
    cols = np.flatnonzero(np.isfinite(row))
    return [int(c) for c in cols[np.argsort(row[cols], kind="stable")]]


def test_top_k_reordered_by_alignment_rest_keeps_encoder_order():
    enc = np.array([[np.inf, 0.1, 0.2, 0.3, 0.4, 0.5]])  # query 0: the encoder ranks 1, 2, 3, 4, 5
    align = {1: 0.9, 2: 0.5, 3: 0.1, 4: 0.0, 5: 0.0}     # the aligner prefers 4 and 5, which are beyond K=3
    calls = []

    def fn(q: int, j: int) -> float:
        calls.append((q, j))
        return align[j]

    out = rerank_distances(enc, 3, fn)
    assert _ranking(out[0]) == [3, 2, 1, 4, 5]
    assert sorted(calls) == [(0, 1), (0, 2), (0, 3)]     # only the K candidates are aligned
    assert np.isinf(out[0, 0])                           # the query itself stays excluded


def test_ties_and_unalignable_candidates_keep_the_encoder_order():
    enc = np.array([[0.3, 0.1, np.inf, 0.2]])
    out = rerank_distances(enc, 10, lambda q, j: float("inf") if j == 1 else 1.0)
    assert _ranking(out[0]) == [3, 0, 1]


def test_reranking_a_perfect_aligner_reaches_map_one_within_k():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 3)
    n = len(labels)
    enc = rng.random((n, n))
    np.fill_diagonal(enc, np.inf)
    relevant = (labels[:, None] == labels[None]) & ~np.eye(n, dtype=bool)
    out = rerank_distances(enc, n, lambda q, j: 0.0 if labels[q] == labels[j] else 1.0)
    assert per_query(out, relevant, ~np.eye(n, dtype=bool))["AP"].mean() == pytest.approx(1.0)
    before = per_query(enc, relevant, ~np.eye(n, dtype=bool))["AP"].mean()
    assert before < 0.6


def test_cqt_folds_octaves_to_pitch_classes_and_scales_frames():
    cqt = np.zeros((6, 84), np.float32)
    cqt[:, 12 * 2 + 7] = np.log1p(4.0)      # G in octave 2
    cqt[:, 12 * 5 + 7] = np.log1p(4.0)      # G in octave 5: same pitch class
    cqt[:, 12 * 3 + 0] = np.log1p(2.0)      # C
    ch = cqt_chroma(cqt, 12, pool=2)
    assert ch.shape == (3, 12)
    np.testing.assert_allclose(ch[0], np.eye(12)[7] + 0.25 * np.eye(12)[0], atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 12"):
        cqt_chroma(np.zeros((4, 30)), 10)
