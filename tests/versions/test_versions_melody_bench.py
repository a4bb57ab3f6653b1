"""bench_versions_melody.py's melody n-gram vector (issue 18 feasibility): invariant to transposition and tempo by
construction, far for another melody, and the note segmentation it rests on."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("bench_versions_melody")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


TUNE = [67, 67, 69, 71, 71, 69, 67, 66, 64, 64, 66, 67, 67, 66, 66, 67, 69, 71, 72, 71, 69, 67]
OTHER = [60, 64, 62, 65, 64, 67, 65, 69, 67, 60, 62, 59, 60, 57, 59, 55, 57, 53, 55, 52, 53, 50]


def _f0(notes, note_s: float, rate: float = 100.0) -> np.ndarray:
    """Frames of a note sequence (each note held note_s, a 20 ms gap after it)."""
    frames = []
    for n in notes:
        frames += [440.0 * 2 ** ((n - 69) / 12)] * int(note_s * rate) + [0.0] * 2
    return np.asarray(frames, np.float32)


def _dist(bench, f0s, ns=(2, 3, 4)):
    """Cosine distances of the first track's vector to every other's (one shared vocabulary)."""
    m = bench.vectors([bench.ngram_counts(bench.notes_from_f0(f, 100.0, 0.08), ns) for f in f0s], "l2")
    return bench.cosine_distances(m)[0, 1:]


def test_notes_from_f0_merges_repeats_and_drops_short_runs(bench):
    f0 = _f0([60, 60, 62], 0.3)
    f0[5:7] = 440.0 * 2 ** ((90 - 69) / 12)  # a 20 ms blip inside the first note: shorter than min_note_s
    assert bench.notes_from_f0(f0, 100.0, 0.08).tolist() == [60, 62]


def test_melody_vector_is_key_and_tempo_invariant_and_another_tune_is_far(bench):
    d = _dist(bench, [_f0(TUNE, 0.4),
                      _f0([n + 5 for n in TUNE], 0.4),    # up a fourth
                      _f0([n - 3 for n in TUNE], 0.25),   # down a minor third, faster
                      _f0(TUNE, 0.8),                     # twice as slow
                      _f0(OTHER, 0.4)])                   # another tune
    assert d[:3].max() < 1e-6
    assert d[3] > 0.8


def test_intervals_are_clipped_and_corruption_lowers_precision(bench):
    c = bench.ngram_counts(np.array([40, 80, 40]), (1,))
    assert set(c) == {(1, 12), (1, -12)}
    rng = np.random.default_rng(0)
    s = bench.ngram_counts(np.asarray(TUNE * 3), (3,))
    clean = bench.ngram_precision(s, s)
    damaged = bench.ngram_precision(bench.ngram_counts(bench.corrupt(np.asarray(TUNE * 3), 0.5, rng), (3,)), s)
    assert clean == 1.0 and damaged < 0.9
