"""Per-second video features: colour, motion and cuts, the picture's side of a music video's editing.

Frames come from the frame cache (`avmatch.core.frame_cache`) at a few frames per second (cuts and motion
are invisible at 1 fps). One row per second, in families an ablation can leave out:

- `colour` mean R, G, B, luminance mean and spatial std, saturation mean and std, the luminance range
           over the second's frames (flashes), saturation-weighted hue (cos, sin), and the luminance
           profile within the second (SUBSTEPS bins, minus the second's mean: where the flashes are)
- `motion` mean absolute frame difference (mean and max over the second), global translation between
           frames by phase correlation (mean dx, mean dy, mean magnitude): the optical flow of a pan,
           without OpenCV; and the frame-difference profile within the second (SUBSTEPS bins)
- `cuts`   number of cuts in the second, the strongest histogram change, the phase (sin, cos) of the
           first cut within the second, seconds since the previous cut (shot length so far)

A cut is a frame whose 4x4x4 colour histogram differs from the previous frame's by more than
`cut_threshold` (L1 distance / 2, in [0, 1]) and by twice the median change around it (so fast motion
inside a shot is not a cut).
"""

from __future__ import annotations

import numpy as np

SUBSTEPS = 8   # sub-second profile bins per second (flashes and motion bursts fall between whole seconds)
FAMILY_SIZES = {"colour": 10 + SUBSTEPS, "motion": 5 + SUBSTEPS, "cuts": 5}
CUT_THRESHOLD = 0.35


def _luma(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.float32) / 255.0
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def histogram_changes(frames: np.ndarray) -> np.ndarray:
    """L1/2 distance of 4x4x4 colour histograms of consecutive frames; [n] with 0 for the first frame."""
    n = len(frames)
    q = (frames.reshape(n, -1, 3) // 64).astype(np.int32)
    codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    hist = np.stack([np.bincount(c, minlength=64) for c in codes]).astype(np.float32)
    hist /= hist.sum(1, keepdims=True)
    out = np.zeros(n, np.float32)
    out[1:] = 0.5 * np.abs(np.diff(hist, axis=0)).sum(1)
    return out


def cut_frames(frames: np.ndarray, threshold: float = CUT_THRESHOLD) -> np.ndarray:
    """Indices of the first frame of each new shot (see the module docstring)."""
    d = histogram_changes(frames)
    out = []
    for i in range(1, len(d)):
        around = np.concatenate([d[max(1, i - 3):i], d[i + 1:i + 4]])
        local = float(np.median(around)) if len(around) else 0.0
        if d[i] > threshold and d[i] > 2.0 * local:
            out.append(i)
    return np.asarray(out, dtype=np.int64)


def detect_cuts(frames: np.ndarray, fps: float, threshold: float = CUT_THRESHOLD) -> np.ndarray:
    """Times (s) at which a new shot starts: the start of the first sampling interval that shows it."""
    return cut_frames(frames, threshold) / float(fps)


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Global translation (dx, dy) in pixels that takes luminance image `a` to `b` (phase correlation)."""
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2(a * win), np.fft.fft2(b * win)
    r = fb * np.conj(fa)
    r /= np.abs(r) + 1e-9
    corr = np.fft.ifft2(r).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    h, w = a.shape
    dy = dy - h if dy > h // 2 else dy
    dx = dx - w if dx > w // 2 else dx
    return float(dx), float(dy)


def profile(values: np.ndarray, a: int, b: int, bins: int = SUBSTEPS) -> np.ndarray:
    """`values[a:b]` (one per frame of a second) resampled to `bins` sub-second bins (nearest frame)."""
    seg = values[a:max(b, a + 1)]
    return seg[np.minimum((np.arange(bins) * len(seg)) // bins, len(seg) - 1)]


def video_per_second(frames: np.ndarray, fps: float) -> dict[str, np.ndarray]:
    """The three families of the module docstring for uint8 frames [n, h, w, 3] sampled at `fps`."""
    n = len(frames)
    k = int(round(fps))
    seconds = int(n // fps + 1e-6)
    y = _luma(frames)
    f = frames.astype(np.float32) / 255.0
    mx, mn = f.max(-1), f.min(-1)
    sat = np.where(mx > 1e-6, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    # hue angle from the opponent colour axes, weighted by saturation
    a_ = f[..., 0] - 0.5 * (f[..., 1] + f[..., 2])
    b_ = np.sqrt(3) / 2 * (f[..., 1] - f[..., 2])
    hue = np.arctan2(b_, a_)
    hc, hs = (sat * np.cos(hue)).mean((1, 2)), (sat * np.sin(hue)).mean((1, 2))
    y_mean = y.mean((1, 2))
    diff = np.zeros(n, np.float32)
    diff[1:] = np.abs(np.diff(y, axis=0)).mean((1, 2))
    small = y[:, ::2, ::2] if y.shape[1] >= 64 else y
    shifts = np.zeros((n, 2), np.float32)
    changes = histogram_changes(frames)
    cuts = set(cut_frames(frames).tolist())
    for i in range(1, n):
        if i not in cuts:
            shifts[i] = phase_shift(small[i - 1], small[i])
    colour = np.zeros((seconds, FAMILY_SIZES["colour"]), np.float32)
    motion = np.zeros((seconds, FAMILY_SIZES["motion"]), np.float32)
    cut = np.zeros((seconds, FAMILY_SIZES["cuts"]), np.float32)
    last_cut = 0.0
    for s in range(seconds):
        a, b = int(round(s * fps)), min(n, int(round((s + 1) * fps)))
        sl = slice(a, max(b, a + 1))
        luma = y_mean[sl]
        colour[s] = [f[sl, ..., 0].mean(), f[sl, ..., 1].mean(), f[sl, ..., 2].mean(), luma.mean(),
                     y[sl].std((1, 2)).mean(), sat[sl].mean(), sat[sl].std((1, 2)).mean(),
                     np.ptp(luma), hc[sl].mean(), hs[sl].mean(), *(profile(y_mean, a, b) - luma.mean()) * 10]
        mag = np.hypot(shifts[sl, 0], shifts[sl, 1])
        motion[s] = [diff[sl].mean() * 10, diff[sl].max() * 10, shifts[sl, 0].mean() / 4, shifts[sl, 1].mean() / 4,
                     mag.mean() / 4, *profile(diff, a, b) * 10]
        in_s = [i for i in range(a, max(b, a + 1)) if i in cuts]
        if in_s:
            ph = (in_s[0] - a) / max(1, k)
            cut[s, 2:4] = [np.sin(2 * np.pi * ph), np.cos(2 * np.pi * ph)]
            last_cut = in_s[-1] / fps
        cut[s, 0] = len(in_s)
        cut[s, 1] = changes[sl].max()
        cut[s, 4] = min(8.0, (s + 1) - last_cut) / 4.0
    return {"colour": colour, "motion": motion, "cuts": cut}
