"""Reading and writing the corpus folder's expert tables (experts/<expert>.parquet: track, vector list<float32>)
and the metadata tables, with the checks every stage needs (duplicate tracks, ragged vectors)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MISSING_FILE = "missing.parquet"


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Temp name + rename: a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_frame(df: pd.DataFrame, path: Path) -> None:
    write_table_atomic(pa.Table.from_pandas(df, preserve_index=False), path)


def write_vectors(path: Path, tracks: list[str] | np.ndarray, vectors: np.ndarray) -> None:
    """One expert's table: `track` (str), `vector` (list<float32>), row i = vectors[i]."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != len(tracks):
        raise ValueError(f"{path}: {len(tracks)} tracks but vectors of shape {vectors.shape}")
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    vec = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32()))
    write_table_atomic(pa.table({"track": pa.array([str(t) for t in tracks], pa.string()), "vector": vec}), path)


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    """(tracks, [n, dim] float32) of one expert table; an error naming the file for ragged or duplicate rows."""
    table = pq.read_table(path, columns=["track", "vector"])
    tracks = table.column("track").to_pylist()
    if len(set(tracks)) != len(tracks):
        raise ValueError(f"{path}: duplicate track ids")
    if not tracks:
        return [], np.zeros((0, 0), np.float32)
    col = table.column("vector").combine_chunks()
    lengths = np.diff(np.asarray(col.offsets))
    if len(set(lengths.tolist())) != 1:
        raise ValueError(f"{path}: vectors of different lengths {sorted(set(lengths.tolist()))[:5]}")
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32)
    return tracks, flat.reshape(len(tracks), int(lengths[0]))


def expert_matrix(path: Path, tracks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The expert's vectors in the order of `tracks` ([n, dim], zeros where absent) and the presence mask."""
    have, mat = read_vectors(path)
    index = {t: i for i, t in enumerate(have)}
    rows = np.array([index.get(t, -1) for t in tracks], np.int64)
    present = rows >= 0
    out = np.zeros((len(tracks), mat.shape[1] if mat.size else 0), np.float32)
    out[present] = mat[rows[present]]
    return out, present


def modality_of(expert: str) -> str:
    """`v_...` -> voice, `f_...` -> face (EFT's naming); anything else is an error, not a guess."""
    if expert.startswith("v_"):
        return "voice"
    if expert.startswith("f_"):
        return "face"
    raise ValueError(f"expert name {expert!r} must start with 'v_' (voice) or 'f_' (face)")
