"""The index of a user database, made from its shards: each vector is stored once, in the shards.

`read_current` reads the current items' rows and vectors from the shards as `ShardStore.read` does,
in Arrow's compute kernels: `identify` pays it at every start-up, and the general reader's row-by-row
Python filter and object-string sort took 10 s at 100 h of audio. A flat index is built from them in
memory (`flat_index`). For IVF-PQ, training is the slow part, so the trained index (centroids and
PQ codes, a few bytes per segment) is kept in `index/`; the full-precision vectors that rescoring
needs are the shards' own, put in the index's row order at load. When the shards and the stored
codes disagree (an item changed or removed, a save interrupted) the codes are rebuilt from the shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.index import ID_COLUMNS, SegmentIndex
from avmatch.core.shards import ShardStore, read_shard
from avmatch.fingerprint.params import FpIndexParams

CODES = "index.faiss"
ROWS = "idmap.parquet"
INFO = "codes.json"


def read_current(store: ShardStore, current: dict[str, str]) -> tuple[pd.DataFrame, np.ndarray]:
    """(rows item_id, segment, start_s; vectors) of the items whose content hash is current, each item's
    segments together and in order, each once (the first shard's copy, as `ShardStore.read` keeps).

    Items come in shard order rather than sorted (the index does not need them sorted), so the common
    case, a store where every item was written once, needs no sort and no copy of the vectors.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array([f"{i}\x00{h}" for i, h in current.items()], pa.string())
    tables = []
    for path in store.shard_paths():
        t = read_shard(path, columns=["item_id", "content_hash", "segment", "start_s", "vector"])
        keep = pc.is_in(pc.binary_join_element_wise(t["item_id"], t["content_hash"], "\x00"), value_set=wanted)
        if not pc.all(keep).as_py():     # rows of changed or removed files
            t = t.filter(keep)
        if t.num_rows:
            tables.append(t.drop_columns(["content_hash"]))
    if not tables:
        return pd.DataFrame({c: [] for c in ID_COLUMNS}), np.zeros((0, store.dim), np.float32)
    t = pa.concat_tables(tables)
    if not _one_run_per_item(t):   # an item written twice by an interrupted run: sort (stable) and dedupe
        t = t.sort_by([("item_id", "ascending"), ("segment", "ascending")])
        items, segments = _codes(t), t["segment"].to_numpy()
        t = t.filter(pa.array(np.r_[True, (items[1:] != items[:-1]) | (segments[1:] != segments[:-1])]))
    vectors = t["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, store.dim)
    meta = pd.DataFrame({"item_id": t["item_id"].to_numpy(zero_copy_only=False),
                         "segment": t["segment"].to_numpy().astype(np.int64),
                         "start_s": t["start_s"].to_numpy().astype(np.float64)})
    return meta, np.ascontiguousarray(vectors, dtype=np.float32)


def _codes(t) -> np.ndarray:
    return t["item_id"].combine_chunks().dictionary_encode().indices.to_numpy()


def _one_run_per_item(t) -> bool:
    """Every item's rows are contiguous and numbered 0, 1, 2, ... (what the index needs)."""
    items, segments = _codes(t), t["segment"].to_numpy().astype(np.int64)
    starts = np.r_[True, items[1:] != items[:-1]]
    if len(np.unique(items[starts])) != int(starts.sum()):
        return False
    run_start = np.maximum.accumulate(np.where(starts, np.arange(len(items)), 0))
    return bool(np.all(segments == np.arange(len(items)) - run_start))


def flat_index(meta: pd.DataFrame, vectors: np.ndarray) -> SegmentIndex:
    """An exact index for searching, holding the vectors once in memory: rescoring reads FAISS's own
    copy. For searching only: adding to it would move FAISS's storage from under that view."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    view = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    return SegmentIndex(index, {"kind": "flat", "nprobe": None}, idmap=meta, vectors=view)


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
