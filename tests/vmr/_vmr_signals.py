"""Synthetic signals with known answers for the vmr tests: click tracks and cut videos."""

from __future__ import annotations

import numpy as np

SR = 16000


def click_track(bpm: float, seconds: float, sr: int = SR) -> np.ndarray:
    y = np.zeros(int(seconds * sr), np.float32)
    t = np.arange(int(0.03 * sr)) / sr
    click = (np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 0.005)).astype(np.float32)
    for b in np.arange(0.25, seconds, 60.0 / bpm):
        a = int(b * sr)
        y[a:a + len(click)] += click[: len(y) - a]
    return y


def shots_video(cut_times: list[float], seconds: float, fps: int = 8, size: int = 48) -> np.ndarray:
    """Textured shots of different colours, a new one at each cut time."""
    rng = np.random.default_rng(0)
    n = int(seconds * fps)
    bounds = [0.0, *cut_times, seconds]
    frames = np.empty((n, size, size, 3), np.uint8)
    for s in range(len(bounds) - 1):
        base = rng.integers(0, 256, 3)
        tex = rng.integers(-30, 30, (size, size, 1))
        img = np.clip(base[None, None] + tex, 0, 255).astype(np.uint8)
        for i in range(int(round(bounds[s] * fps)), int(round(bounds[s + 1] * fps))):
            frames[i] = np.roll(img, i, axis=1)   # slow motion inside the shot
    return frames
