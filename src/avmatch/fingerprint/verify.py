"""Training-free spectral verification of a search's winning alignment.

The learned search names a track, an offset and a drift rate; classic fingerprinters (Shazam, audfprint,
Panako) confirm such a candidate with time-consistent spectral-peak evidence. Here the query's spectral
peaks (local maxima of the log spectrogram, a fixed number per second) are mapped onto the reference at the
found alignment, and the verification score is the share of them that land within a small time/frequency
tolerance of a reference peak. Two recordings of the same timbre playing different notes put their peaks
at different frequencies, so they score low even where a learned embedding calls them alike.

Alignment: the search's offset is on the segment grid (`hop_s`), so lags of +-`max_lag_frames` around it
are tried; a query played `rate` times as fast maps its frame t to reference frame round(t * rate), and its
frequency either stays (tempo change) or is divided by `rate` (speed change, pitch moving with it): both are
tried and the best is kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from avmatch.fingerprint.params import FpVerifyParams
    from avmatch.fingerprint.search import Match

Peaks = tuple[np.ndarray, np.ndarray]   # (frames int32, bins int16), sorted by frame
BIN_BITS = 10                           # a packed peak is frame << BIN_BITS | bin (n_fft up to 2046)
LOG_FLOOR = -9.0   # log magnitude below which a bin is silence (digital zero), never a peak


@dataclass(frozen=True)
class PeakParams:
    sample_rate: int = 8000
    n_fft: int = 512
    hop: int = 256
    f_min: float = 300.0
    f_max: float = 4000.0
    peaks_per_second: int = 32
    neighbourhood_frames: int = 3   # a peak is the maximum of +-this many frames ...
    neighbourhood_bins: int = 4     # ... and +-this many bins
    tol_frames: int = 1             # a query peak is matched by a reference peak within +-tol_frames ...
    tol_bins: int = 1               # ... and +-tol_bins at its mapped position
    max_lag_frames: int = 16        # lags tried around the search's offset
    max_rate_change: float = 0.04   # speeds tried around the search's rate: +- this ...
    rate_step: float = 0.0025       # ... in steps of this (0: only the search's rate)

    @classmethod
    def from_params(cls, vp: "FpVerifyParams", sample_rate: int) -> "PeakParams":
        return cls(sample_rate=sample_rate, **vp.model_dump())

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop

    @property
    def bin_range(self) -> tuple[int, int]:
        hz = self.sample_rate / self.n_fft
        return int(np.ceil(self.f_min / hz)), int(np.floor(self.f_max / hz))


def log_spectrogram(audio: np.ndarray, p: PeakParams) -> np.ndarray:
    """(frames, n_fft // 2 + 1) log magnitude of a Hann-windowed STFT (no padding: frame k starts at k * hop)."""
    x = np.asarray(audio, np.float32)
    if len(x) < p.n_fft:
        x = np.pad(x, (0, p.n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, p.n_fft)[::p.hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(p.n_fft).astype(np.float32), axis=1))
    return np.log(spec + 1e-6).astype(np.float32)


def spectral_peaks(audio: np.ndarray, p: PeakParams) -> tuple[np.ndarray, np.ndarray]:
    """(frame, bin) of the spectral peaks of `audio`: local maxima of the log spectrogram within the
    +-neighbourhood, inside [f_min, f_max], the `peaks_per_second` strongest of each block of one second of
    frames. Sorted by frame."""
    from scipy.ndimage import maximum_filter

    spec = log_spectrogram(audio, p)
    lo, hi = p.bin_range
    band = spec[:, lo:hi + 1]
    local_max = maximum_filter(band, size=(2 * p.neighbourhood_frames + 1, 2 * p.neighbourhood_bins + 1),
                               mode="constant", cval=-np.inf)
    t, f = np.nonzero((band == local_max) & (band > LOG_FLOOR))
    if len(t) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int16)
    mag = band[t, f]
    block = (t / p.frames_per_second).astype(np.int64)
    order = np.lexsort((-mag, block))               # by block, strongest first
    t, f, block = t[order], f[order], block[order]
    first = np.r_[0, np.flatnonzero(np.diff(block)) + 1]
    rank = np.arange(len(block)) - np.repeat(first, np.diff(np.r_[first, len(block)]))
    keep = rank < p.peaks_per_second
    t, f = t[keep], f[keep] + lo
    order = np.argsort(t, kind="stable")
    return t[order].astype(np.int32), f[order].astype(np.int16)


def peak_grid(frames: np.ndarray, bins: np.ndarray, p: PeakParams, n_frames: int | None = None) -> np.ndarray:
    """A boolean (frames, bins) map of where a query peak counts as matched: every peak dilated by the tolerance."""
    n_bins = p.n_fft // 2 + 1
    n = int(n_frames if n_frames is not None else (int(frames.max()) + 1 if len(frames) else 0))
    grid = np.zeros((n + 2 * p.tol_frames + 1, n_bins), bool)
    for dt in range(-p.tol_frames, p.tol_frames + 1):
        for df in range(-p.tol_bins, p.tol_bins + 1):
            t = frames.astype(np.int64) + dt
            f = bins.astype(np.int64) + df
            ok = (t >= 0) & (t < grid.shape[0]) & (f >= 0) & (f < n_bins)
            grid[t[ok], f[ok]] = True
    return grid


