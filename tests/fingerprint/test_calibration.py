"""Per-length no-match thresholds: each holds the false-match rate of its length; a query is held to the
threshold of the shortest calibrated length with at least as many segments."""

from __future__ import annotations

import numpy as np
import pytest

from avmatch.fingerprint.calibration import (
    NULL_DEGRADATIONS,
    Thresholds,
    calibrate,
    calibrate_decision,
    null_excerpts,
    null_excerpts_from,
    segments_in,
)
from avmatch.fingerprint.search import NO_CANDIDATE, Match


def _at(th: Thresholds, seconds: float) -> float:
    return th.for_segments(segments_in(seconds, 1.0, 0.5), 1.0, 0.5)


def test_each_length_keeps_its_false_match_rate():
    rng = np.random.default_rng(0)
    # null scores grow with length, as they do for the margin score
    null = {1.0: rng.normal(0.02, 0.01, 1000), 3.0: rng.normal(0.06, 0.02, 1000), 10.0: rng.normal(0.15, 0.04, 1000)}
    th = calibrate(null, 0.01)
    assert [v for v, _ in th.by_length] == [1.0, 3.0, 10.0]
    for v, scores in null.items():
        assert np.mean(scores >= _at(th, v)) <= 0.01
        assert np.mean(scores >= _at(th, v) - 0.01) > 0.01     # the lowest such threshold, not any higher one
    one = float(np.quantile(np.concatenate(list(null.values())), 0.99))
    assert np.mean(null[10.0] >= one) > 0.02                   # a single threshold: 3x the target on long queries
    assert _at(th, 0.5) == _at(th, 1.0) and _at(th, 20.0) == _at(th, 10.0) == th.default
    assert _at(th, 2.0) == _at(th, 3.0)                        # between lengths: the longer one's (stricter) bar


def test_lengths_are_calibrated_each_on_its_own_and_round_trip_through_json():
    # the plain similarity of unknown music falls with length: a longer query may get a lower bar
    th = calibrate({1.0: [0.9, 0.5, 0.4], 2.0: [0.6, 0.3, 0.2]}, 0.0)
    assert th.by_length[1][1] < th.by_length[0][1]
    again = Thresholds.from_json(th.to_json())
    assert again == th and set(th.to_json()["thresholds_by_length"]) == {"1s", "2s"}
    assert Thresholds.from_json({"thresholds_by_length": {"1s": 0.1, "3s": 0.2}}).default == 0.2
    assert Thresholds(0.2).for_segments(13, 1.0, 0.5) == 0.2


def _null_matches(rng: np.random.Generator, n: int, spread: float) -> list[Match]:
    """Searched matches of unknown music: similarity and runner-up correlated (a query that resembles
    its best track resembles the next one too), so margin and similarity are two different tests."""
    sim = rng.normal(0.5, 0.1 * spread, n)
    runner_up = sim - np.abs(rng.normal(0.0, 0.03 * spread, n))
    out = [Match(f"t{k % 7}", 0, float(s), 3, float(r)) for k, (s, r) in enumerate(zip(sim, runner_up))]
    return out + [NO_CANDIDATE] * 5


def test_either_answers_at_most_the_target_of_the_null_queries_at_every_length():
    rng = np.random.default_rng(3)
    null = {1.0: _null_matches(rng, 2000, 1.0), 3.0: _null_matches(rng, 2000, 0.5), 10.0: _null_matches(rng, 2000, 0.3)}
    th = calibrate_decision(null, "either", 1.0, 0.01)
    assert th.similarity is not None and [v for v, _ in th.similarity.by_length] == [1.0, 3.0, 10.0]
    for v, matches in null.items():
        n = segments_in(v, 1.0, 0.5)
        answered = [th.decide(m, "either", 1.0, n, 1.0, 0.5).matched for m in matches]
        by_margin = [m.score - m.runner_up >= th.for_segments(n, 1.0, 0.5) for m in matches if m.matched]
        by_similarity = [m.score >= th.similarity.for_segments(n, 1.0, 0.5) for m in matches if m.matched]
        assert np.mean(answered) <= 0.01
        assert 0 < np.mean(by_margin) <= 0.005 and 0 < np.mean(by_similarity) <= 0.005   # half the target each
        assert np.mean(answered) > max(np.mean(by_margin), np.mean(by_similarity)) * 0.99   # the union of both
    # the margin's thresholds are those `margin` alone calibrates at half the target
    alone = calibrate_decision(null, "margin", 1.0, 0.005)
    assert alone.by_length == th.by_length and alone.similarity is None


