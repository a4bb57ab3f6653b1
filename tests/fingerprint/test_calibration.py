"""Per-length no-match thresholds: each holds the false-match rate of its length; a query is held to the
threshold of the shortest calibrated length with at least as many segments."""

from __future__ import annotations

import numpy as np
import pytest

from avmatch.fingerprint.calibration import (
    NULL_DEGRADATIONS,
    Thresholds,
    calibrate,
    null_excerpts,
    null_excerpts_from,
    segments_in,
)


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
