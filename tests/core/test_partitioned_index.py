"""Train once, add per partition, merge: the merged index answers like a one-pass index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avmatch.core.index import SegmentIndex
from avmatch.core.partitioned_index import (
    add_partition,
    merge_partitions,
    partition_offsets,
    train_shared,
)


def _corpus(n_items: int = 30, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    vecs, rows = [], []
    for i in range(n_items):
        n = int(rng.integers(15, 50))
        v = rng.normal(size=(n, dim)).astype(np.float32)
        vecs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        rows.append(pd.DataFrame({"item_id": f"t{i:02d}", "segment": np.arange(n), "start_s": np.arange(n) * 0.5}))
    return vecs, rows


def _hits(seg: SegmentIndex, queries: np.ndarray, k: int = 3):
    scores, rows = seg.search(queries, k)
    idmap = seg.idmap
    keys = [[(idmap.item_id[r], int(idmap.segment[r])) for r in row] for row in rows]
    return keys, scores


@pytest.mark.parametrize("kind,ondisk", [("ivfpq", True), ("ivfpq", False), ("flat", False)])
def test_merged_partitions_equal_one_pass(tmp_path, kind, ondisk):
    vecs, rows = _corpus()
    everything = np.concatenate(vecs)
    single = SegmentIndex.build(everything, pd.concat(rows, ignore_index=True), kind, nlist=16, pq_m=8, nprobe=4)

    trained = train_shared(tmp_path, 32, kind, everything, nlist=16, pq_m=8, nprobe=4)
    groups = [[i for i in range(len(vecs)) if i % 3 == p] for p in range(3)]  # uneven partitions
    offsets = partition_offsets([sum(len(vecs[i]) for i in g) for g in groups])
    parts = [add_partition(trained, np.concatenate([vecs[i] for i in g]), pd.concat([rows[i] for i in g]),
                           tmp_path / f"part{p}", offsets[p]) for p, g in enumerate(groups)]
    merge_partitions(trained, parts, tmp_path / "merged", ondisk=ondisk)
    merged = SegmentIndex.load(tmp_path / "merged")

    assert merged.ntotal == single.ntotal and sorted(merged.item_ids) == sorted(single.item_ids)
    rng = np.random.default_rng(1)
    queries = everything[::5] + 0.05 * rng.normal(size=everything[::5].shape).astype(np.float32)
    keys_single, scores_single = _hits(single, queries)
    keys_merged, scores_merged = _hits(merged, queries)
    np.testing.assert_allclose(scores_merged, scores_single, atol=1e-6)
    top1_same = np.mean([a[0] == b[0] for a, b in zip(keys_single, keys_merged)])
    assert top1_same == 1.0
    if ondisk:
        assert (tmp_path / "merged" / "merged.ivfdata").exists()
    # the rescoring store follows the merged row order
    first = merged.item_rows("t01")
    np.testing.assert_array_equal(np.asarray(merged.vectors_at(np.arange(first.start, first.stop))), vecs[1])


def test_overlapping_partitions_are_refused(tmp_path):
    vecs, rows = _corpus(4)
    trained = train_shared(tmp_path, 32, "flat", None)
    a = add_partition(trained, vecs[0], rows[0], tmp_path / "a")
    b = add_partition(trained, vecs[0], rows[0], tmp_path / "b")
    with pytest.raises(ValueError, match="more than one partition"):
        merge_partitions(trained, [a, b], tmp_path / "merged")
