import numpy as np
import pytest
import torch

from avmatch.fingerprint.logmel import (
    LogMel,
    frame_segments,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    segment_starts,
)
from avmatch.fingerprint.params import LogMelParams

SR = 8000


def test_filterbank_rows_are_normalised_and_inside_band():
    p = LogMelParams()
    fb = mel_filterbank(SR, p.n_fft, p.n_mels, p.f_min, p.f_max)
    assert fb.shape == (256, 513)
    assert np.all(fb >= 0)
    np.testing.assert_allclose(fb.sum(1), 1.0, rtol=1e-5)
    assert np.all((fb > 0).sum(1) >= 2), "no empty or one-bin filters"
    bins_hz = np.arange(513) * SR / p.n_fft
    used = bins_hz[(fb > 0).any(0)]
    assert used.min() >= p.f_min - 2 * SR / p.n_fft and used.max() <= p.f_max
    # filter centres increase monotonically
    centres = (fb * bins_hz).sum(1)
    assert np.all(np.diff(centres) > 0)


def test_mel_scale_roundtrip():
    f = np.array([0.0, 300.0, 1000.0, 4000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-6)


def test_logmel_shape_range_and_sine_peak():
    lm = LogMel(LogMelParams(), SR)
    t = np.arange(SR) / SR
    x = torch.from_numpy(np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 2500 * t)]).astype(np.float32))
    y = lm(x)
    assert y.shape == (2, 256, 32)
    assert y.dtype == torch.float32
    assert float(y.min()) >= -1.0 - 1e-6 and float(y.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(y.amax(dim=(1, 2)), torch.ones(2))
    fb = lm.fb.numpy()
    centres = (fb * (np.arange(513) * SR / 1024)).sum(1)
    for row, f0 in zip(y, (1000, 2500)):
        band = int(row.mean(1).argmax())
        assert abs(centres[band] - f0) < 40, (centres[band], f0)


def test_logmel_is_gain_invariant_and_batch_independent():
    lm = LogMel(LogMelParams(), SR)
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.standard_normal((3, SR)) * 0.1).astype(np.float32))
    y = lm(x)
    torch.testing.assert_close(lm(x * 0.05), y, atol=3e-3, rtol=0)
    torch.testing.assert_close(lm(x[1]), y[1:2], atol=1e-5, rtol=1e-5)


def test_logmel_silence_and_short_input_are_finite():
    lm = LogMel(LogMelParams(), SR)
    assert torch.isfinite(lm(torch.zeros(2, SR))).all()
    assert torch.isfinite(lm(torch.randn(1, 300))).all()  # shorter than n_fft / 2


def test_logmel_filterbank_not_in_state_dict():
    assert len(LogMel(LogMelParams(), SR).state_dict()) == 0


def test_frame_segments_slices_and_starts():
    x = np.arange(3 * SR + 1234, dtype=np.float32)
    segs = frame_segments(x, SR, 1.0, 0.5)
    assert segs.shape == (5, SR)
    for k in range(5):
        np.testing.assert_array_equal(segs[k].numpy(), x[k * 4000 : k * 4000 + SR])
    np.testing.assert_allclose(segment_starts(len(segs), 0.5), [0, 0.5, 1.0, 1.5, 2.0])
    torch.testing.assert_close(frame_segments(torch.from_numpy(x), SR, 1.0, 0.5), segs)


@pytest.mark.parametrize("n", [1, 100, SR - 1, SR])
def test_frame_segments_short_audio_padded_to_one_segment(n):
    x = np.ones(n, dtype=np.float32)
    segs = frame_segments(x, SR, 1.0, 0.5)
    assert segs.shape == (1, SR)
    assert float(segs[0, :n].sum()) == n and float(segs[0, n:].abs().sum()) == 0.0


def test_frame_segments_accepts_float64_and_2d_views():
    x = np.random.default_rng(1).standard_normal(2 * SR)
    segs = frame_segments(x, SR, 1.0, 0.5)
    assert segs.dtype == torch.float32 and segs.shape == (3, SR)
