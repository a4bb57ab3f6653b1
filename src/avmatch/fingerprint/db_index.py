"""The IVF-PQ index of a user database: its trained codes are stored, its vectors are not.

Training IVF-PQ is the slow part of building it, so the trained index (centroids and PQ codes, a
few bytes per segment) is kept in `index/`; the full-precision vectors that rescoring needs are the
shards' own, put in the index's row order at load. The shards stay the source of truth: when they
and the stored codes disagree (an item changed or removed, a save interrupted) the codes are
rebuilt from the shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.index import ID_COLUMNS, SegmentIndex
from avmatch.fingerprint.params import FpIndexParams

CODES = "index.faiss"
ROWS = "idmap.parquet"
INFO = "codes.json"


def build_codes(meta: pd.DataFrame, vectors: np.ndarray, ix: FpIndexParams) -> SegmentIndex:
    return SegmentIndex.build(vectors, meta[list(ID_COLUMNS)], ix.type, nlist=ix.nlist, pq_m=ix.pq_m,
                              pq_nbits=ix.pq_nbits, nprobe=ix.nprobe)


def _replace(directory: Path, name: str, write) -> None:
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, directory / name)


def save_codes(seg: SegmentIndex, directory: Path, current: dict[str, str]) -> None:
    """Write the codes, the row map and (last, so an interrupted save is detected) what they hold."""
    import faiss

    directory.mkdir(parents=True, exist_ok=True)
    _replace(directory, CODES, lambda p: faiss.write_index(seg.index, str(p)))
    _replace(directory, ROWS, lambda p: seg.idmap.to_parquet(p, index=False))
    info = {"ntotal": seg.ntotal, "params": seg.params, "hashes": current}
    _replace(directory, INFO, lambda p: p.write_text(json.dumps(info, indent=2, default=str)))
    for legacy in ("vectors.npy", "index.json", "hashes.json"):   # older versions kept a vector copy here
        (directory / legacy).unlink(missing_ok=True)


def load_codes(directory: Path, meta: pd.DataFrame, vectors: np.ndarray, current: dict[str, str],
               ix: FpIndexParams) -> SegmentIndex | None:
    """The stored index with the shards' vectors in its row order and items added since appended;
    None when it must be rebuilt (missing, or an indexed item changed or was removed)."""
    import faiss

    if not (directory / INFO).exists():
        return None
    info = json.loads((directory / INFO).read_text())
    indexed = info.get("hashes", {})
    if any(current.get(i) != h for i, h in indexed.items()):
        return None
    index = faiss.read_index(str(directory / CODES))
    idmap = pd.read_parquet(directory / ROWS)
    if index.ntotal != len(idmap) or index.ntotal != info.get("ntotal"):
        return None
    where = idmap[["item_id", "segment"]].merge(meta[["item_id", "segment"]].reset_index(),
                                                on=["item_id", "segment"], how="left")["index"]
    if where.isna().any():
        return None
    if info["params"].get("kind") == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = int(info["params"].get("nprobe") or ix.nprobe)
    seg = SegmentIndex(index, info["params"], idmap=idmap, vectors=vectors[where.to_numpy(np.int64)])
    new = meta["item_id"].isin(set(current) - set(indexed)).to_numpy()
    if new.any():
        seg.add(vectors[new], meta.loc[new, list(ID_COLUMNS)])
    return seg
