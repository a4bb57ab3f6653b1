"""Decode any audio (or the audio stream of a video container) to mono float32 at a chosen rate.

PyAV carries its own FFmpeg, so wav, flac, mp3, ogg/vorbis, opus, m4a/aac and the audio of mp4/mkv/avi
all go through one code path with no system FFmpeg. Errors are raised as `MediaError` with the file
and a reason a person can act on; callers record them instead of crashing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif"}
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v"}
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS


class MediaError(Exception):
    """A media file that cannot be used; `str()` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    sample_rate: int
    channels: int
    codec: str


def _open(path: Path, stream: str = "audio"):
    """Open a media container that has a `stream` ("audio" or "video") stream, or raise MediaError."""
    import av

    if not path.exists():
        raise MediaError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as exc:  # PyAV raises many subclasses; all mean "not decodable"
        raise MediaError(path, f"not a readable media file ({type(exc).__name__}: {exc})") from None
    if not getattr(container.streams, stream):
        container.close()
        raise MediaError(path, f"no {stream} stream in the file")
    return container


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Header-level facts; cheap but not trusted for duration (decoding gives the truth)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / 1e6 if container.duration else float("nan"))
        return AudioInfo(duration, int(stream.rate or 0), int(stream.channels or 0), stream.codec_context.name)
    finally:
        container.close()


def decode_audio(path: str | os.PathLike, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Whole file (or the first `max_seconds`) as mono float32 in [-1, 1] at `sample_rate`.

    Raises MediaError for unreadable, empty, corrupt or non-finite audio.
    """
    import av

    path = Path(path)
    container = _open(path)
    chunks: list[np.ndarray] = []
    total = 0
    limit = int(max_seconds * sample_rate) if max_seconds else None
    try:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    chunks.append(arr)
                    total += len(arr)
                if limit is not None and total >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            if total == 0:
                raise MediaError(path, f"audio stream cannot be decoded ({exc})") from None
            # a truncated tail: keep what decoded, as players do
    finally:
        container.close()
    if not chunks:
        raise MediaError(path, "no decodable audio samples (file is corrupt, truncated, or not audio despite its extension)")
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if limit is not None:
        audio = audio[:limit]
    if not np.all(np.isfinite(audio)):
        raise MediaError(path, "audio contains NaN or infinite samples")
    return audio


def write_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> Path:
    """Mono float audio, clipped to [-1, 1], as a 16-bit PCM WAV (folders made as needed): the format
    of the corpora's queries and of the benchmarks' generated audio, which any decoder reads."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(x, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return path
