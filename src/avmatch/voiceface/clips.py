"""Write a talking-head clip (a picture held still over a soundtrack) as one mp4.

Used to build small VoxCeleb-style folders from packaged photos and packaged speech (tests, demos):
the video track has the photo, the audio track the speech, as a VoxCeleb clip has a face and a voice.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avmatch.core.mux import write_av


def write_clip(path: str | os.PathLike, frame: np.ndarray | None, seconds: float, audio: np.ndarray | None,
               sample_rate: int = 16000, fps: float = 5.0, crf: int = 23) -> Path:
    """`frame` (RGB uint8 [h, w, 3]; None: no picture) for `seconds` at `fps`, and mono float `audio`
    (None: no soundtrack) in [-1, 1], as H.264 + AAC in `path` (written under a temporary name)."""
    frames = None if frame is None else [frame] * max(1, int(round(seconds * fps)))
    return write_av(path, frames, fps, audio, sample_rate, crf=crf)
