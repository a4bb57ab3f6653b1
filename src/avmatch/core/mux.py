"""Write a video file with an optional H.264 picture and an optional AAC soundtrack, with PyAV, atomically.

Corpora and tests of several systems build small real media files (music videos, talking-head clips);
one writer keeps their container settings and the write-then-rename rule the same.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from avmatch.core.video import X264_REPRODUCIBLE


def write_av(path: str | os.PathLike, frames: Iterable[np.ndarray] | None, fps: float, audio: np.ndarray | None,
             sample_rate: int, crf: int = 23, audio_bitrate: int | None = None) -> Path:
    """RGB uint8 frames ([h, w, 3] each, cropped to even sides; None: no picture) at `fps` and mono float
    `audio` in [-1, 1] (None: no soundtrack) as `path` (H.264 yuv420p + AAC). Written under a temporary
    name and renamed, so a reader never sees half a file. The same frames and audio give the same bytes on
any machine (`X264_REPRODUCIBLE`): x264's automatic threads and CPU-specific code do not."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    frames = iter(frames) if frames is not None else iter(())
    first = next(frames, None)
    with av.open(str(tmp), "w") as out:
        vs = ast = None
        if first is not None:     # the picture is stream 0, the soundtrack stream 1, as players expect
            h, w = first.shape[0] - first.shape[0] % 2, first.shape[1] - first.shape[1] % 2
            vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vs.pix_fmt, vs.height, vs.width = "yuv420p", h, w
            vs.options = {"preset": "veryfast", "crf": str(crf), **X264_REPRODUCIBLE}
        if audio is not None:
            ast = out.add_stream("aac", rate=sample_rate)
            ast.layout = "mono"
            if audio_bitrate:
                ast.bit_rate = audio_bitrate
        if vs is not None:
            for arr in itertools.chain([first], frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w], dtype=np.uint8), format="rgb24")
                for packet in vs.encode(vf):
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
