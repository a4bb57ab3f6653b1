"""Decoded, resampled mono audio cached as int16 .npy files keyed by content hash.

Decoding compressed audio costs more than the log-mel front end, and training, extraction and
evaluation all need the same 8 kHz waveform; decoding once into this cache makes every later
stage a memory-mapped read. Keying by content hash (not path) means renamed files are not
decoded again and edited files are.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.audio import MediaError, decode_audio
from avmatch.core.progress import progress

SILENCE_DBFS = -70.0


def silence_reason(audio: np.ndarray) -> str:
    """Why audio is unusable as silence ("" when it is not): a silent file matches nothing, and
    normalising it would turn rounding noise into a loud, arbitrary input."""
    level = 20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12)
    return f"audio is silent (RMS {level:.0f} dBFS < {SILENCE_DBFS:.0f} dBFS)" if level < SILENCE_DBFS else ""


def pcm_name(content_hash: str, sample_rate: int) -> str:
    return f"{content_hash}_{sample_rate}.npy"


def load_pcm(path: str | Path, mmap: bool = False) -> np.ndarray:
    """float32 in [-1, 1] from the int16 cache file."""
    data = np.load(path, mmap_mode="r" if mmap else None)
    return np.asarray(data, dtype=np.float32) / 32767.0


def _decode_one(args: tuple[str, str, int]) -> tuple[int, str]:
    """Returns (n_samples, "") or (0, reason). Runs in a worker process."""
    src, dst, sample_rate = args
    try:
        audio = decode_audio(src, sample_rate)
    except MediaError as exc:
        return 0, exc.reason
    except Exception as exc:  # a decoder bug must not stop the collection
        return 0, f"unexpected decoding failure ({type(exc).__name__}: {exc})"
    silent = silence_reason(audio)
    if silent:
        return 0, silent
    pcm = np.clip(np.round(audio * 32767.0), -32767, 32767).astype(np.int16)
    tmp = dst + f".{os.getpid()}.tmp.npy"
    np.save(tmp, pcm)
    os.replace(tmp, dst)
    return len(pcm), ""


def decode_manifest(manifest: pd.DataFrame, cache_dir: str | Path, sample_rate: int, workers: int = 2,
                    desc: str = "decode") -> pd.DataFrame:
    """Decode every `ok` item not yet cached; return the manifest with `pcm_file`, `n_samples`, updated status."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    items = manifest.copy()
    items["pcm_file"] = ""
    items["n_samples"] = 0
    todo: list[tuple[int, tuple[str, str, int]]] = []
    for i, row in items.iterrows():
        if row["status"] != "ok":
            continue
        dst = cache_dir / pcm_name(row["content_hash"], sample_rate)
        items.at[i, "pcm_file"] = str(dst)
        if dst.exists():
            items.at[i, "n_samples"] = int(np.load(dst, mmap_mode="r").shape[0])
        else:
            todo.append((i, (str(row["path"]), str(dst), sample_rate)))
    if todo:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(progress(pool.map(_decode_one, [a for _, a in todo], chunksize=1),
                                        desc=desc, total=len(todo), unit="file"))
        else:
            results = [_decode_one(a) for _, a in progress(todo, desc=desc, total=len(todo), unit="file")]
        for (i, _), (n, reason) in zip(todo, results):
            if reason:
                items.at[i, "status"] = "error"
                items.at[i, "error"] = reason
                items.at[i, "pcm_file"] = ""
            else:
                items.at[i, "n_samples"] = n
    items["duration_s"] = np.where(items["n_samples"] > 0, items["n_samples"] / sample_rate, items["duration_s"])
    return items
