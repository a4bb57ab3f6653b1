"""Speed and tempo changes: the degradations themselves, the training positives that carry them, and the
search that follows the drift they cause."""

from __future__ import annotations

import numpy as np
import pytest

from avmatch.core.index import SegmentIndex
from avmatch.fingerprint import degrade
from avmatch.fingerprint.params import FpAugmentParams
from avmatch.fingerprint.search import drift_rates, search_query
from avmatch.fingerprint.training import rate_changed_sources

SR = 8000


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


def _tone(hz: float, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


@pytest.mark.parametrize("rate", [0.97, 1.03])
def test_speed_change_moves_the_pitch_with_the_speed(rate):
    y = degrade.change_speed(_tone(440.0, 4.0), 1000, 2 * SR, rate)
    assert len(y) == 2 * SR
    assert _peak_hz(y) == pytest.approx(440.0 * rate, abs=1.0)


@pytest.mark.parametrize("rate", [0.97, 1.03])
def test_time_stretch_keeps_the_pitch_and_changes_the_duration(rate):
    x = _tone(440.0, 3.0)
    y = degrade.time_stretch(x, rate)
    assert len(y) == round(len(x) / rate)
    assert _peak_hz(y) == pytest.approx(440.0, abs=1.0)
    # a batch gives the same rows as one at a time
    batch = degrade.time_stretch(np.stack([x, 0.5 * x]), rate)
    np.testing.assert_allclose(batch[0], y, atol=1e-5)


def test_time_stretch_moves_onsets_by_the_rate():
    """Clicks every 0.5 s come every 0.5 / rate s after a stretch (the phase vocoder smears them a little)."""
    x = np.zeros(4 * SR, np.float32)
    x[SR // 4 :: SR // 2] = 1.0
    rate = 1.05
    y = degrade.time_stretch(x, rate)
    env = np.convolve(np.abs(y), np.ones(64) / 64, mode="same")
    for k in range(1, 7):
        t = SR // 4 + k * SR // 2
        window = env[int(t / rate) - 400 : int(t / rate) + 400]
        assert abs(int(np.argmax(window)) - 400) < 160, k     # within 20 ms of the stretched onset


def test_training_positives_carry_speed_and_tempo_changes():
    rng = np.random.default_rng(0)
    tracks = [_tone(300.0 + 100 * i, 6.0) for i in range(3)]
    windows = [(i % 3, SR + 17 * i) for i in range(24)]
    ctx, seg = int(0.3 * SR), SR
    plain = rate_changed_sources(tracks, windows, seg, ctx, FpAugmentParams(speed_prob=0, stretch_prob=0), rng)
    for (ti, start), src in zip(windows, plain):
        np.testing.assert_array_equal(src, tracks[ti][start - ctx : start + seg])
    aug = FpAugmentParams(speed_prob=1.0, stretch_prob=0.0, max_speed_change=0.04)
    sped = rate_changed_sources(tracks, windows, seg, ctx, aug, np.random.default_rng(1))
    ratios = [_peak_hz(s[ctx:]) / (300.0 + 100 * ti) for (ti, _), s in zip(windows, sped)]
    assert all(len(s) == ctx + seg for s in sped)
    assert max(abs(r - 1) for r in ratios) > 0.01 and all(abs(r - 1) <= 0.045 for r in ratios)
    aug = FpAugmentParams(speed_prob=0.0, stretch_prob=1.0, max_speed_change=0.04)
    stretched = rate_changed_sources(tracks, windows, seg, ctx, aug, np.random.default_rng(1))
    assert all(_peak_hz(s[ctx:]) == pytest.approx(300.0 + 100 * ti, abs=2.0)
               for (ti, _), s in zip(windows, stretched))


def test_speed_and_stretch_probabilities_are_validated():
    with pytest.raises(ValueError, match="speed_prob \\+ stretch_prob"):
        FpAugmentParams(speed_prob=0.8, stretch_prob=0.4)


def test_drift_rates_start_at_normal_speed():
    assert drift_rates(0.0, 0.01) == (1.0,)
    assert drift_rates(0.02, 0.01) == pytest.approx((1.0, 1.01, 0.99, 1.02, 0.98))


def test_rescoring_follows_a_drifting_query():
    """A 20-segment query played 4 % fast: its segment i sits at reference segment offset + round(1.04 i).
    Exact-speed rescoring loses the second half; trying drifting alignments finds it and reports the rate."""
    rng = np.random.default_rng(3)
    dim, n_items, n_seg = 64, 12, 120
    refs = rng.standard_normal((n_items, n_seg, dim)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=-1, keepdims=True)
    ids = [f"t{i}" for i in range(n_items)]
    import pandas as pd

    rows = pd.DataFrame({"item_id": np.repeat(ids, n_seg), "segment": np.tile(np.arange(n_seg), n_items),
                         "start_s": np.tile(np.arange(n_seg) * 0.5, n_items)})
    index = SegmentIndex.build(refs.reshape(-1, dim), rows, "flat")
    offset, rate = 30, 1.04
    query = refs[5, [offset + int(round(i * rate)) for i in range(20)]]
    exact = search_query(index, query, top_k=5, max_candidates=5)
    drifting = search_query(index, query, top_k=5, max_candidates=5, rates=drift_rates(0.05, 0.01))
    assert exact.item_id == drifting.item_id == "t5" and drifting.offset_segment == offset
    assert drifting.score == pytest.approx(1.0, abs=1e-5) and exact.score < 0.8
    assert drifting.rate == pytest.approx(1.04)
    still = search_query(index, refs[5, 40:60], top_k=5, max_candidates=5, rates=drift_rates(0.05, 0.01))
    assert still.rate == 1.0 and still.score == pytest.approx(1.0, abs=1e-5)
