"""FAISS index of segment fingerprints, with an id map and a full-precision vector store.

A `SegmentIndex` keeps three things in the same row order (row r = FAISS id r):

* the FAISS index (exact `IndexFlatIP`, or `IndexIVFPQ` for large corpora),
* the id map, a DataFrame with `item_id` (str), `segment` (int), `start_s` (float),
* a float32 copy of the vectors (`vectors.npy`, memory-mapped on load), because IVF-PQ only
  keeps lossy codes and the search re-scores its best candidates with the exact vectors.

Rows of one item are contiguous and in segment order (segments consecutive), so an item is a
slice of rows and "segment s of item t" is one addition away. Items are added whole: adding a
partition of new items appends rows and never retrains nor rebuilds the index.

Scores are always cosine similarities of L2-normalised vectors (higher = more similar): the
flat index returns inner products directly; IVF-PQ works in L2 (its k-means centroids are L2
optima, and assigning by inner product to unnormalised centroids is a known FAISS pitfall) and
its squared distances are mapped back with ``sim = 1 - d2 / 2``, exact for unit vectors.

Scaling beyond one machine (`avmatch.core.partitioned_index` implements steps 1-3):

1. Train once: ``SegmentIndex.create(dim, "ivfpq", ..., train_vectors=sample)`` on a sample of
   the corpus (~40-256 vectors per inverted list) and save the empty trained index.
2. Add per partition: each worker loads the trained index, ``add()``s the items of its manifest
   partition and saves its own directory (index codes + id map + vectors of that partition).
3. Merge: concatenate id maps and vector stores in partition order; shift each partition's FAISS
   ids by its row offset and merge the inverted lists (``IndexIVF.merge_from(other, add_id)`` in
   memory, or ``faiss.contrib.ondisk.merge_ondisk`` into one on-disk list file, read back with
   ``IO_FLAG_ONDISK_SAME_DIR`` -- ``IO_FLAG_MMAP`` segfaults on merged indexes in FAISS 1.15.1).
   Serving without a merge is also possible with ``faiss.IndexShards`` plus per-shard offsets.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivfpq"]
ID_COLUMNS: tuple[str, ...] = ("item_id", "segment", "start_s")
INDEX_FILE = "index.faiss"
IDMAP_FILE = "idmap.parquet"
VECTORS_FILE = "vectors.npy"
META_FILE = "index.json"
FORMAT_VERSION = 1

# FAISS warns below 39 training points per k-means centroid; we follow the same rule of thumb.
MIN_POINTS_PER_CENTROID = 39
# Vectors whose norm is further than this from 1 trigger a (single) warning: scores assume unit norm.
_NORM_TOLERANCE = 1e-3


# ---------------------------------------------------------------- building blocks
def as_float32_matrix(x: np.ndarray, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """Return `x` as a C-contiguous float32 (n, dim) array, the only layout FAISS accepts."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim == 1 and arr.size == 0 and dim is not None:
        arr = arr.reshape(0, dim)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} have dimension {arr.shape[1]}, index expects {dim}")
    return arr


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def plan_ivfpq(n_train: int, dim: int, nlist: int, pq_m: int, pq_nbits: int) -> dict[str, Any]:
    """Choose IVF-PQ parameters that FAISS can train on `n_train` vectors.

    Small corpora must not crash a pipeline, so instead of FAISS's hard errors we shrink
    the request and log why: `nlist` to `n_train // 39` (FAISS's points-per-centroid rule),
    `pq_nbits` so that the 2**nbits PQ centroids have at least one point each, and `pq_m` to a
    divisor of `dim`. Returns ``{"kind", "nlist", "pq_m", "pq_nbits"}``; kind falls back to
    "flat" when fewer than 2 training vectors exist (nothing to quantise).
    """
    if n_train < 2:
        log.warning("ivfpq needs at least 2 training vectors, got %d: using an exact flat index", n_train)
        return {"kind": "flat", "nlist": None, "pq_m": None, "pq_nbits": None}
    eff_nlist = max(1, min(nlist, n_train // MIN_POINTS_PER_CENTROID))
    if eff_nlist != nlist:
        log.warning("ivfpq: %d training vectors are too few for nlist=%d (want >= %d per list); "
                    "using nlist=%d", n_train, nlist, MIN_POINTS_PER_CENTROID, eff_nlist)
    eff_nbits = min(pq_nbits, int(math.floor(math.log2(n_train))))
    if eff_nbits != pq_nbits:
        log.warning("ivfpq: %d training vectors cannot train 2**%d PQ centroids; using pq_nbits=%d",
                    n_train, pq_nbits, eff_nbits)
    eff_m = _largest_divisor_at_most(dim, pq_m)
    if eff_m != pq_m:
        log.warning("ivfpq: pq_m=%d does not divide dim=%d; using pq_m=%d", pq_m, dim, eff_m)
    return {"kind": "ivfpq", "nlist": eff_nlist, "pq_m": eff_m, "pq_nbits": eff_nbits}


def make_trained_index(
    dim: int,
    kind: IndexKind = "flat",
    nlist: int = 256,
    pq_m: int = 16,
    pq_nbits: int = 8,
    nprobe: int = 16,
    train_vectors: np.ndarray | None = None,
) -> tuple[faiss.Index, dict[str, Any]]:
    """Create an empty, trained FAISS index; return it with the parameters actually used.

    "flat" needs no training. "ivfpq" is trained on `train_vectors` (after `plan_ivfpq`
    shrinks parameters that the training set cannot support); vectors added later reuse that
    training, which is what makes adding items cheap.
    """
    if kind not in ("flat", "ivfpq"):
        raise ValueError(f"index kind must be 'flat' or 'ivfpq', got {kind!r}")
    if kind == "flat":
        return faiss.IndexFlatIP(dim), {"kind": "flat", "nprobe": None}
    train = as_float32_matrix(train_vectors if train_vectors is not None else np.empty((0, dim)),
                              dim, "train_vectors")
    plan = plan_ivfpq(len(train), dim, nlist, pq_m, pq_nbits)
    if plan["kind"] == "flat":
        return faiss.IndexFlatIP(dim), {"kind": "flat", "nprobe": None, "requested_kind": "ivfpq"}
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, plan["nlist"], plan["pq_m"], plan["pq_nbits"], faiss.METRIC_L2)
    # We already warned about small training sets in our own words; silence FAISS's stderr copy.
    index.cp.min_points_per_centroid = 1
    index.pq.cp.min_points_per_centroid = 1
    index.train(train)
    eff_nprobe = int(min(nprobe, plan["nlist"]))
    index.nprobe = eff_nprobe
    return index, {**plan, "nprobe": eff_nprobe}


def build_index(
    vectors: np.ndarray,
    kind: IndexKind = "flat",
    nlist: int = 256,
    pq_m: int = 16,
    pq_nbits: int = 8,
    nprobe: int = 16,
    train_vectors: np.ndarray | None = None,
) -> faiss.Index:
    """Build a FAISS index holding `vectors` (row i gets id i).

    IVF-PQ trains on `train_vectors` when given (e.g. a sample shared by all partitions),
    otherwise on `vectors` themselves.
    """
    x = as_float32_matrix(vectors)
    index, _ = make_trained_index(x.shape[1], kind, nlist, pq_m, pq_nbits, nprobe,
                                  x if train_vectors is None else train_vectors)
    index.add(x)
    return index


def search_similarity(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-NN search returning cosine similarities (descending) and ids (-1 where fewer than k)."""
    q = as_float32_matrix(queries, index.d, "queries")
    if len(q) == 0 or index.ntotal == 0 or k <= 0:
        return np.zeros((len(q), max(k, 0)), np.float32), np.full((len(q), max(k, 0)), -1, np.int64)
    dist, ids = index.search(q, int(k))
    if index.metric_type == faiss.METRIC_L2:
        dist = 1.0 - dist / 2.0
    dist[ids < 0] = 0.0
    return dist.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def _replace_atomically(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


# ---------------------------------------------------------------- the index with its id map
class SegmentIndex:
    """A FAISS index + id map + float32 vector store, kept in the same row order.

    Build with `SegmentIndex.build(vectors, id_rows, ...)` or `SegmentIndex.create(dim, ...)`
    followed by `add(...)`; persist with `save(dir)` / `SegmentIndex.load(dir)`.
    """

    def __init__(self, index: faiss.Index, params: dict[str, Any], idmap: pd.DataFrame | None = None,
                 vectors: np.ndarray | None = None) -> None:
        self.index = index
        self.params = dict(params)
        self.dim = int(index.d)
        self._idmap_parts: list[pd.DataFrame] = []
        self._idmap_cache: pd.DataFrame | None = _empty_idmap()
        self._chunks: list[np.ndarray] = []      # float32 vector store, in row order
        self._chunk_starts: list[int] = []
        self._n_rows = 0
        self._item_code: dict[str, int] = {}
        self._item_ids: list[str] = []
        self._item_start: list[int] = []
        self._item_first_segment: list[int] = []
        self._item_count: list[int] = []
        self._row_item = np.empty(0, np.int64)
        self._row_segment = np.empty(0, np.int64)
        self._norm_warned = False
        if idmap is not None:
            store = vectors if vectors is not None else np.empty((0, self.dim), np.float32)
            if len(store) != len(idmap) or index.ntotal != len(idmap):
                raise ValueError(f"inconsistent index: faiss ntotal={index.ntotal}, "
                                 f"id map rows={len(idmap)}, vector rows={len(store)}")
            self._register_rows(_clean_idmap(idmap), store)

    # ------------------------------------------------------------ construction
    @classmethod
    def create(cls, dim: int, kind: IndexKind = "flat", *, nlist: int = 256, pq_m: int = 16,
               pq_nbits: int = 8, nprobe: int = 16, train_vectors: np.ndarray | None = None) -> "SegmentIndex":
        """An empty, trained index ready for `add()` (IVF-PQ trains on `train_vectors`)."""
        index, used = make_trained_index(dim, kind, nlist, pq_m, pq_nbits, nprobe, train_vectors)
        requested = {"kind": kind, "nlist": nlist, "pq_m": pq_m, "pq_nbits": pq_nbits, "nprobe": nprobe}
        return cls(index, {**used, "requested": requested})

    @classmethod
    def build(cls, vectors: np.ndarray, id_rows: pd.DataFrame, kind: IndexKind = "flat", *,
              nlist: int = 256, pq_m: int = 16, pq_nbits: int = 8, nprobe: int = 16,
              train_vectors: np.ndarray | None = None) -> "SegmentIndex":
        """Train (IVF-PQ: on `train_vectors`, default `vectors`) and add `vectors` with their id rows."""
        x = as_float32_matrix(vectors)
        seg = cls.create(x.shape[1], kind, nlist=nlist, pq_m=pq_m, pq_nbits=pq_nbits, nprobe=nprobe,
                         train_vectors=x if train_vectors is None else train_vectors)
        seg.add(x, id_rows)
        return seg

    # ------------------------------------------------------------ adding
    def add(self, vectors: np.ndarray, id_rows: pd.DataFrame) -> None:
        """Append whole items: no retraining, existing rows keep their ids.

        `id_rows` has one row per vector with `item_id`, `segment`, `start_s`; each item's rows
        must be contiguous with consecutive segment numbers, and an item already in the index
        cannot be added again (that would break the one-slice-per-item layout).
        """
        x = as_float32_matrix(vectors, self.dim)
        rows = _clean_idmap(id_rows)
        if len(rows) != len(x):
            raise ValueError(f"{len(x)} vectors but {len(rows)} id rows")
        if len(x) == 0:
            return
        if self.index.ntotal != self._n_rows:
            raise RuntimeError(f"faiss index has {self.index.ntotal} rows, id map {self._n_rows}")
        dup = set(rows["item_id"].unique()) & self._item_code.keys()
        if dup:
            raise ValueError(f"items already in the index (items are added whole): {sorted(dup)[:5]}")
        self._check_norms(x)
        self._register_rows(rows, x)   # validates layout before FAISS is touched
        self.index.add(x)

    def _register_rows(self, rows: pd.DataFrame, store: np.ndarray) -> None:
        if len(rows) == 0:
            return
        items = rows["item_id"].to_numpy(dtype=object)
        segments = rows["segment"].to_numpy(dtype=np.int64)
        change = np.flatnonzero(np.r_[True, items[1:] != items[:-1]])
        run_items = items[change]
        if len(set(run_items)) != len(run_items):
            raise ValueError("rows of each item must be contiguous in id_rows")
        run_len = np.diff(np.r_[change, len(items)])
        same_item_next = np.ones(len(items) - 1, bool) if len(items) > 1 else np.zeros(0, bool)
        same_item_next[change[1:] - 1] = False
        if np.any(np.diff(segments)[same_item_next] != 1):
            raise ValueError("segments of each item must be consecutive and increasing (0, 1, 2, ...)")
        base = self._n_rows
        codes = np.empty(len(items), np.int64)
        for start, n, item in zip(change, run_len, run_items):
            code = len(self._item_ids)
            self._item_code[item] = code
            self._item_ids.append(item)
            self._item_start.append(base + int(start))
            self._item_first_segment.append(int(segments[start]))
            self._item_count.append(int(n))
            codes[start:start + n] = code
        self._row_item = np.concatenate([self._row_item, codes])
        self._row_segment = np.concatenate([self._row_segment, segments])
        self._chunks.append(store)
        self._chunk_starts.append(base)
        self._idmap_parts.append(rows)
        self._idmap_cache = None
        self._n_rows += len(rows)

    def _check_norms(self, x: np.ndarray) -> None:
        if self._norm_warned or len(x) == 0:
            return
        norms = np.linalg.norm(x, axis=1)
        if np.any(np.abs(norms - 1.0) > _NORM_TOLERANCE):
            self._norm_warned = True
            log.warning("vectors are not L2-normalised (norms %.3f..%.3f): scores will not be cosines",
                        float(norms.min()), float(norms.max()))

    # ------------------------------------------------------------ reading
    @property
    def ntotal(self) -> int:
        return self._n_rows

    @property
    def kind(self) -> str:
        return str(self.params["kind"])

    @property
    def idmap(self) -> pd.DataFrame:
        """One row per FAISS id: item_id, segment, start_s (row r = id r)."""
        if self._idmap_cache is None:
            self._idmap_cache = (pd.concat(self._idmap_parts, ignore_index=True)
                                 if self._idmap_parts else _empty_idmap())
            self._idmap_parts = [self._idmap_cache]
        return self._idmap_cache

    @property
    def item_ids(self) -> list[str]:
        """Item ids in row order; position = the item's integer code."""
        return list(self._item_ids)

    @property
    def row_item_codes(self) -> np.ndarray:
        """Integer item code of every row (index into `item_ids`), for vectorised voting."""
        return self._row_item

    @property
    def row_segments(self) -> np.ndarray:
        """Segment number of every row."""
        return self._row_segment

    def item_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per item code: (first row, first segment number, number of segments)."""
        return (np.asarray(self._item_start, np.int64), np.asarray(self._item_first_segment, np.int64),
                np.asarray(self._item_count, np.int64))

    def has_item(self, item_id: str) -> bool:
        return item_id in self._item_code

    def item_rows(self, item_id: str) -> slice:
        """Rows of one item (contiguous, in segment order)."""
        code = self._item_code[item_id]
        start = self._item_start[code]
        return slice(start, start + self._item_count[code])

    def item_vectors(self, item_id: str) -> np.ndarray:
        """Full-precision vectors of one item, row i = its i-th segment."""
        rows = self.item_rows(item_id)
        return self.vectors_at(np.arange(rows.start, rows.stop))

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """Full-precision vectors of the given rows (any order), as an in-memory array."""
        rows = np.asarray(rows, np.int64)
        if len(self._chunks) == 1:
            return np.asarray(self._chunks[0][rows], dtype=np.float32)
        out = np.empty((len(rows), self.dim), np.float32)
        if len(rows) == 0:
            return out
        starts = np.asarray(self._chunk_starts, np.int64)
        which = np.searchsorted(starts, rows, side="right") - 1
        for c in np.unique(which):
            sel = which == c
            out[sel] = self._chunks[c][rows[sel] - starts[c]]
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine similarities and rows (n, k); rows are -1 where fewer than k exist."""
        return search_similarity(self.index, queries, k)

    def bytes_per_segment(self, include_vectors: bool = False) -> float:
        """Memory per indexed segment of the FAISS index (flat: 4*dim; IVF-PQ: code + 8-byte id).

        The float32 rescoring store adds 4*dim bytes on disk (memory-mapped, paged in only for
        rescored candidates); `include_vectors=True` counts it too.
        """
        if self.kind == "ivfpq":
            ivf = faiss.extract_index_ivf(self.index)
            per = float(ivf.code_size + 8)
        else:
            per = float(self.index.code_size)
        return per + (4.0 * self.dim if include_vectors else 0.0)

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write index.faiss, idmap.parquet, vectors.npy and (last) index.json.

        Each file goes to a temp name and is renamed, so a killed save never leaves a half
        file; index.json, written last, records ntotal so `load` detects a mixed directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        target = out / INDEX_FILE
        tmp = _tmp_name(target)
        faiss.write_index(self.index, str(tmp))
        _replace_atomically(tmp, target)

        target = out / IDMAP_FILE
        tmp = _tmp_name(target)
        self.idmap.to_parquet(tmp, index=False)
        _replace_atomically(tmp, target)

        target = out / VECTORS_FILE
        if not self._is_store_file(target):
            tmp = _tmp_name(target)
            store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.ntotal, self.dim))
            for start, chunk in zip(self._chunk_starts, self._chunks):
                store[start:start + len(chunk)] = chunk
            store.flush()
            del store
            _replace_atomically(tmp, target)

        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "n_items": len(self._item_ids),
            "metric": "cosine (inner product of unit vectors)",
            "faiss_metric": "l2" if self.index.metric_type == faiss.METRIC_L2 else "inner_product",
            "bytes_per_segment": self.bytes_per_segment(),
            "params": self.params,
        }
        target = out / META_FILE
        tmp = _tmp_name(target)
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        _replace_atomically(tmp, target)
        return out

    def _is_store_file(self, target: Path) -> bool:
        """True when the whole store is already a memmap of `target` (nothing to rewrite)."""
        if len(self._chunks) != 1 or not isinstance(self._chunks[0], np.memmap):
            return False
        src = self._chunks[0].filename
        return src is not None and target.exists() and Path(src).resolve() == target.resolve()

    @classmethod
    def load(cls, directory: str | os.PathLike[str], mmap: bool = True) -> "SegmentIndex":
        """Read a saved index; the vector store is memory-mapped unless `mmap=False`."""
        src = Path(directory)
        meta_path = src / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"no {META_FILE} in {src}: not a saved SegmentIndex (or a save was interrupted)")
        meta = json.loads(meta_path.read_text())
        params = meta["params"]
        # a merged partitioned index keeps its inverted lists in merged.ivfdata next to index.faiss
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR if params.get("ondisk") else 0
        index = faiss.read_index(str(src / INDEX_FILE), flags)
        idmap = pd.read_parquet(src / IDMAP_FILE)
        vectors = np.load(src / VECTORS_FILE, mmap_mode="r" if mmap else None)
        counts = {"index.json": meta["ntotal"], INDEX_FILE: index.ntotal, IDMAP_FILE: len(idmap),
                  VECTORS_FILE: len(vectors)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{src}: files disagree on the number of rows {counts}; rebuild or re-save the index")
        if params.get("kind") == "ivfpq" and params.get("nprobe"):
            faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
        return cls(index, params, idmap=idmap, vectors=vectors)

    def __repr__(self) -> str:
        return (f"SegmentIndex(kind={self.kind!r}, dim={self.dim}, ntotal={self.ntotal}, "
                f"items={len(self._item_ids)})")


def _empty_idmap() -> pd.DataFrame:
    return pd.DataFrame({"item_id": pd.Series([], dtype=object), "segment": pd.Series([], dtype=np.int64),
                         "start_s": pd.Series([], dtype=np.float64)})


def _clean_idmap(rows: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ID_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"id rows lack columns {missing}; need {list(ID_COLUMNS)}")
    return pd.DataFrame({
        "item_id": rows["item_id"].astype(str).to_numpy(dtype=object),
        "segment": rows["segment"].to_numpy(dtype=np.int64),
        "start_s": rows["start_s"].to_numpy(dtype=np.float64),
    })
