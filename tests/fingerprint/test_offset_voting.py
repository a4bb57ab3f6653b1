"""Offset voting and rescoring on synthetic fingerprints; the no-match threshold chooser."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest

from avmatch.core.index import SegmentIndex
from avmatch.fingerprint.search import (
    NO_CANDIDATE,
    Match,
    apply_threshold,
    false_match_rate,
    search_queries,
    search_query,
    threshold_for_false_match_rate,
)

DIM = 128
N_ITEMS, N_SEGMENTS = 30, 80


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """FAISS's OpenMP threads busy-wait; on a loaded 2-core box that makes training 10-20x slower."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def refs() -> np.ndarray:
    """Reference fingerprints (item, segment, dim); neighbours in time are correlated like real ones."""
    rng = np.random.default_rng(11)
    walk = np.cumsum(rng.standard_normal((N_ITEMS, N_SEGMENTS, DIM)), axis=1)
    return unit(walk / 3.0 + rng.standard_normal((N_ITEMS, N_SEGMENTS, DIM)))


def id_rows(n_items: int, n_segments: int) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": np.repeat([f"ref{i:02d}" for i in range(n_items)], n_segments),
        "segment": np.tile(np.arange(n_segments), n_items),
        "start_s": np.tile(np.arange(n_segments) * 0.5, n_items),
    })


@pytest.fixture(scope="module")
def flat(refs: np.ndarray) -> SegmentIndex:
    return SegmentIndex.build(refs.reshape(-1, DIM), id_rows(N_ITEMS, N_SEGMENTS), "flat")


@pytest.fixture(scope="module")
def ivfpq(refs: np.ndarray) -> SegmentIndex:
    return SegmentIndex.build(refs.reshape(-1, DIM), id_rows(N_ITEMS, N_SEGMENTS), "ivfpq",
                              nlist=16, pq_m=16, pq_nbits=6, nprobe=8)


