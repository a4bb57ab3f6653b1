"""Constant-Q magnitude (84 bins, 12 per octave from C1, 20 ms hop, pooled in time), in torch.

Versions differ in key, tempo and instrumentation but keep melody and harmony, which a log-frequency
spectrogram with one bin per semitone exposes: a transposition is a shift along the bins (what the
pitch-shift augmentation and the convolutional encoder exploit). The bins are pooled from one long
STFT (n_fft 4096 at 16 kHz: 3.9 Hz resolution, semitones apart from C2 upwards; below, neighbouring
bins share FFT bins) with
triangular weights one semitone wide in log frequency; that is a few matrix products per track, so
training, extraction and queries all use this one implementation, and the features stage caches its
output per content hash (like the PCM cache) so training never recomputes it.

Stored values are log1p(magnitude), float16, [frames, bins]; the model normalises each segment
(`normalise_segments`) as its front end.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from avmatch.versions.params import CQTParams


def bin_frequencies(p: CQTParams) -> np.ndarray:
    return p.f_min * 2.0 ** (np.arange(p.n_bins) / p.bins_per_octave)


@lru_cache(maxsize=8)
def _filterbank(sample_rate: int, n_fft: int, n_bins: int, bins_per_octave: int, f_min: float) -> torch.Tensor:
    """[n_fft//2+1, n_bins] weights: a triangle one bin wide either side in log frequency, at least
    the nearest FFT bins (linear interpolation) where the FFT is coarser than a semitone; columns sum to 1."""
    fft_f = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    centres = f_min * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    df = sample_rate / n_fft
    with np.errstate(divide="ignore"):
        octs = np.log2(np.maximum(fft_f, 1e-6)[:, None] / centres[None, :]) * bins_per_octave
    tri = np.clip(1.0 - np.abs(octs), 0, None)
    lin = np.clip(1.0 - np.abs(fft_f[:, None] - centres[None, :]) / df, 0, None)
    w = np.maximum(tri, lin)
    w /= w.sum(0, keepdims=True) + 1e-12
    return torch.from_numpy(w.astype(np.float32))


def cqt(audio: np.ndarray | torch.Tensor, sample_rate: int, p: CQTParams) -> np.ndarray:
    """log1p constant-Q magnitude of a mono waveform, [frames, n_bins] float32 at hop_s * pool seconds per frame."""
    x = torch.as_tensor(np.asarray(audio, np.float32))
    hop = int(round(p.hop_s * sample_rate))
    if len(x) < p.n_fft // 2 + 1:
        x = torch.nn.functional.pad(x, (0, p.n_fft // 2 + 1 - len(x)))
    with torch.no_grad():
        spec = torch.stft(x, p.n_fft, hop, window=torch.hann_window(p.n_fft), center=True, return_complex=True).abs()
        fb = _filterbank(sample_rate, p.n_fft, p.n_bins, p.bins_per_octave, float(p.f_min))
        c = fb.T @ spec                                   # [bins, frames]
        n = c.shape[1] // p.pool
        c = c[:, :n * p.pool].reshape(p.n_bins, n, p.pool).mean(-1) if n else c.mean(-1, keepdim=True)
        return torch.log1p(c).T.contiguous().numpy()


def frames_per_second(p: CQTParams) -> float:
    return 1.0 / (p.hop_s * p.pool)


def normalise_segments(x: torch.Tensor) -> torch.Tensor:
    """Front-end normalisation: each segment [.., bins, frames] divided by its maximum (loudness and
    instrument level do not tell versions apart)."""
    m = x.flatten(-2).amax(-1).clamp(min=1e-4)
    return x / m[..., None, None]


def segment_frames(feat: np.ndarray, seg_frames: int, hop_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """[frames, bins] -> ([n, bins, seg_frames] windows, start frames); the last window is aligned to the end
    so the tail is covered; tracks shorter than one segment give no window."""
    n = feat.shape[0]
    if n < seg_frames:
        return np.zeros((0, feat.shape[1], seg_frames), np.float32), np.zeros(0, np.int64)
    starts = list(range(0, n - seg_frames + 1, max(1, hop_frames)))
    if starts[-1] != n - seg_frames and n - seg_frames - starts[-1] >= hop_frames // 2:
        starts.append(n - seg_frames)
    win = np.stack([feat[s:s + seg_frames].T for s in starts]).astype(np.float32)
    return win, np.asarray(starts, np.int64)


def params_key(sample_rate: int, p: CQTParams) -> str:
    blob = json.dumps({"sr": sample_rate, **p.model_dump()}, sort_keys=True)
    return hashlib.md5(blob.encode()).hexdigest()[:10]


def cached_cqt(pcm_file: str | Path, content_hash: str, cache_dir: Path, sample_rate: int, p: CQTParams) -> Path:
    """CQT of a cached PCM file, stored once per (content hash, CQT parameters) as float16 .npy."""
    from avmatch.core.pcm_cache import load_pcm

    dst = Path(cache_dir) / f"{content_hash}_{params_key(sample_rate, p)}.npy"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        feat = cqt(load_pcm(pcm_file), sample_rate, p).astype(np.float16)
        tmp = dst.with_name(dst.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, feat)
        os.replace(tmp, dst)
    return dst
