"""Video probing and frame sampling at a fixed rate (1 fps for copy detection) with PyAV.

Frames are chosen by *timestamp*, not by frame count: sample k is the frame on screen at time
(k + 0.5) / fps, and its descriptor covers [k / fps, (k + 1) / fps). That makes constant and
variable frame rate videos (screen recordings, phone footage, edited files) come out the same way;
a variable frame rate is detected and reported as a note, not an error. Frames are converted to RGB
at a small fixed size by FFmpeg's scaler while decoding, so a long video never sits in memory at
full resolution.

Errors are `MediaError` (shared with the audio decoder) with a reason a person can act on:
missing or empty file, not a media file, no video stream, no decodable frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avmatch.core.audio import MediaError
from avmatch.core.audio import _open as open_media

__all__ = ["MediaError", "VideoInfo", "DecodedFrames", "probe_video", "decode_frames", "encode_video"]

VFR_TOLERANCE = 0.2   # frame intervals varying by more than this fraction of their median = variable rate


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    n_frames: int


@dataclass
class DecodedFrames:
    frames: np.ndarray       # uint8 [n, size, size, 3]
    timestamps: np.ndarray   # float64 [n, 2]: start, end of the interval each frame stands for
    duration_s: float        # time of the last decoded frame plus one frame interval
    vfr: bool                # the file has a variable frame rate
    note: str = ""


def _open(path: Path):
    return open_media(path, "video")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Header-level facts (duration from the container when the stream does not say)."""
    path = Path(path)
    container = _open(path)
    try:
        st = container.streams.video[0]
        fps = float(st.average_rate or st.guessed_rate or 0.0)
        if st.duration:
            duration = float(st.duration * st.time_base)
        elif container.duration:
            duration = container.duration / 1e6
        else:
            duration = float("nan")
        return VideoInfo(duration, fps, int(st.codec_context.width or 0), int(st.codec_context.height or 0),
                         st.codec_context.name, int(st.frames or 0))
    finally:
        container.close()


def manifest_probe(path: Path) -> dict:
    """Manifest columns of a video file (for `catalog.manifest.build_manifest(probe=...)`)."""
    info = probe_video(path)
    return {"duration_s": info.duration_s, "sample_rate": None, "channels": None, "codec": info.codec,
            "fps": info.fps, "width": info.width, "height": info.height}


def decode_frames(path: str | os.PathLike, fps: float = 1.0, size: int | tuple[int, int] = 112,
                  max_seconds: float | None = None) -> DecodedFrames:
    """Frames on screen at (k + 0.5) / fps, as RGB uint8 [n, h, w, 3] (`size` = w = h, or (w, h));
    see the module docstring."""
    import av

    path = Path(path)
    width, height = (size, size) if isinstance(size, int) else size
    container = _open(path)
    step = 1.0 / fps
    frames: list[np.ndarray] = []
    times: list[float] = []
    prev = None
    prev_t = 0.0
    start_t: float | None = None
    next_t = 0.5 * step
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base)
                if start_t is None:
                    start_t = t
                t -= start_t
                if times and t <= times[-1]:
                    continue  # duplicated or out-of-order timestamp
                times.append(t)
                if max_seconds is not None and t >= max_seconds:
                    break
                while prev is not None and t > next_t:
                    frames.append(prev.to_ndarray(format="rgb24", width=width, height=height))
                    next_t += step
                if prev is None and t > next_t:  # the first frame starts late: it stands for the time before it
                    while t > next_t:
                        frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                        next_t += step
                prev, prev_t = frame, t
        except av.error.FFmpegError as exc:
            if not times:
                raise MediaError(path, f"video stream cannot be decoded ({exc})") from None
            # a truncated tail: keep what decoded, as players do
        if not times:
            raise MediaError(path, "no decodable video frame (zero-length, corrupt or truncated video)")
        intervals = np.diff(times)
        interval = float(np.median(intervals)) if len(intervals) else step
        duration = prev_t + interval
        if max_seconds is not None:
            duration = min(duration, max_seconds)
        while next_t < duration:
            frames.append(prev.to_ndarray(format="rgb24", width=width, height=height))
            next_t += step
        if not frames:  # shorter than half a sampling interval
            frames.append(prev.to_ndarray(format="rgb24", width=width, height=height))
    finally:
        container.close()
    vfr = bool(len(intervals) > 2 and np.ptp(intervals) > VFR_TOLERANCE * interval)
    note = (f"variable frame rate (frame intervals {intervals.min():.3f}-{intervals.max():.3f} s): "
            "sampled by timestamp") if vfr else ""
    k = np.arange(len(frames), dtype=np.float64)
    return DecodedFrames(np.stack(frames), np.stack([k * step, (k + 1) * step], axis=1), float(duration), vfr, note)


# x264 settings that make the output a function of the input frames only. Without them a build is not
# byte-reproducible: x264's AVX-512 code (chosen automatically on CPUs that have it) gave 2-4 different
# streams for the same frames in one process, single-threaded too (the first I-frame's size already differs),
# and its automatic thread count follows the core count and the frame height, and the output follows the
# thread count. `cpu-independent=1` (x264's own switch for "exact reproducibility across different CPUs")
# makes every CPU take the same arithmetic; one thread fixes the rest. See docs/benchmarks.md (copydetect).
X264_REPRODUCIBLE = {"threads": "1", "x264-params": "cpu-independent=1"}


def encode_video(path: str | os.PathLike, frames, fps: float, bitrate: int | None = None, crf: int = 23,
                 codec: str = "libx264") -> Path:
    """Write RGB uint8 frames (an iterable of [h, w, 3]) as H.264 in mp4, atomically.

    `bitrate` (bits/s) gives a low-bitrate re-encode; otherwise constant quality `crf`. With libx264, identical
    frames give a byte-identical file whatever the CPU's SIMD level and core count (`X264_REPRODUCIBLE`).
    """
    from fractions import Fraction

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), "w") as out:
        st = out.add_stream(codec, rate=rate)
        st.pix_fmt = "yuv420p"
        st.options = {"preset": "veryfast", **({"crf": str(crf)} if bitrate is None else {}),
                      **(X264_REPRODUCIBLE if codec == "libx264" else {})}
        if bitrate is not None:
            st.bit_rate = int(bitrate)
        first = True
        for arr in frames:
            arr = np.ascontiguousarray(arr, dtype=np.uint8)
            if first:
                st.height, st.width = arr.shape[0] - arr.shape[0] % 2, arr.shape[1] - arr.shape[1] % 2
                first = False
            arr = arr[: st.height, : st.width]
            for packet in st.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
    os.replace(tmp, path)
    return path
