"""Write a music video: H.264 picture and AAC soundtrack in one mp4, with PyAV, atomically."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_music_video(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None,
                      sample_rate: int, crf: int = 26, audio_bitrate: int = 64_000) -> Path:
    """RGB uint8 frames [n, h, w, 3] (even h, w) at `fps` and mono float audio in [-1, 1] (None: no
    soundtrack) as `path` (H.264 yuv420p + AAC); written under a temporary name and renamed."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vs.pix_fmt, vs.height, vs.width = "yuv420p", h, w
        vs.options = {"preset": "veryfast", "crf": str(crf)}
        ast = None
        if audio is not None:
            ast = out.add_stream("aac", rate=sample_rate)
            ast.layout = "mono"
            ast.bit_rate = audio_bitrate
        for arr in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w], dtype=np.uint8), format="rgb24")
            for packet in vs.encode(vf):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if ast is not None:
            pcm = np.clip(np.asarray(audio, np.float32), -1.0, 1.0).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="flt", layout="mono")
            af.sample_rate = sample_rate
            af.pts = 0
            for packet in ast.encode(af):
                out.mux(packet)
            for packet in ast.encode(None):
                out.mux(packet)
    os.replace(tmp, path)
    return path
