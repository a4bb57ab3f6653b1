"""Exporters to the formats people already use, so existing tools can read our embeddings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def export_nmfp(meta: pd.DataFrame, vectors: np.ndarray, out_dir: str | Path,
                paths: dict[str, str] | None = None) -> dict[str, str]:
    """NMFP/NAFP layout: `database.mm` (float32 memmap N×d), `database_shape.npy`, `database.csv`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mm_tmp = out / "database.mm.tmp"
    mm = np.memmap(mm_tmp, dtype=np.float32, mode="w+", shape=vectors.shape if len(vectors) else (1, vectors.shape[1]))
    if len(vectors):
        mm[:] = vectors
    mm.flush()
    del mm
    os.replace(mm_tmp, out / "database.mm")
    np.save(out / "database_shape.npy", np.array(vectors.shape, dtype=np.int64))
    table = meta[["item_id", "segment", "start_s", "end_s"]].copy()
    table.insert(0, "index", np.arange(len(table)))
    table.insert(2, "path", table["item_id"].map(paths or {}).fillna(""))
    table.to_csv(out / "database.csv", index=False)
    return {"mm": str(out / "database.mm"), "csv": str(out / "database.csv")}