def verification_score(query_frames: np.ndarray, query_bins: np.ndarray, ref_grid: np.ndarray,
                       offset_s: float, rate: float, p: PeakParams) -> float:
    """Share of the query's peaks that hit the reference's `peak_grid` at the alignment (offset_s, rate),
    the best over lags of +-max_lag_frames, speeds `rate` +- k * rate_step up to max_rate_change (the
    search's rate is on a coarse grid and kept at 1.0 unless drifting gains enough), and the two frequency
    mappings of each speed (tempo change: unchanged; speed change: divided by the speed). 0 for a query
    without peaks."""
    n = len(query_frames)
    if n == 0:
        return 0.0
    base = int(round(offset_s * p.frames_per_second))
    lags = np.arange(-p.max_lag_frames, p.max_lag_frames + 1)
    qt = query_frames.astype(np.float64)
    qf = query_bins.astype(np.float64)
    best = 0
    for r in candidate_rates(rate, p):
        t = base + lags[:, None] + np.round(qt * r).astype(np.int64)[None, :]
        for s in ((1.0,) if r == 1.0 else (1.0, 1.0 / r)):
            f = np.broadcast_to(np.round(qf * s).astype(np.int64)[None, :], t.shape)
            ok = (t >= 0) & (t < ref_grid.shape[0]) & (f >= 0) & (f < ref_grid.shape[1])
            hits = np.zeros(t.shape, bool)
            hits[ok] = ref_grid[t[ok], f[ok]]
            best = max(best, int(hits.sum(axis=1).max()))
    return best / n


def candidate_rates(rate: float, p: PeakParams) -> tuple[float, ...]:
    """The speeds the verifier tries: the search's `rate` first, then `rate` +- k * rate_step up to
    max_rate_change from 1 (never a non-positive speed)."""
    if p.rate_step <= 0 or p.max_rate_change <= 0:
        return (float(rate),)
    k = int(round(p.max_rate_change / p.rate_step))
    grid = 1.0 + p.rate_step * np.arange(-k, k + 1)
    return (float(rate),) + tuple(float(r) for r in grid if r > 0 and not np.isclose(r, rate))


def pack_peaks(peaks: Peaks) -> np.ndarray:
    """One int32 per peak (frame << BIN_BITS | bin): what a database stores per reference (4 bytes a peak)."""
    frames, bins = peaks
    if len(bins) and int(bins.max()) >= 1 << BIN_BITS:
        raise ValueError(f"bin {int(bins.max())} does not fit {BIN_BITS} bits (n_fft too large)")
    if len(frames) and int(frames.max()) >= 1 << (31 - BIN_BITS):
        raise ValueError(f"frame {int(frames.max())} does not fit {31 - BIN_BITS} bits (recording too long)")
    return (frames.astype(np.int32) << BIN_BITS) | bins.astype(np.int32)


def unpack_peaks(packed: np.ndarray) -> Peaks:
    packed = np.asarray(packed, np.int32)
    return (packed >> BIN_BITS).astype(np.int32), (packed & ((1 << BIN_BITS) - 1)).astype(np.int16)


class Verifier:
    """Scores matches against references' peaks, given as a mapping item id -> Peaks or as a loader
    (item id -> Peaks, None when the reference has none).

    A reference's dense grid takes ~2 MB for 4 minutes of audio and ~1 ms to build, so only the
    `max_grids` most recently used are kept: a long `identify` over a large database stays bounded in
    memory, and a repeated reference is not rebuilt."""

    def __init__(self, refs: Mapping[str, Peaks] | Callable[[str], Peaks | None], params: PeakParams, hop_s: float,
                 max_grids: int = 64):
        self._load = refs.get if isinstance(refs, Mapping) else refs
        self.params, self.hop_s = params, hop_s
        self.max_grids = max(1, int(max_grids))
        self._grids: OrderedDict[str, np.ndarray] = OrderedDict()

    def grid(self, item_id: str) -> np.ndarray:
        if item_id in self._grids:
            self._grids.move_to_end(item_id)
            return self._grids[item_id]
        peaks = self._load(item_id)
        if peaks is None:
            raise KeyError(f"no spectral peaks stored for the reference {item_id!r}")
        grid = self._grids[item_id] = peak_grid(peaks[0], peaks[1], self.params)
        while len(self._grids) > self.max_grids:
            self._grids.popitem(last=False)
        return grid

    def query_peaks(self, audio: np.ndarray) -> Peaks:
        return spectral_peaks(audio, self.params)

    def verify(self, match: "Match", query: Peaks) -> "Match":
        """`match` with its `verified` share (a no-candidate match is returned as it is)."""
        if match.item_id is None:
            return match
        v = verification_score(query[0], query[1], self.grid(match.item_id), match.offset_segment * self.hop_s,
                               match.rate, self.params)
        return replace(match, verified=v)
