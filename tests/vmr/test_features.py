"""Feature extractors on synthetic signals whose answer is known: a click track at a known tempo, a video
with cuts at known times, a pan with a known direction."""

from __future__ import annotations

import numpy as np
import pytest

from _vmr_signals import SR, click_track, shots_video


@pytest.mark.parametrize("bpm", [90.0, 120.0, 150.0])
def test_click_track_tempo_and_beats(bpm):
    from avmatch.vmr.music_features import analyse_music

    a = analyse_music(click_track(bpm, 12.0), SR, 256)
    assert a.tempo == pytest.approx(bpm, rel=0.04)
    period = 60.0 / bpm
    # every detected beat sits on a click: within 0.1 s (the onset envelope peaks a few frames after the
    # click starts, ~40 ms here, the same lag for every beat)
    clicks = np.arange(0.25, 12.0, period)
    lag = np.abs(a.beat_times[:, None] - clicks[None]).min(1)
    assert lag.max() < 0.1 and np.median(lag) < 0.06


def test_music_per_second_families_and_rhythm():
    from avmatch.vmr.music_features import FAMILY_SIZES, music_per_second

    fam = music_per_second(click_track(120.0, 10.0), SR, 256)
    assert {k: v.shape for k, v in fam.items()} == {k: (10, d) for k, d in FAMILY_SIZES.items()}
    rhythm = fam["rhythm"]
    assert rhythm[0, 3] * 120 == pytest.approx(120.0, rel=0.04)   # tempo column
    assert rhythm[1:9, 4].mean() == pytest.approx(2.0, abs=0.3)    # two beats per second
    assert all(np.isfinite(v).all() for v in fam.values())


def test_mode_score_major_and_minor():
    from avmatch.vmr.music_features import mode_score

    c_major = np.zeros(12)
    c_major[[0, 4, 7]] = 1.0
    a_minor = np.zeros(12)
    a_minor[[9, 0, 4]] = [1.0, 0.6, 0.6]
    assert mode_score(c_major) > 0
    assert mode_score(a_minor) < mode_score(c_major)
    assert mode_score(np.zeros(12)) == 0.0


def test_cuts_found_at_known_times():
    from avmatch.vmr.video_features import detect_cuts

    cuts = [1.0, 2.5, 4.0, 5.25]
    found = detect_cuts(shots_video(cuts, 7.0), 8)
    np.testing.assert_allclose(found, cuts, atol=1 / 8 + 1e-9)


def test_no_cut_in_a_single_moving_shot():
    from avmatch.vmr.video_features import detect_cuts

    assert len(detect_cuts(shots_video([], 5.0), 8)) == 0


def test_phase_correlation_recovers_a_pan():
    from avmatch.vmr.video_features import phase_shift

    rng = np.random.default_rng(1)
    img = rng.random((64, 64))
    moved = np.roll(np.roll(img, 3, axis=1), -2, axis=0)
    assert phase_shift(img, moved) == (3.0, -2.0)


def test_video_per_second_families():
    from avmatch.vmr.video_features import FAMILY_SIZES, video_per_second

    fam = video_per_second(shots_video([1.0, 2.5], 4.0), 8)
    assert {k: v.shape for k, v in fam.items()} == {k: (4, d) for k, d in FAMILY_SIZES.items()}
    assert fam["cuts"][:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]       # cuts per second
    assert fam["motion"][:, 0].min() > 0                             # the texture moves in every second
