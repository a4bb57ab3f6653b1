"""The fingerprint pipeline's `index` stage (dvc.yaml: fingerprint_index)."""

from __future__ import annotations

import shutil

import numpy as np

from avmatch.core.config import Params
from avmatch.core.manifest import read_manifest
from avmatch.core.tracking import StageTracker
from pipelines.fingerprint.paths import FingerprintPaths


def index(params: Params, paths: FingerprintPaths, tracker: StageTracker) -> dict:
    """FAISS index (flat or IVF-PQ) over the reference segments, with its id map, saved to disk."""
    from avmatch.core.hashing import file_hash
    from avmatch.core.index import SegmentIndex
    from avmatch.core.shards import ShardStore

    fp = params.fingerprint
    refs = read_manifest(paths.items("refs"))
    refs = refs[refs["status"] == "ok"]
    store = ShardStore(paths.shards("refs"), fp.model.dim, file_hash(paths.encoder))
    current = dict(zip(refs["id"], refs["content_hash"]))
    ix = fp.index
    if ix.partitions > 1:
        seg_index = _index_by_partition(store, current, ix, paths)
    else:
        meta, vectors = store.read(current)
        if len(vectors) == 0:
            raise RuntimeError(f"no reference fingerprints in {paths.shards('refs')} (run the extract stage)")
        seg_index = SegmentIndex.build(vectors, meta[["item_id", "segment", "start_s"]], ix.type, nlist=ix.nlist,
                                       pq_m=ix.pq_m, pq_nbits=ix.pq_nbits, nprobe=ix.nprobe)
        if paths.index.exists():
            shutil.rmtree(paths.index)
        seg_index.save(paths.index)
    return {"segments": seg_index.ntotal, "items": len(seg_index.item_ids),
            "bytes_per_segment": seg_index.bytes_per_segment(), "partitions": ix.partitions}


def _index_by_partition(store, current: dict, ix, paths: FingerprintPaths):
    """Train once on a sample, add each partition to its own copy, merge (docs/scaling.md)."""
    from avmatch.core.partitioned_index import (
        add_partition,
        merge_partitions,
        partition_offsets,
        train_shared,
    )
    from avmatch.core.progress import progress

    work = paths.data / "index_parts"
    if work.exists():
        shutil.rmtree(work)
    sizes, sample = [], []
    rng = np.random.default_rng(0)
    per_part = max(1, ix.train_sample // ix.partitions)
    for p in range(ix.partitions):   # pass 1: sizes (for global ids) and the training sample
        meta, vectors = store.read(current, p, ix.partitions)
        sizes.append(len(vectors))
        if len(vectors):
            sample.append(vectors[np.sort(rng.choice(len(vectors), min(per_part, len(vectors)), replace=False))])
    if not sum(sizes):
        raise RuntimeError(f"no reference fingerprints in {store.root} (run the extract stage)")
    trained = train_shared(work, store.dim, ix.type, np.concatenate(sample), nlist=ix.nlist, pq_m=ix.pq_m,
                           pq_nbits=ix.pq_nbits, nprobe=ix.nprobe)
    offsets = partition_offsets(sizes)
    parts = []
    for p in progress(range(ix.partitions), desc="index partitions", unit="part"):
        if not sizes[p]:
            continue
        meta, vectors = store.read(current, p, ix.partitions)
        parts.append(add_partition(trained, vectors, meta[["item_id", "segment", "start_s"]], work / f"part-{p:03d}",
                                   offsets[p]))
    merged = merge_partitions(trained, parts, paths.index, ondisk=ix.ondisk)
    shutil.rmtree(work)
    return merged
