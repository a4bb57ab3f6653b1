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


def test_unseen_bench_cuts_tracks_as_each_encoder_was_trained(tmp_path):
    """bench_versions_unseen.py scores an encoder on the segment length / hop saved in its file, not
    params.yaml's (a 2 s encoder gets 2 s windows: 4 of a 5 s track, where params.yaml's 20 s gives 1)."""
    import importlib
    import sys
    from pathlib import Path

    import pandas as pd
    import torch

    from avmatch.core.config import load_params
    from avmatch.versions.model import VersionEncoder, load_encoder, save_encoder
    from avmatch.versions.params import VerAudioParams

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        bench = importlib.import_module("bench_versions_unseen")
    finally:
        sys.path.remove(str(root / "benchmarks"))
    params = load_params(root / "params.yaml", {"versions.model.channels": [4, 4, 4, 4], "versions.model.dim": 8})
    vp = params.versions
    assert vp.audio.segment_s == 20.0
    torch.manual_seed(0)
    enc = tmp_path / "enc.pt"
    save_encoder(VersionEncoder.from_params(vp.model, vp.cqt), enc,
                 {"model": vp.model.model_dump(), "cqt": vp.cqt.model_dump(),
                  "audio": VerAudioParams(segment_s=2.0, hop_s=1.0).model_dump()})
    model, cfg = load_encoder(enc, "cpu")
    feat = tmp_path / "t.npy"
    np.save(feat, np.random.default_rng(0).random((50, vp.cqt.n_bins)).astype(np.float16))  # 5 s at 10 fps
    items = pd.DataFrame({"id": ["t"], "cqt_file": [str(feat)]})
    own = bench.params_for_encoder(params, cfg)
    assert (own.versions.audio.segment_s, own.versions.audio.hop_s) == (2.0, 1.0)
    assert own.versions.evaluate == vp.evaluate and own.versions.model == vp.model
    meta, vecs = bench.embed_variant(model, items, own, torch.device("cpu"), "plain")
    assert len(meta) == len(vecs) == 4   # windows at 0, 1, 2, 3 s of 2 s each
    meta20, _ = bench.embed_variant(model, items, params, torch.device("cpu"), "plain")
    assert len(meta20) == 1
