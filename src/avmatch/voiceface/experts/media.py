"""Decoding shared by the experts: a track's speech (16 kHz mono) and its face frames.

A track is decoded once per process even when several experts read it (`extract_experts` runs every
expert of a modality on one track before the next track), through a tiny cache keyed by the file's
path, size and modification time. Voice tracks may be audio files or videos (their soundtrack); face
tracks may be images (the image itself), folders of frame images (VoxCeleb's face tracks: at most
`max_frames` of them, evenly spread) or videos (frames at `fps`, at most `max_frames`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from avmatch.core.audio import MediaError, decode_audio

SAMPLE_RATE = 16000
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}

T = TypeVar("T")
_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 4


def _cached(key: tuple, make: Callable[[], T]) -> T:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]  # type: ignore[return-value]
    value = make()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def _file_key(path: Path) -> tuple:
    try:
        st = path.stat()
        if path.is_dir():      # a folder of frames: its listing and newest change
            kids = sorted(path.iterdir())
            return (str(path.resolve()), len(kids), max([p.stat().st_mtime_ns for p in kids], default=0))
    except FileNotFoundError:
        raise MediaError(path, "file does not exist") from None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def load_speech(path: str | os.PathLike, max_seconds: float | None = None) -> np.ndarray:
    """The track's audio as mono float32 at 16 kHz (the first `max_seconds` when given)."""
    path = Path(path)
    return _cached(("speech", *_file_key(path), max_seconds),
                   lambda: decode_audio(path, SAMPLE_RATE, max_seconds))


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _fit(w: int, h: int, max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(w, h, 1))
    return max(2, int(round(w * s)) // 2 * 2), max(2, int(round(h * s)) // 2 * 2)


def read_image(path: Path, max_side: int = 1024) -> np.ndarray:
    """An image file as RGB uint8 [h, w, 3], shrunk so its longer side is at most `max_side`."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise MediaError(path, "file does not exist")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = _fit(im.width, im.height, max_side) if max(im.size) > max_side else im.size
            if (w, h) != im.size:
                im = im.resize((w, h), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(path, f"not a readable image ({type(exc).__name__}: {exc})") from None


def load_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int = 30,
                max_side: int = 640) -> list[np.ndarray]:
    """The face track's pictures: an image file as one frame, a folder of images as at most `max_frames`
    of them, a video as frames at `fps` (at most `max_frames`, aspect kept, longer side at most `max_side`)."""
    path = Path(path)

    def make() -> list[np.ndarray]:
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and is_image(p))
            if not images:
                raise MediaError(path, "a folder without image files")
            pick = np.unique(np.linspace(0, len(images) - 1, min(max_frames, len(images))).round().astype(int))
            return [read_image(images[i], max(max_side, 1024)) for i in pick]
        if is_image(path):
            return [read_image(path, max(max_side, 1024))]
        from avmatch.core.video import decode_frames, probe_video

        info = probe_video(path)
        size = _fit(info.width, info.height, max_side) if info.width and info.height else (max_side, max_side)
        frames = decode_frames(path, fps=fps, size=size, max_seconds=max_frames / fps).frames
        return list(frames[:max_frames])

    return _cached(("frames", *_file_key(path), fps, max_frames, max_side), make)
