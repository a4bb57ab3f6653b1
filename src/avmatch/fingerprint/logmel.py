"""Log-mel front end and fixed-length segmentation: the one implementation used by training AND extraction.

`LogMel` turns a batch of waveforms [B, samples] into [B, n_mels, frames] (1 s at 8 kHz with n_fft 1024,
hop 256 gives 256 x 32). Steps: Hann-windowed `torch.stft` (centered, reflect padding) -> power ->
triangular mel filterbank (HTK mel scale, each filter normalised to unit sum so a band is the mean
power of the bins it covers; filters narrower than one FFT bin -- the low bands at 256 mels / 8 kHz --
fall back to linear interpolation between the two nearest bins instead of being empty) ->
log(mel + eps).

Normalisation (fixed, not learned): per-segment max subtraction, then clipping to an 80 dB dynamic
range and scaling to [-1, 1]. Why per segment: a query's gain (playback volume, microphone, phone AGC)
is unknown, and a per-segment reference makes the features exactly gain-invariant, so the encoder
does not have to learn it; the 80 dB floor keeps digital silence / zero padding from producing
arbitrarily negative values that would dominate the first layer. A global scale would instead leak
loudness into the fingerprint.

The front end always runs in float32, also under CUDA autocast (STFT in half precision is lossy).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from avmatch.fingerprint.params import LogMelParams


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32, each row sums to 1."""
    f_max = min(float(f_max), sample_rate / 2.0)
    if f_min >= f_max:
        raise ValueError(f"mel band empty: f_min {f_min} >= f_max {f_max} (sample rate {sample_rate})")
    n_bins = n_fft // 2 + 1
    bin_hz = np.arange(n_bins) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lo, ctr, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lo) / np.maximum(ctr - lo, 1e-9)
    falling = (hi - bin_hz[None, :]) / np.maximum(hi - ctr, 1e-9)
    fb = np.clip(np.minimum(rising, falling), 0.0, None)
    step = sample_rate / n_fft
    for i in range(n_mels):
        # narrow (sub-bin) filters: interpolate the centre frequency between its two neighbouring bins
        if np.count_nonzero(fb[i]) < 2:
            pos = min(max(ctr[i, 0] / step, 0.0), n_bins - 1.0)
            k = min(int(math.floor(pos)), n_bins - 2)
            frac = pos - k
            fb[i] = 0.0
            fb[i, k] = 1.0 - frac
            fb[i, k + 1] = frac
    fb /= fb.sum(axis=1, keepdims=True)
    return fb.astype(np.float32)


class LogMel(torch.nn.Module):
    """[B, samples] (or [samples]) float waveform -> [B, n_mels, frames] normalised log-mel in [-1, 1]."""

    def __init__(self, params: LogMelParams, sample_rate: int, eps: float = 1e-8, top_db: float = 80.0):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_fft = int(params.n_fft)
        self.hop_length = int(params.hop_length)
        self.n_mels = int(params.n_mels)
        self.eps = float(eps)
        self.range = float(top_db) / 10.0 * math.log(10.0)  # top_db in natural-log power units
        fb = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, params.f_min, params.f_max)
        # derived from params, so not saved in state_dict (a model file stays valid if this code is fixed)
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            x = wav.float()
            if x.shape[-1] <= self.n_fft // 2:  # reflect padding needs more than n_fft/2 samples
                x = torch.nn.functional.pad(x, (0, self.n_fft // 2 + 1 - x.shape[-1]))
            spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)
            power = spec.real.square() + spec.imag.square()  # [B, bins, frames]
            mel = torch.matmul(self.fb, power)  # [B, n_mels, frames]
            logmel = torch.log(mel + self.eps)
            peak = logmel.amax(dim=(1, 2), keepdim=True)
            logmel = torch.clamp(logmel - peak, min=-self.range)
            return logmel * (2.0 / self.range) + 1.0


def segment_samples(sample_rate: int, segment_s: float, hop_s: float) -> tuple[int, int]:
    return int(round(segment_s * sample_rate)), max(1, int(round(hop_s * sample_rate)))


def frame_segments(audio: np.ndarray | torch.Tensor, sample_rate: int, segment_s: float = 1.0,
                   hop_s: float = 0.5) -> torch.Tensor:
    """Cut mono audio into [n_seg, seg_len] float32 segments starting at k * hop_s.

    Only whole segments are returned (a tail shorter than one segment after the last start is dropped);
    audio shorter than one segment is zero-padded to exactly one segment.
    """
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio) else audio)
    x = x.float().reshape(-1)
    seg_len, hop = segment_samples(sample_rate, segment_s, hop_s)
    if x.numel() < seg_len:
        x = torch.nn.functional.pad(x, (0, seg_len - x.numel()))
    return x.unfold(0, seg_len, hop).contiguous()


def segment_starts(n_seg: int, hop_s: float) -> np.ndarray:
    """Start time in seconds of each segment returned by `frame_segments`."""
    return np.arange(n_seg, dtype=np.float64) * float(hop_s)
