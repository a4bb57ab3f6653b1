"""VSC22 descriptor files: one npz with `video_ids` [N], `features` [N, d] float32, `timestamps`.

This is the challenge's submission format, so its users can evaluate our descriptors with their
tools and ours with their descriptors. Rules checked on write and read: the rows of one video are
contiguous, d ≤ 512, at most one descriptor per second of video (the challenge's budget), and
timestamps are [N] (one time per descriptor) or [N, 2] (start, end); we write [N, 2].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avmatch.copydetect.metrics import VideoFeatures, VscFormatError

MAX_DIM = 512


def _check(videos: Sequence[VideoFeatures], source: str) -> None:
    seen: set[str] = set()
    for v in videos:
        if v.video_id in seen:
            raise VscFormatError(f"{source}: rows of video {v.video_id} are not contiguous")
        seen.add(v.video_id)
        if v.features.ndim != 2 or v.features.shape[1] > MAX_DIM:
            raise VscFormatError(f"{source}: {v.video_id}: features must be [n, d] with d <= {MAX_DIM}, "
                                 f"got {v.features.shape}")


def write_vsc_npz(path: str | Path, videos: Sequence[VideoFeatures]) -> Path:
    """Write descriptors of several videos (atomically); rows grouped per video in the given order."""
    _check(videos, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dim = next((v.features.shape[1] for v in videos if v.features.ndim == 2), 1)
    ids = np.concatenate([np.full(len(v), v.video_id) for v in videos]) if videos else np.zeros(0, "<U1")
    feats = np.concatenate([v.features.astype(np.float32) for v in videos]) if videos else np.zeros((0, dim), np.float32)
    ts = (np.concatenate([np.asarray(v.timestamps, np.float32).reshape(len(v), 2) for v in videos])
          if videos else np.zeros((0, 2), np.float32))
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, video_ids=ids, features=feats, timestamps=ts)
    os.replace(tmp, path)
    return path


def read_vsc_npz(path: str | Path, check_rate: bool = False) -> list[VideoFeatures]:
    """Descriptors per video from a VSC22 npz. `check_rate` enforces ≤ 1 descriptor per second."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such descriptor file")
    try:
        data = np.load(path, allow_pickle=False)
        ids, feats, ts = data["video_ids"], data["features"], data["timestamps"]
    except KeyError as exc:
        raise VscFormatError(f"{path}: missing array {exc}; a VSC22 npz holds video_ids, features, timestamps") from None
    except (ValueError, OSError) as exc:
        raise VscFormatError(f"{path}: not a readable npz ({exc})") from None
    if feats.ndim != 2 or len(ids) != len(feats) or len(ts) != len(feats):
        raise VscFormatError(f"{path}: video_ids {ids.shape}, features {feats.shape} and timestamps {ts.shape} "
                             "must have one row per descriptor")
    if not (ts.ndim == 1 or ts.shape[1:] == (2,)):
        raise VscFormatError(f"{path}: timestamps must be [N] or [N, 2], got {ts.shape}")
    ts2 = np.stack([ts, ts], axis=1) if ts.ndim == 1 else ts
    out: list[VideoFeatures] = []
    if len(ids):
        change = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        bounds = np.r_[change, len(ids)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            out.append(VideoFeatures(str(ids[a]), ts2[a:b].astype(np.float64), feats[a:b].astype(np.float32)))
    _check(out, str(path))
    if check_rate:
        for v in out:
            span = float(v.timestamps[:, 1].max() - v.timestamps[:, 0].min()) if len(v) else 0.0
            if len(v) > max(1, int(np.ceil(span)) + 1):
                raise VscFormatError(f"{path}: {v.video_id} has {len(v)} descriptors for {span:.1f} s "
                                     "(VSC22 allows at most one per second)")
    return out
