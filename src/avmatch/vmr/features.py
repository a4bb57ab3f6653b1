"""Per-second features of whole collections: music from the PCM cache, video from the frame cache.

One worker process per core computes each file's families (`music_features`, `video_features`);
`FeatureTable` keeps them per item in one npz per set, every family as its own array, so an ablation
that drops a family needs no new extraction.
"""

from __future__ import annotations

import os
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avmatch.core.progress import progress


# workers start fresh (spawn): the parent has FFmpeg/torch threads running, and a forked copy of them
# can crash a worker (seen as BrokenProcessPool while encoding the corpus videos)
_SPAWN = multiprocessing.get_context("spawn")


def _music_one(args: tuple[str, int, int]) -> dict[str, np.ndarray]:
    from avmatch.core.pcm_cache import load_pcm
    from avmatch.vmr.music_features import music_per_second

    pcm_file, sr, hop = args
    return music_per_second(load_pcm(pcm_file), sr, hop)


def _video_one(args: tuple[str, float]) -> dict[str, np.ndarray]:
    from avmatch.core.frame_cache import load_frames
    from avmatch.vmr.video_features import video_per_second

    frames_file, fps = args
    return video_per_second(load_frames(frames_file)[0], fps)


def _run(fn, jobs: list, workers: int, desc: str) -> list[dict[str, np.ndarray]]:
    if workers > 1 and len(jobs) > 1:
        if fn is _music_one or fn is _any_one:
            from avmatch.vmr.music_features import warm_librosa_kernels

            warm_librosa_kernels()   # before the workers start: see its docstring
        with ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN) as pool:
            return list(progress(pool.map(fn, jobs, chunksize=4), desc, len(jobs), "file"))
    return [fn(j) for j in progress(jobs, desc, len(jobs), "file")]


def _any_one(job: tuple[str, tuple]) -> dict[str, np.ndarray]:
    kind, args = job
    return _music_one(args) if kind == "music" else _video_one(args)


def collection_features(video_frames: list[str], fps: float, music_pcm: list[str], sample_rate: int, hop: int,
                        workers: int = 2, desc: str = "features") -> tuple[list[dict], list[dict]]:
    """Video and music features of whole collections in one pool of worker processes (each worker
    pays librosa's start-up once, not once per set)."""
    jobs = [("music", (f, sample_rate, hop)) for f in music_pcm] + [("video", (f, fps)) for f in video_frames]
    rows = _run(_any_one, jobs, workers, desc)
    return rows[len(music_pcm):], rows[: len(music_pcm)]


def music_features(pcm_files: list[str], sample_rate: int, hop: int, workers: int = 2,
                   desc: str = "music features") -> list[dict[str, np.ndarray]]:
    return _run(_music_one, [(f, sample_rate, hop) for f in pcm_files], workers, desc)


def video_features(frames_files: list[str], fps: float, workers: int = 2,
                   desc: str = "video features") -> list[dict[str, np.ndarray]]:
    return _run(_video_one, [(f, fps) for f in frames_files], workers, desc)


@dataclass
class FeatureTable:
    """Items of one set and their per-second features: `families[name]` is a list of [seconds, d] arrays."""

    ids: list[str]
    families: dict[str, list[np.ndarray]]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"ids": np.asarray(self.ids, dtype=str)}
        for name, items in self.families.items():
            arrays[f"{name}__lengths"] = np.asarray([len(x) for x in items], np.int64)
            arrays[f"{name}__data"] = (np.concatenate(items) if items else np.zeros((0, 1), np.float32)).astype(np.float32)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureTable":
        with np.load(path) as d:
            ids = [str(x) for x in d["ids"]]
            fams = {}
            for key in d.files:
                if key.endswith("__lengths"):
                    name = key[: -len("__lengths")]
                    data, lengths = d[f"{name}__data"], d[key]
                    fams[name] = np.split(data, np.cumsum(lengths)[:-1]) if len(lengths) else []
        return cls(ids, fams)

    @classmethod
    def from_rows(cls, ids: list[str], rows: list[dict[str, np.ndarray]]) -> "FeatureTable":
        names = list(rows[0]) if rows else []
        return cls(list(ids), {n: [r[n] for r in rows] for n in names})

    def matrix(self, i: int, families: list[str]) -> np.ndarray:
        """Item i's [seconds, D] matrix of the named families, side by side (shortest length kept)."""
        parts = [self.families[f][i] for f in families]
        t = min(len(p) for p in parts)
        return np.concatenate([p[:t] for p in parts], 1)

    def matrices(self, families: list[str]) -> list[np.ndarray]:
        return [self.matrix(i, families) for i in range(len(self.ids))]
