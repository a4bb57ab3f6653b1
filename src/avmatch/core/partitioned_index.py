"""Building a `SegmentIndex` for collections too large for one pass: train once, add per partition, merge.

Each partition (a slice of the manifest, e.g. one Dask task's output) is added to a copy of one
shared trained index and saved on its own, so workers never hold more than their partition. The
merge then concatenates the id maps and vector stores in partition order and, for IVF-PQ, merges
the inverted lists into one on-disk file (`faiss.contrib.ondisk.merge_ondisk`, ids shifted by each
partition's offset) that is read back with `IO_FLAG_ONDISK_SAME_DIR` (`IO_FLAG_MMAP` segfaults on
merged indexes in FAISS 1.15.1). A flat index has no inverted lists and is concatenated in memory.

The result is a normal `SegmentIndex` directory: `SegmentIndex.load` reads it, and searches give
the same (item, segment, score) hits as an index built in one pass on the same training sample.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from avmatch.core.index import (
    IDMAP_FILE,
    INDEX_FILE,
    META_FILE,
    VECTORS_FILE,
    IndexKind,
    SegmentIndex,
    _replace_atomically,
    _tmp_name,
)

TRAINED_DIR = "trained"
ONDISK_DATA = "merged.ivfdata"


def train_shared(out_dir: str | Path, dim: int, kind: IndexKind, train_vectors: np.ndarray | None, *,
                 nlist: int = 256, pq_m: int = 16, pq_nbits: int = 8, nprobe: int = 16) -> Path:
    """Train the empty index every partition starts from; saved to `out_dir/trained`."""
    trained = SegmentIndex.create(dim, kind, nlist=nlist, pq_m=pq_m, pq_nbits=pq_nbits, nprobe=nprobe,
                                  train_vectors=train_vectors)
    return trained.save(Path(out_dir) / TRAINED_DIR)


def add_partition(trained_dir: str | Path, vectors: np.ndarray, id_rows: pd.DataFrame, part_dir: str | Path,
                  id_offset: int = 0) -> Path:
    """A copy of the trained index holding one partition's vectors, saved to `part_dir`.

    IVF ids are global (`id_offset` + local row): the caller knows every partition's size from the
    shards' metadata before any vector is read, so the merge needs no id rewriting.
    """
    seg = SegmentIndex.load(trained_dir, mmap=False)
    seg.add(vectors, id_rows)   # validates the layout and keeps the vectors for rescoring
    if seg.kind == "ivfpq" and id_offset:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        seg.index.reset()
        seg.index.add_with_ids(x, np.arange(id_offset, id_offset + len(x), dtype=np.int64))
    return seg.save(part_dir)


def partition_offsets(sizes: Iterable[int]) -> list[int]:
    """First global row of each partition, from their sizes in merge order."""
    return [int(x) for x in np.cumsum([0, *sizes])[:-1]]


def merge_partitions(trained_dir: str | Path, part_dirs: Iterable[str | Path], out_dir: str | Path,
                     ondisk: bool = True) -> SegmentIndex:
    """One index from the partitions, in their order; IVF lists go to one on-disk file when `ondisk`."""
    trained_dir, out = Path(trained_dir), Path(out_dir)
    parts = [Path(p) for p in part_dirs]
    if not parts:
        raise ValueError("no partitions to merge")
    metas = [json.loads((p / META_FILE).read_text()) for p in parts]
    params = json.loads((trained_dir / META_FILE).read_text())["params"]
    dim, total = metas[0]["dim"], sum(m["ntotal"] for m in metas)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    maps = [pd.read_parquet(p / IDMAP_FILE) for p in parts]
    owners = pd.concat([m[["item_id"]].drop_duplicates().assign(part=i) for i, m in enumerate(maps)])
    shared = owners["item_id"][owners["item_id"].duplicated()]
    if len(shared):
        raise ValueError(f"items {sorted(shared)[:5]} appear in more than one partition; partitions must not overlap")
    idmap = pd.concat(maps, ignore_index=True)
    tmp = _tmp_name(out / IDMAP_FILE)
    idmap.to_parquet(tmp, index=False)
    _replace_atomically(tmp, out / IDMAP_FILE)

    tmp = _tmp_name(out / VECTORS_FILE)
    store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
    row = 0
    for p in parts:
        chunk = np.load(p / VECTORS_FILE, mmap_mode="r")
        store[row:row + len(chunk)] = chunk
        row += len(chunk)
    store.flush()
    del store
    _replace_atomically(tmp, out / VECTORS_FILE)

    if params.get("kind") == "ivfpq":
        index = faiss.read_index(str(trained_dir / INDEX_FILE))
        if ondisk:
            from faiss.contrib.ondisk import merge_ondisk

            merge_ondisk(index, [str(p / INDEX_FILE) for p in parts], str(out / ONDISK_DATA))
        else:
            ivf = faiss.extract_index_ivf(index)
            for p in parts:
                other = faiss.read_index(str(p / INDEX_FILE))  # keep a reference: FAISS does not own it
                ivf.merge_from(faiss.extract_index_ivf(other), 0)
            index.ntotal = ivf.ntotal
    else:
        index = faiss.read_index(str(trained_dir / INDEX_FILE))
        for p in parts:
            index.add(np.load(p / VECTORS_FILE))
        ondisk = False
    if index.ntotal != total:
        raise RuntimeError(f"merged index holds {index.ntotal} vectors, partitions {total}")
    faiss.write_index(index, str(out / INDEX_FILE))
    meta = dict(metas[0], ntotal=total, n_items=int(idmap["item_id"].nunique()),
                params=dict(params, ondisk=bool(ondisk), partitions=len(parts)))
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return SegmentIndex.load(out)
