"""Write a talking-head clip (a picture held still over a soundtrack) as one mp4, with PyAV, atomically.

Used to build small VoxCeleb-style folders from packaged photos and packaged speech (tests, demos):
the video track has the photo, the audio track the speech, as a VoxCeleb clip has a face and a voice.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_clip(path: str | os.PathLike, frame: np.ndarray | None, seconds: float, audio: np.ndarray | None,
               sample_rate: int = 16000, fps: float = 5.0, crf: int = 23) -> Path:
    """`frame` (RGB uint8 [h, w, 3]; None: no picture) for `seconds` at `fps`, and mono float `audio`
    (None: no soundtrack) in [-1, 1], as H.264 + AAC in `path` (written under a temporary name)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    with av.open(str(tmp), "w") as out:
        vs = ast = None
        if frame is not None:
            h, w = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
            vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vs.pix_fmt, vs.height, vs.width = "yuv420p", h, w
            vs.options = {"preset": "veryfast", "crf": str(crf)}
        if audio is not None:
            ast = out.add_stream("aac", rate=sample_rate)
            ast.layout = "mono"
        if vs is not None:
            vf_array = np.ascontiguousarray(frame[:h, :w], dtype=np.uint8)
            for _ in range(max(1, int(round(seconds * fps)))):
                for packet in vs.encode(av.VideoFrame.from_ndarray(vf_array, format="rgb24")):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
        if ast is not None:
            pcm = np.clip(np.asarray(audio, np.float32), -1.0, 1.0).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="flt", layout="mono")
            af.sample_rate, af.pts = sample_rate, 0
            for packet in ast.encode(af):
                out.mux(packet)
            for packet in ast.encode(None):
                out.mux(packet)
    os.replace(tmp, path)
    return path
