"""The corpus builder's split and clip rules, and the edit rule on a click track."""

from __future__ import annotations

import numpy as np
import pytest


def test_pieces_go_whole_to_one_split_near_the_fractions():
    from avmatch.vmr.corpus import assign_splits

    durations = {f"p{i}": float(d) for i, d in enumerate(np.random.default_rng(0).uniform(100, 300, 30))}
    split = assign_splits(durations, (0.5, 0.1, 0.4), np.random.default_rng(1))
    assert set(split) == set(durations)
    total = sum(durations.values())
    share = {s: sum(d for k, d in durations.items() if split[k] == s) / total for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.5, abs=0.08) and share["test"] == pytest.approx(0.4, abs=0.08)


def test_clips_do_not_overlap_and_quiet_ones_are_skipped():
    from avmatch.vmr.corpus import cut_clips

    sr = 1000
    y = np.concatenate([np.full(3 * sr, 0.5), np.zeros(2 * sr), np.full(2 * sr, 0.5)]).astype(np.float32)
    clips = cut_clips(y, 1.0, sr)
    assert [s for s, _ in clips] == [0.0, 1.0, 2.0, 5.0, 6.0]


def test_edit_rule_cuts_on_beats():
    from avmatch.vmr.editing import plan_shots
    from avmatch.vmr.music_features import analyse_music
    from _vmr_signals import click_track

    a = analyse_music(click_track(120.0, 10.0), 16000, 256)
    shots = plan_shots(a, [0.1, 0.5, 0.9, 0.3], np.random.default_rng(0))
    cuts = np.array([s.start_s for s in shots[1:]])
    assert len(cuts) >= 2
    assert np.abs(cuts[:, None] - a.beat_times[None]).min(1).max() < 1e-9   # every cut on a beat
    assert all(b.unit != c.unit for b, c in zip(shots, shots[1:]))         # never the same footage twice in a row