def degraded(refs: np.ndarray, item: int, offset: int, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(refs[item, offset:offset + n] + noise * rng.standard_normal((n, DIM)) / np.sqrt(DIM))


def test_planted_query_is_found_at_its_offset(flat: SegmentIndex, refs: np.ndarray) -> None:
    query = degraded(refs, item=5, offset=7, n=9, noise=1.0, seed=0)
    match = search_query(flat, query, top_k=10, max_candidates=5, rescore=True)
    assert (match.item_id, match.offset_segment) == ("ref05", 7)
    expected = float(np.mean(np.sum(query * refs[5, 7:16], axis=1)))
    assert match.score == pytest.approx(expected, abs=1e-5)
    assert match.votes >= 5


def test_exact_copy_scores_one(flat: SegmentIndex, refs: np.ndarray) -> None:
    match = search_query(flat, refs[12, 30:35], top_k=5, max_candidates=3, rescore=True)
    assert match == Match("ref12", 30, pytest.approx(1.0, abs=1e-5), 5)


def test_without_rescore_score_is_mean_voting_similarity(flat: SegmentIndex, refs: np.ndarray) -> None:
    query = degraded(refs, item=3, offset=20, n=5, noise=1.0, seed=1)
    match = search_query(flat, query, top_k=10, max_candidates=5, rescore=False)
    assert (match.item_id, match.offset_segment) == ("ref03", 20)
    sims, rows = flat.search(query, 10)
    voted = [sims[i, j] for i in range(5) for j in range(10)
             if rows[i, j] == 3 * N_SEGMENTS + 20 + i]
    assert match.votes == len(voted)
    assert match.score == pytest.approx(float(np.mean(voted)), abs=1e-5)


def test_batch_equals_one_by_one_and_uses_one_faiss_search(refs: np.ndarray) -> None:
    class CountingIndex(SegmentIndex):
        calls = 0

        def search(self, queries, k):
            CountingIndex.calls += 1
            return super().search(queries, k)

    index = CountingIndex.build(refs.reshape(-1, DIM), id_rows(N_ITEMS, N_SEGMENTS))
    rng = np.random.default_rng(2)
    truth, queries = [], []
    for j in range(40):
        item, n = int(rng.integers(N_ITEMS)), int(rng.choice([1, 3, 5, 9, 19]))
        offset = int(rng.integers(0, N_SEGMENTS - n + 1))
        truth.append((f"ref{item:02d}", offset))
        queries.append(degraded(refs, item, offset, n, noise=1.0, seed=100 + j))
    queries.append(np.empty((0, DIM), np.float32))           # an empty query is a no-match
    batch = search_queries(index, queries, top_k=10, max_candidates=5)
    assert CountingIndex.calls == 1
    singles = [search_query(index, q, top_k=10, max_candidates=5) for q in queries]
    assert batch == singles
    assert batch[-1] == NO_CANDIDATE
    assert [(m.item_id, m.offset_segment) for m in batch[:-1]] == truth


def test_ivfpq_with_rescore_finds_the_same_matches(ivfpq: SegmentIndex, refs: np.ndarray) -> None:
    queries = [degraded(refs, item=i, offset=2 * i, n=5, noise=1.0, seed=i) for i in range(N_ITEMS)]
    matches = search_queries(ivfpq, queries, top_k=20, max_candidates=10, rescore=True)
    found = [(m.item_id, m.offset_segment) for m in matches]
    assert np.mean([f == (f"ref{i:02d}", 2 * i) for i, f in enumerate(found)]) >= 0.95
    # rescored scores are exact cosines, not PQ approximations
    m = matches[4]
    assert m.score == pytest.approx(float(np.mean(np.sum(queries[4] * refs[4, 8:13], axis=1))), abs=1e-5)


def test_offsets_are_never_negative_and_track_end_counts_as_zero(refs: np.ndarray) -> None:
    # Reference: one short item of 4 segments. The query starts one segment before it
    # (segments 1..4 of the query equal reference segments 0..3), which would need offset -1.
    index = SegmentIndex.build(refs[0, :4], id_rows(1, 4))
    query = np.concatenate([refs[1, :1], refs[0, :4]])
    match = search_query(index, query, top_k=4, max_candidates=10)
    assert match.offset_segment >= 0
    # A query overhanging the end: 3 of its 4 segments exist at offset 1 -> mean counts a 0.
    overhang = np.concatenate([refs[0, 1:4], refs[2, :1]])
    m = search_query(index, overhang, top_k=1, max_candidates=10)
    assert (m.item_id, m.offset_segment) == ("ref00", 1)
    assert m.score == pytest.approx(3.0 / 4.0, abs=1e-5)


def test_out_of_database_query_scores_low(flat: SegmentIndex) -> None:
    rng = np.random.default_rng(3)
    oov = unit(rng.standard_normal((9, DIM)))
    assert search_query(flat, oov, top_k=10, max_candidates=5).score < 0.5


def test_empty_index_returns_no_candidate(refs: np.ndarray) -> None:
    empty = SegmentIndex.create(DIM)
    assert search_queries(empty, [refs[0, :3], refs[1, :2]]) == [NO_CANDIDATE, NO_CANDIDATE]


def test_apply_threshold_keeps_the_score() -> None:
    m = Match("a", 3, 0.4, 2)
    assert apply_threshold(m, 0.5) == Match(None, 3, 0.4, 2)
    assert apply_threshold(m, 0.4) is m


# ---------------------------------------------------------------- threshold chooser
IN_DB = [0.9, 0.8, 0.7, 0.6]
CORRECT = [True, True, False, True]
OOV = [0.65, 0.5]


def test_threshold_zero_target_rejects_every_false_match() -> None:
    t = threshold_for_false_match_rate(IN_DB, CORRECT, OOV, 0.0)
    assert 0.7 < t <= 0.7 + 1e-12       # just above the highest false score (the wrong answer)
    assert false_match_rate(IN_DB, CORRECT, OOV, t) == 0.0
    assert false_match_rate(IN_DB, CORRECT, OOV, 0.7) > 0.0


def test_threshold_allows_the_budgeted_false_matches() -> None:
    t = threshold_for_false_match_rate(IN_DB, CORRECT, OOV, 1 / 6)   # 1 of 6 queries may be false
    assert 0.65 < t <= 0.65 + 1e-12
    assert false_match_rate(IN_DB, CORRECT, OOV, t) == pytest.approx(1 / 6)
    t2 = threshold_for_false_match_rate(IN_DB, CORRECT, OOV, 2 / 6)
    assert 0.5 < t2 <= 0.5 + 1e-12


def test_threshold_edge_cases() -> None:
    # nothing false at all: accept everything
    assert threshold_for_false_match_rate([0.9, 0.3], [True, True], [], 0.0) == 0.3
    # a budget covering every false candidate also accepts everything
    assert threshold_for_false_match_rate(IN_DB, CORRECT, OOV, 0.5) == 0.5
    # all scores equal: any false one forces rejecting all of them
    t = threshold_for_false_match_rate([0.5, 0.5], [True, True], [0.5], 0.0)
    assert t > 0.5
    assert threshold_for_false_match_rate([], [], [], 0.05) == float("-inf")
    with pytest.raises(ValueError):
        threshold_for_false_match_rate([0.5], [True, False], [], 0.1)
    with pytest.raises(ValueError):
        threshold_for_false_match_rate([0.5], [True], [], 1.5)


def test_runner_up_and_margin_separate_known_from_unknown(flat, refs):
    from avmatch.fingerprint.search import decision_score

    rng = np.random.default_rng(5)
    known = unit(refs[3, 10:16] + 0.05 * rng.standard_normal((6, refs.shape[-1])))
    unknown = unit(rng.standard_normal((6, refs.shape[-1])))
    m_known, m_unknown = search_queries(flat, [known, unknown], top_k=10, max_candidates=5)
    assert m_known.item_id is not None and 0.0 <= m_known.runner_up < m_known.score
    margin_known = decision_score(m_known, "margin").score
    margin_unknown = decision_score(m_unknown, "margin").score
    assert margin_known > 0.5 > margin_unknown
    assert decision_score(m_known, "similarity") == m_known
    with pytest.raises(ValueError, match="margin"):
        decision_score(m_known, "ratio")


def test_excluded_item_is_searched_as_if_absent(flat: SegmentIndex, refs: np.ndarray) -> None:
    """A leave-one-out null query: an excerpt of a reference, searched with its own recording left out,
    gets an answer from another recording (or none) and the score of unknown music, not of a match."""
    query = degraded(refs, item=5, offset=7, n=5, noise=1.0, seed=3)
    both = search_queries(flat, [query, query], top_k=10, max_candidates=5, exclude=[None, "ref05"])
    assert both[0].item_id == "ref05"
    assert both[1].item_id not in (None, "ref05") and both[1].score < both[0].score - 0.2
    assert search_queries(flat, [query], top_k=10, max_candidates=5, exclude=["not-an-item"])[0] == both[0]
    with pytest.raises(ValueError, match="to exclude"):
        search_queries(flat, [query], exclude=[None, None])
