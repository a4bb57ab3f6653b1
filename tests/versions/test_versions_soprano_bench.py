"""bench_versions_soprano_train.py (issue 18): the soprano frame targets rebuilt from a track's score, variation,
transposition and tempo, which the learned transcriber is trained on."""

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
        return importlib.import_module("bench_versions_soprano_train")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_frame_targets_of_a_known_score(bench):
    # two quarter notes (C4, E4) at 60 bpm, a third below in part 1, up 2 semitones, played twice (0.6 s gap)
    parts = [[(0.0, 1.0, 60, 80), (1.0, 1.0, 64, 80)], [(0.0, 2.0, 57, 80)]]
    ev, ok = bench.soprano_events(parts, 2.0, "none", 2, 60.0, duration_s=2.0 + 0.6 + 2.0 + 1.0)
    assert ok
    assert [(round(s, 3), round(e, 3), p) for s, e, p in ev] == [(0.0, 1.0, 62), (1.0, 2.0, 66), (2.6, 3.6, 62),
                                                                 (3.6, 4.6, 66)]
    y = bench.frame_targets(ev, 56)
    d, e, none = 62 - 24, 66 - 24, bench.NONE
    expected = [d] * 10 + [e] * 10 + [none] * 6 + [d] * 10 + [e] * 10 + [none] * 10
    assert y.tolist() == expected
    # a frame is labelled at its centre (0.1 i + 0.04 s): a note ending at 0.52 s covers frames 0-4, not 5
    ev, _ = bench.soprano_events([[(0.0, 0.52, 60, 80), (0.52, 1.0, 64, 80)]], 1.52, "none", 0, 60.0, 2.52)
    assert bench.frame_targets(ev, 8).tolist()[:7] == [36] * 5 + [40] * 2


def test_timing_that_cannot_be_rebuilt_is_refused(bench):
    parts = [[(0.0, 1.0, 60, 80), (1.0, 1.0, 64, 80)]]
    # a file far longer than 8 repetitions of the tune: the tempo or the score is not the one rendered
    assert not bench.soprano_events(parts, 2.0, "none", 0, 60.0, duration_s=100.0)[1]
    # part 0 plays one short note of a long piece: not a soprano
    parts = [[(7.0, 1.0, 72, 80)], [(0.0, 8.0, 60, 80)]]
    assert not bench.soprano_events(parts, 8.0, "none", 0, 60.0, duration_s=9.0)[1]


@pytest.mark.parametrize("kind", ["drop", "repeat", "excerpt", "voices", "none"])
def test_variation_rebuilt_from_its_description(bench, kind):
    from avmatch.core.music21_render import Piece
    from avmatch.versions.corpus import vary_piece

    rng = np.random.default_rng(3)
    parts = [[(float(i), 1.0, 60 + i % 7, 80) for i in range(40)], [(float(2 * i), 2.0, 48 + i % 5, 80)
                                                                    for i in range(20)],
             [(float(4 * i), 4.0, 40, 80) for i in range(10)]]
    piece = Piece("k", "bach", "", parts, 40.0, "")
    varied, desc = vary_piece(piece, kind, rng)
    rebuilt, length = bench.vary_parts(parts, 40.0, desc)
    assert rebuilt[0] == varied.parts[0]
    assert length == varied.length_ql
    if kind in ("drop", "repeat", "excerpt"):
        assert rebuilt[0] != parts[0]  # the description was parsed, not ignored


def test_note_precision(bench):
    y = np.array([10, 10, 10, 12, 12, bench.NONE, bench.NONE])
    pred = np.array([34, 34, 34, 35, 35, -1, 36])  # right, wrong pitch, a note in a rest
    assert bench.note_precision(pred, y) == pytest.approx(1 / 3)


def test_transcriber_shapes(bench):
    import torch

    m = bench.build_model(4)
    out = m(torch.zeros(2, bench.N_BINS, 30))
    assert out.shape == (2, bench.N_BINS + 1, 30)
