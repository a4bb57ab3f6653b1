"""Video frames sampled at a fixed rate (1 fps), cached as small uint8 arrays keyed by content hash.

Decoding is the slowest step of copy detection and training, extraction, the pHash baseline and the
evaluation all need the same frames; decoding once into this cache makes every later stage a file
read. Keyed by content hash, rate and size (not path), so a renamed file is not decoded again and an
edited one is. Files that cannot be used get `status="error"` and the reason.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.progress import progress
from avmatch.core.video import MediaError, decode_frames


def frames_name(content_hash: str, fps: float, size: int) -> str:
    return f"{content_hash}_{fps:g}fps_{size}px.npz"


def load_frames(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [n, s, s, 3], timestamps [n, 2]) from a cache file."""
    with np.load(path) as d:
        return d["frames"], d["timestamps"]


def _decode_one(args: tuple[str, str, float, int]) -> tuple[int, str, str]:
    """Returns (n_frames, note, "") or (0, "", reason). Runs in a worker process."""
    src, dst, fps, size = args
    try:
        dec = decode_frames(src, fps=fps, size=size)
    except MediaError as exc:
        return 0, "", exc.reason
    except Exception as exc:  # a decoder bug must not stop the collection
        return 0, "", f"unexpected decoding failure ({type(exc).__name__}: {exc})"
    tmp = dst + f".{os.getpid()}.tmp.npz"
    np.savez(tmp, frames=dec.frames, timestamps=dec.timestamps)
    os.replace(tmp, dst)
    return len(dec.frames), dec.note, ""


def decode_manifest_frames(manifest: pd.DataFrame, cache_dir: str | Path, fps: float = 1.0, size: int = 112,
                           workers: int = 2, desc: str = "frames") -> pd.DataFrame:
    """Decode every `ok` video not cached yet; return the manifest with `frames_file`, `n_frames`,
    `note` (e.g. variable frame rate) and updated status/error."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    items = manifest.copy()
    items["frames_file"] = ""
    items["n_frames"] = 0
    items["note"] = ""
    todo: list[tuple[int, tuple[str, str, float, int]]] = []
    for i, row in items.iterrows():
        if row["status"] != "ok":
            continue
        dst = cache_dir / frames_name(row["content_hash"], fps, size)
        items.at[i, "frames_file"] = str(dst)
        note_file = dst.with_suffix(".note")
        if dst.exists():
            with np.load(dst) as d:
                items.at[i, "n_frames"] = int(d["timestamps"].shape[0])
            items.at[i, "note"] = note_file.read_text() if note_file.exists() else ""
        else:
            todo.append((i, (str(row["path"]), str(dst), float(fps), int(size))))
    if todo:
        args = [a for _, a in todo]
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(progress(pool.map(_decode_one, args, chunksize=1), desc=desc, total=len(todo), unit="file"))
        else:
            results = [_decode_one(a) for a in progress(args, desc=desc, total=len(todo), unit="file")]
        for (i, a), (n, note, reason) in zip(todo, results):
            if reason:
                items.at[i, ["status", "error", "frames_file"]] = ["error", reason, ""]
            else:
                items.at[i, "n_frames"] = n
                items.at[i, "note"] = note
                if note:
                    Path(a[1]).with_suffix(".note").write_text(note)
    return items
