"""Renderings training never hears: soundfonts and programs kept apart, the same-instrument top-1 rate,
and rendering one job list with several soundfonts."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pydantic import ValidationError

from avmatch.core import music21_render as mr
from avmatch.core.soundfonts import SOUNDFONTS, SoundfontUnavailable, soundfont_path
from avmatch.versions import corpus
from avmatch.versions.metrics import top1_shares
from avmatch.versions.params import VerCorpusParams, VerEvaluateParams


def test_unseen_programs_are_never_training_programs():
    unseen, train = set(corpus.UNSEEN_PROGRAMS), set(corpus.TRAIN_PROGRAMS)
    assert not unseen & train
    # the named ensembles and solo instruments (training and the demo test set) use training programs only
    named = {p for progs in mr.ENSEMBLES.values() for p in progs} | set(mr.SOLO.values())
    assert named <= train | {38, 114}  # synth bass / steel drums: in the ensembles, kept out of the random pool
    assert not named & unseen
    assert len(unseen) >= 20 and len(train) >= 50


def test_random_programs_draw_from_the_pool():
    rng = np.random.default_rng(0)
    seen_mixed = seen_single = False
    for _ in range(50):
        name, progs = corpus.random_programs(4, corpus.UNSEEN_PROGRAMS, rng)
        assert set(progs) <= set(corpus.UNSEEN_PROGRAMS)
        assert name == "gm" + "-".join(map(str, progs))
        seen_single |= len(progs) == 1
        seen_mixed |= len(progs) == 4
    assert seen_single and seen_mixed


def test_corpus_params_keep_unseen_soundfonts_out_of_training():
    p = VerCorpusParams()
    assert not set(p.train_soundfonts) & set(p.unseen_soundfonts)
    assert set(p.train_soundfonts) == set(corpus.TRAIN_SOUNDFONTS)
    assert set(p.unseen_soundfonts) == set(corpus.UNSEEN_SOUNDFONTS)
    with pytest.raises(ValidationError, match="unseen means unseen"):
        VerCorpusParams(train_soundfonts=["FluidR3_GM", "TimGM6mb"], unseen_soundfonts=["TimGM6mb"])
    with pytest.raises(ValidationError, match="unknown soundfont"):
        VerCorpusParams(train_soundfonts=["NoSuchFont"])
    with pytest.raises(ValidationError, match="must include 'test'"):
        VerEvaluateParams(collections=["test_unseen"])
    with pytest.raises(SoundfontUnavailable, match="unknown soundfont"):
        soundfont_path("NoSuchFont")


def test_top1_shares_counts_the_nearest_other_track():
    # 4 tracks: 0 and 1 share an instrument; 0's nearest other track is 1, 2's is 3 (another instrument)
    dist = np.array([[0, 1, 5, 5], [1, 0, 5, 5], [5, 5, 0, 1], [5, 5, 1, 0]], float)
    inst = ["organ", "organ", "piano", "flute"]
    sh = top1_shares(dist, np.array([True, True, True, False]), inst)
    assert sh["n_queries"] == 3
    assert sh["rate"] == pytest.approx(2 / 3)
    assert sh["chance"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)


def _soundfont_or_skip(name: str):
    try:
        return soundfont_path(name)
    except SoundfontUnavailable as exc:
        if os.environ.get("CI"):
            raise  # CI must be able to fetch the soundfonts (scripts/system-packages.txt)
        pytest.skip(str(exc))


def test_render_many_renders_each_job_with_its_own_soundfont(tmp_path):
    try:
        mr.find_fluidsynth()
    except mr.RenderError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    fonts = [_soundfont_or_skip("FluidR3_GM"), _soundfont_or_skip("TimGM6mb")]
    assert set(SOUNDFONTS) >= {"FluidR3_GM", "TimGM6mb"}
    piece = mr.Piece("t", "essen", "t", [[(float(i), 1.0, 60 + (i * 5) % 12, 90) for i in range(6)]], 6.0, "s")
    jobs = [(mr.RenderSpec(name=f"t{i}", group="essen", pieces=[piece], ensemble="flute", programs=[73], bpm=120,
                           soundfont=sf), tmp_path / f"t{i}.flac") for i, sf in enumerate(fonts)]
    res = mr.render_many(jobs, workers=2, sample_rate=16000, progress=False)
    import soundfile as sf

    a, b = (sf.read(r["path"], dtype="float32")[0] for r in res)
    assert len(a) == len(b) == int(round(jobs[0][0].duration_s * 16000))
    # the same notes, other samples: the waveforms differ clearly
    assert np.abs(a - b).mean() > 0.1 * np.abs(a).mean()
