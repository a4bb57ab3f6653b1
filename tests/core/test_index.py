"""SegmentIndex: exact and IVF-PQ search, id map, adding without rebuild, persistence."""

from __future__ import annotations

import json
import logging

import faiss
import numpy as np
import pandas as pd
import pytest

from avmatch.core.index import SegmentIndex, build_index, plan_ivfpq

DIM = 64


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def tracks(rng: np.random.Generator, n_items: int, n_segments: int, prefix: str = "t",
           n_clusters: int = 16) -> tuple[np.ndarray, pd.DataFrame]:
    """Clustered unit vectors standing in for fingerprints, with their id rows."""
    centres = rng.standard_normal((n_clusters, DIM))
    labels = rng.integers(0, n_clusters, n_items * n_segments)
    vecs = unit(centres[labels] + 0.6 * rng.standard_normal((len(labels), DIM)))
    ids = pd.DataFrame({
        "item_id": np.repeat([f"{prefix}{i:03d}" for i in range(n_items)], n_segments),
        "segment": np.tile(np.arange(n_segments), n_items),
        "start_s": np.tile(np.arange(n_segments) * 0.5, n_items),
    })
    return vecs, ids


IVF = dict(nlist=16, pq_m=16, pq_nbits=6, nprobe=8)


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """FAISS's OpenMP threads busy-wait; on a loaded 2-core box that makes training 10-20x slower."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def test_flat_search_returns_cosines_and_rows() -> None:
    rng = np.random.default_rng(0)
    vecs, ids = tracks(rng, 5, 20)
    index = SegmentIndex.build(vecs, ids, "flat")
    scores, rows = index.search(vecs[[3, 47]], 4)
    assert rows[:, 0].tolist() == [3, 47]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(scores[0, 1], vecs[3] @ vecs[rows[0, 1]], atol=1e-5)
    assert index.idmap.loc[47, "item_id"] == "t002" and index.idmap.loc[47, "segment"] == 7


def test_more_neighbours_than_rows_are_padded_with_minus_one() -> None:
    vecs, ids = tracks(np.random.default_rng(1), 1, 3)
    scores, rows = SegmentIndex.build(vecs, ids).search(vecs[:1], 5)
    assert rows[0, 3:].tolist() == [-1, -1]
    assert scores[0, 3:].tolist() == [0.0, 0.0]


def test_ivfpq_recall_at_10_against_flat() -> None:
    rng = np.random.default_rng(2)
    vecs, _ = tracks(rng, 40, 100)
    queries = unit(vecs[rng.choice(len(vecs), 300, replace=False)] + 0.1 * rng.standard_normal((300, DIM)))
    _, exact = build_index(vecs, "flat").search(queries, 1)
    ivf = build_index(vecs, "ivfpq", **IVF)
    _, approx = ivf.search(queries, 10)
    recall = np.mean([e in a for e, a in zip(exact[:, 0], approx)])
    assert recall >= 0.9, recall


def test_item_rows_and_vectors_follow_the_id_map() -> None:
    vecs, ids = tracks(np.random.default_rng(3), 4, 10)
    index = SegmentIndex.build(vecs, ids)
    assert index.item_rows("t002") == slice(20, 30)
    np.testing.assert_array_equal(index.item_vectors("t002"), vecs[20:30])
    np.testing.assert_array_equal(index.vectors_at(np.array([39, 0, 21])), vecs[[39, 0, 21]])


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_adding_items_needs_no_rebuild(kind: str) -> None:
    rng = np.random.default_rng(4)
    vecs, ids = tracks(rng, 30, 60)
    half = 15 * 60
    queries = unit(vecs[::37] + 0.1 * rng.standard_normal((len(vecs[::37]), DIM)))
    once = SegmentIndex.build(vecs, ids, kind, train_vectors=vecs, **IVF)
    grown = SegmentIndex.create(DIM, kind, train_vectors=vecs, **IVF)
    grown.add(vecs[:half], ids.iloc[:half])
    trained_state = grown.index.is_trained
    grown.add(vecs[half:], ids.iloc[half:])
    assert trained_state and grown.ntotal == once.ntotal == len(vecs)
    s1, r1 = once.search(queries, 10)
    s2, r2 = grown.search(queries, 10)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    pd.testing.assert_frame_equal(once.idmap, grown.idmap)
    np.testing.assert_array_equal(grown.item_vectors("t020"), vecs[20 * 60:21 * 60])


def test_add_rejects_bad_layouts() -> None:
    vecs, ids = tracks(np.random.default_rng(5), 3, 4)
    index = SegmentIndex.build(vecs[:4], ids.iloc[:4])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(vecs[:4], ids.iloc[:4])
    with pytest.raises(ValueError, match="consecutive"):
        index.add(vecs[4:8], ids.iloc[4:8].assign(segment=[0, 2, 1, 3]))
    mixed = ids.iloc[[4, 8, 5, 9]].assign(segment=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="contiguous"):
        index.add(vecs[[4, 8, 5, 9]], mixed)
    with pytest.raises(ValueError, match="dimension"):
        index.add(np.zeros((4, DIM + 1), np.float32), ids.iloc[4:8])
    assert index.ntotal == index.index.ntotal == 4   # failed adds left nothing behind


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_save_load_roundtrip(tmp_path, kind: str) -> None:
    rng = np.random.default_rng(6)
    vecs, ids = tracks(rng, 20, 50)
    index = SegmentIndex.build(vecs, ids, kind, **IVF)
    queries = unit(vecs[::29] + 0.1 * rng.standard_normal((len(vecs[::29]), DIM)))
    index.save(tmp_path / "ix")
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == [
        "idmap.parquet", "index.faiss", "index.json", "vectors.npy"]
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["kind"] == kind and meta["dim"] == DIM and meta["ntotal"] == len(vecs)

    loaded = SegmentIndex.load(tmp_path / "ix")
    for a, b in zip(index.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(index.idmap, loaded.idmap)
    assert isinstance(loaded._chunks[0], np.memmap)
    np.testing.assert_array_equal(loaded.item_vectors("t011"), vecs[550:600])
    assert loaded.bytes_per_segment() == index.bytes_per_segment()

    # grow the loaded index in place and save over its own directory
    more, more_ids = tracks(rng, 2, 50, prefix="new")
    loaded.add(more, more_ids)
    loaded.save(tmp_path / "ix")
    again = SegmentIndex.load(tmp_path / "ix")
    assert again.ntotal == len(vecs) + 100
    np.testing.assert_array_equal(again.item_vectors("new001"), more[50:])
    np.testing.assert_array_equal(again.item_vectors("t000"), vecs[:50])


def test_load_detects_mixed_directory(tmp_path) -> None:
    vecs, ids = tracks(np.random.default_rng(7), 3, 5)
    SegmentIndex.build(vecs, ids).save(tmp_path)
    np.save(tmp_path / "vectors.npy", vecs[:7])
    with pytest.raises(ValueError, match="disagree"):
        SegmentIndex.load(tmp_path)


def test_small_corpus_shrinks_ivfpq_with_a_warning(caplog) -> None:
    vecs, ids = tracks(np.random.default_rng(8), 2, 40)
    with caplog.at_level(logging.WARNING, logger="avmatch.core.index"):
        index = SegmentIndex.build(vecs, ids, "ivfpq", nlist=256, pq_m=16, pq_nbits=8, nprobe=16)
    assert "nlist" in caplog.text and "pq_nbits" in caplog.text
    assert index.kind == "ivfpq"
    assert index.params["nlist"] == 2 and index.params["pq_nbits"] == 6 and index.params["nprobe"] == 2
    _, rows = index.search(vecs[:3], 5)
    assert (rows >= 0).all()


def test_tiny_corpora_never_crash() -> None:
    vecs, ids = tracks(np.random.default_rng(9), 1, 1)
    one = SegmentIndex.build(vecs, ids, "ivfpq", **IVF)
    assert one.kind == "flat" and one.params["requested"]["kind"] == "ivfpq"
    empty = SegmentIndex.create(DIM, "flat")
    scores, rows = empty.search(vecs, 3)
    assert rows.shape == (1, 3) and (rows == -1).all()
    assert plan_ivfpq(1000, 100, 16, 16, 8)["pq_m"] == 10   # largest divisor of dim <= 16


def test_bytes_per_segment() -> None:
    vecs, ids = tracks(np.random.default_rng(10), 20, 50)
    assert SegmentIndex.build(vecs, ids).bytes_per_segment() == 4 * DIM
    ivf = SegmentIndex.build(vecs, ids, "ivfpq", nlist=16, pq_m=8, pq_nbits=8, nprobe=4)
    assert ivf.bytes_per_segment() == 8 + 8
    assert ivf.bytes_per_segment(include_vectors=True) == 16 + 4 * DIM
