"""Write a music video: H.264 picture and AAC soundtrack in one mp4 (the core writer, vmr's settings)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avmatch.core.mux import write_av


def write_music_video(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None,
                      sample_rate: int, crf: int = 26, audio_bitrate: int = 64_000) -> Path:
    """RGB uint8 frames [n, h, w, 3] at `fps` and mono float audio in [-1, 1] (None: no soundtrack)."""
    return write_av(path, frames, fps, audio, sample_rate, crf=crf, audio_bitrate=audio_bitrate)
