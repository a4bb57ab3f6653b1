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


def test_ftm2d_is_transposition_invariant_and_tells_tunes_apart():
    from avmatch.versions.rerank import ftm2d

    rng = np.random.default_rng(1)
    tune = rng.random((200, 12)).astype(np.float32)
    other = rng.random((200, 12)).astype(np.float32)
    v = ftm2d(tune, patch=50)
    assert v.shape == (50 * 7,)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ftm2d(np.roll(tune, 5, axis=1), patch=50), v, atol=1e-5)   # any key
    # a time shift by a whole hop only changes which windows are pooled, a little
    shifted = ftm2d(np.concatenate([rng.random((12, 12)).astype(np.float32), tune]), patch=50)
    assert np.linalg.norm(shifted - v) < 0.5 * np.linalg.norm(ftm2d(other, patch=50) - v)
    assert ftm2d(tune[:10], patch=50).shape == (50 * 7,)                                     # padded to one patch
    with pytest.raises(ValueError, match=r"\[frames, 12\]"):
        ftm2d(np.zeros((100, 24)))


def test_vector_and_zscored_distances():
    from avmatch.versions.rerank import vector_distances, zscore_rows

    d = vector_distances(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]))
    assert np.isinf(np.diag(d)).all()
    assert d[0, 1] == pytest.approx(5.0) and d[1, 0] == pytest.approx(5.0) and d[0, 2] == pytest.approx(1.0)
    z = zscore_rows(d * 100)
    assert np.isinf(np.diag(z)).all()
    np.testing.assert_allclose(z[0, [1, 2]], [1.0, -1.0])


def test_fusion_weights_between_alignment_and_first_stage():
    from avmatch.versions.rerank import fuse_scores

    first = np.array([0.1, 0.2, 0.3])          # the first stage prefers 0, then 1, then 2
    align = np.array([0.9, np.inf, 0.1])       # the aligner prefers 2; 1 did not align
    for method in ("rank", "zscore"):
        assert list(np.argsort(fuse_scores(first, align, 0.0, method), kind="stable")) == [2, 0, 1]
        assert list(np.argsort(fuse_scores(first, align, 1.0, method), kind="stable")) == [0, 1, 2]
    # an equal mix of ranks: 0 (first, second) before 2 (third, first) before 1 (second, unaligned: last)
    f = fuse_scores(first, align, 0.5, "rank")
    np.testing.assert_allclose(f, [1.5, 2.5, 2.0])
    with pytest.raises(ValueError, match="rank or zscore"):
        fuse_scores(first, align, 0.5, "mean")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse_scores(first, align, 1.5)


def test_fused_reranking_keeps_what_the_first_stage_is_sure_of():
    enc = np.array([[np.inf, 0.0, 0.5, 0.6, 0.7]])      # the first stage: candidate 1 by far
    align = {1: 0.45, 2: 0.5, 3: 0.42, 4: 0.4}          # the aligner puts 1 third of the four, by a little
    alone = rerank_distances(enc, 4, lambda q, j: align[j])
    assert _ranking(alone[0]) == [4, 3, 1, 2]
    fused = rerank_distances(enc, 4, lambda q, j: align[j], weight=0.5, fusion="zscore")
    assert _ranking(fused[0])[0] == 1


def test_coarse_qmax_pools_frames_and_fills_only_query_rows():
    from avmatch.versions.rerank import coarse_qmax_distances

    seen = []

    def dist(a, b):
        seen.append((len(a), len(b)))
        return float(abs(a.mean() - b.mean()))

    chroma = [np.full((12, 12), v, np.float32) for v in (0.1, 0.2, 0.9)]
    d = coarse_qmax_distances(chroma, dist, pool=4, rows=[0, 2])
    assert set(seen) == {(3, 3)}                         # 12 frames averaged by 4
    assert np.isinf(d[1]).all() and np.isinf(d[0, 0]) and np.isinf(d[2, 2])
    assert d[0, 1] == pytest.approx(0.1) and d[2, 0] == pytest.approx(0.8)