def test_either_reports_the_margin_and_accepts_on_either_score():
    th = Thresholds(0.1, similarity=Thresholds(0.8))
    strong_margin, strong_similarity = Match("a", 0, 0.6, 4, 0.3), Match("a", 0, 0.85, 4, 0.8)
    weak = Match("a", 0, 0.6, 4, 0.55)
    got = [th.decide(m, "either", 1.0, 3, 1.0, 0.5) for m in (strong_margin, strong_similarity, weak)]
    assert [m.matched for m in got] == [True, True, False]
    assert [round(m.score, 6) for m in got] == [0.3, 0.05, 0.05]            # the score shown is the margin
    assert not th.decide(strong_similarity, "margin", 1.0, 3, 1.0, 0.5).matched
    assert not Thresholds(0.1).decide(strong_similarity, "either", 1.0, 3, 1.0, 0.5).matched   # no similarity: margin alone


def test_both_scores_thresholds_round_trip_through_json():
    th = Thresholds(0.3, ((1.0, 0.05), (10.0, 0.3)), Thresholds(0.7, ((1.0, 0.9), (10.0, 0.7))))
    data = th.to_json()
    assert data["similarity_thresholds_by_length"] == {"1s": 0.9, "10s": 0.7}
    assert Thresholds.from_json(data) == th
    assert "or similarity by query length: 0.9000 at 1 s" in th.describe()
    old = {"threshold": 0.3, "thresholds_by_length": {"1s": 0.05, "10s": 0.3}}   # written before `either`
    assert Thresholds.from_json(old).similarity is None
    assert Thresholds.from_json(old).fits("margin") and not Thresholds.from_json(old).fits("either")
    assert Thresholds(0.3).fits("either", "--threshold") and th.fits("either")


def test_queries_without_candidates_are_never_answered():
    th = calibrate({3.0: [float("-inf")] * 99 + [0.5]}, 0.01)
    assert _at(th, 3.0) <= 0.5


def test_null_excerpts_cover_every_length_and_degradation():
    rng = np.random.default_rng(1)
    tracks = [rng.standard_normal(8000 * 20).astype(np.float32) * 0.1 for _ in range(3)]
    noises = [rng.standard_normal(8000 * 3).astype(np.float32) * 0.1]
    ex = null_excerpts(tracks, noises, [1.0, 3.0], 12, 8000, seed=5)
    assert [v for v, _ in ex] == [1.0] * 12 + [3.0] * 12
    assert all(len(x) == int(v * 8000) and np.isfinite(x).all() for v, x in ex)
    again = null_excerpts(tracks, noises, [1.0, 3.0], 12, 8000, seed=5)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ex, again))
    assert len(NULL_DEGRADATIONS) == 6
    with pytest.raises(ValueError, match="no music"):
        null_excerpts([], noises, [1.0], 2, 8000, seed=0)


def test_null_excerpts_name_their_source_track():
    """Cut from the references themselves, each excerpt says which one it came from (to be left out of its
    search); the cuts are those of `null_excerpts` for the same seed."""
    rng = np.random.default_rng(2)
    tracks = [np.full(8000 * 20, 0.1 * (k + 1), np.float32) for k in range(3)]
    cut = null_excerpts_from(tracks, [], [2.0], 30, 8000, seed=4)
    assert {k for _, _, k in cut} == {0, 1, 2}
    for (_, x, k), (_, y) in zip(cut, null_excerpts(tracks, [], [2.0], 30, 8000, seed=4)):
        assert np.array_equal(x, y)
    gain_free = [(x, k) for j, (_, x, k) in enumerate(cut) if NULL_DEGRADATIONS[j % 6] in ("clean", "noise")]
    assert all(np.allclose(x, 0.1 * (k + 1)) for x, k in gain_free)   # "noise" without noises is clean
    assert rng is not None
