"""A training-free frame descriptor: low-frequency DCT of the grey thumbnail plus a colour histogram.

The classical copy-detection descriptor (global DCT signatures and colour histograms go back to the
first video copy-detection systems, e.g. Hampapur & Bolle 2001; Law-To et al. 2007 compare them). It is
the reference a learnt descriptor has to beat on footage it never saw: it has no training data to
overfit, so whatever it scores on a new source is what a descriptor gets for free there.

- Layout: the frame as a 32x32 grey thumbnail, its 2-D DCT (orthonormal), the 8x8 lowest frequencies
  without the DC term (63 values): the coarse layout, invariant to brightness (DC dropped) and to
  contrast (unit norm), robust to blur, noise and re-encoding, which change the high frequencies.
- Colour: a joint HSV histogram (8 hue x 3 saturation x 3 value bins), square-rooted (the Hellinger
  kernel, so that one dominant colour does not decide the similarity) and centred on the histogram of
  a flat mid-grey frame mix (`_centre`), so unrelated frames are near 0 rather than all similar.
- The two parts are unit vectors weighted equally: the descriptor is a unit vector and the inner
  product of two is the mean of the two cosines, so the project's FAISS search, score normalisation
  and localisation apply unchanged.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

THUMB = 32            # grey thumbnail side
LOW = 8               # the LOW x LOW lowest DCT frequencies are kept (minus DC)
HSV_BINS = (8, 3, 3)  # hue, saturation, value
DIM = LOW * LOW - 1 + int(np.prod(HSV_BINS))


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 1e-12, x / np.maximum(n, 1e-12), 0.0).astype(np.float32)


def _thumbnails(frames: np.ndarray) -> np.ndarray:
    """[n, h, w, 3] uint8 -> [n, THUMB, THUMB] float grey, by area averaging (the frame cache is square)."""
    import torch
    import torch.nn.functional as F

    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return F.adaptive_avg_pool2d(torch.from_numpy(grey)[:, None], THUMB)[:, 0].numpy()


def layout_part(frames: np.ndarray) -> np.ndarray:
    """[n, 63] unit vectors: the 8x8 lowest 2-D DCT frequencies of the grey thumbnail, DC left out."""
    from scipy.fft import dctn

    coeffs = dctn(_thumbnails(frames), axes=(1, 2), norm="ortho")[:, :LOW, :LOW].reshape(len(frames), -1)
    return _unit(coeffs[:, 1:])


def _hsv_bins(frames: np.ndarray) -> np.ndarray:
    """[n, h*w] joint HSV bin index of every pixel."""
    rgb = frames.reshape(len(frames), -1, 3).astype(np.float32) / 255.0
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    delta = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(delta > 1e-6, delta, 1.0)
    hue = np.where(mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = np.where(delta > 1e-6, hue / 6.0, 0.0)
    sat = np.where(mx > 1e-6, delta / np.maximum(mx, 1e-6), 0.0)
    nh, ns, nv = HSV_BINS
    h = np.minimum((hue * nh).astype(np.int64), nh - 1)
    s = np.minimum((sat * ns).astype(np.int64), ns - 1)
    v = np.minimum((mx * nv).astype(np.int64), nv - 1)
    return (h * ns + s) * nv + v


def colour_part(frames: np.ndarray) -> np.ndarray:
    """[n, 72] unit vectors: the square-rooted, centred joint HSV histogram."""
    bins = _hsv_bins(frames)
    n_bins = int(np.prod(HSV_BINS))
    hist = np.stack([np.bincount(row, minlength=n_bins) for row in bins]).astype(np.float32)
    hist = np.sqrt(hist / np.maximum(hist.sum(axis=1, keepdims=True), 1.0))
    return _unit(hist - _centre())


@lru_cache(maxsize=1)
def _centre() -> np.ndarray:
    """The square-rooted histogram of uniformly random colours: what any frame shares with any other
    (computed once per process; the evaluate stage describes every video separately)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    n_bins = int(np.prod(HSV_BINS))
    hist = np.bincount(_hsv_bins(noise)[0], minlength=n_bins).astype(np.float32)
    return np.sqrt(hist / hist.sum())


def dct_colour_descriptors(frames: np.ndarray) -> np.ndarray:
    """uint8 frames [n, h, w, 3] -> float32 [n, DIM] unit vectors (layout and colour weighted equally)."""
    if len(frames) == 0:
        return np.zeros((0, DIM), np.float32)
    both = np.concatenate([layout_part(frames), colour_part(frames)], axis=1) / np.sqrt(2.0)
    return _unit(both)
