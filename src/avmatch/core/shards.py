"""Embedding shards: Parquet files of (item, segment, time span, vector), one file per N items.

A shard is written under a temporary name and renamed, so a killed run never leaves half a shard.
Finished (item, content hash) pairs are skipped on rerun (resume) and new or changed items go to
new shards (incremental update); readers keep, for each item, only the rows whose content hash
matches the current manifest, so a changed or deleted file never returns stale vectors.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SHARD_RE = re.compile(r"^part-(\d{3})-(\d{6})\.parquet$")
META_FILE = "_store.json"


def _schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("item_id", pa.string()),
        ("content_hash", pa.string()),
        ("segment", pa.int32()),
        ("start_s", pa.float32()),
        ("end_s", pa.float32()),
        ("vector", pa.list_(pa.float32(), dim)),
    ])


class StoreMismatch(RuntimeError):
    """The shards on disk were made by another model or with another dimension."""


class UnreadableShard(OSError):
    """A shard file that cannot be read (truncated, overwritten): `path` names it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: unreadable shard ({reason})")
        self.path = Path(path)


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One shard's table; a damaged file is `UnreadableShard` naming it, not a bare Arrow error."""
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableShard(path, f"{type(exc).__name__}: {exc}") from None


class ShardStore:
    """A directory of shards produced by one model (identified by `model_hash`)."""

    def __init__(self, root: str | Path, dim: int, model_hash: str, reset_on_mismatch: bool = False):
        self.root = Path(root)
        self.dim = dim
        self.model_hash = model_hash
        meta_path = self.root / META_FILE
        # Partitions of one extraction open the store at the same time (Dask workers): the check,
        # reset and meta write happen under a lock beside the folder, so one resets, the rest reuse.
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f".{self.root.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                if meta.get("dim") != dim or meta.get("model_hash") != model_hash:
                    if not reset_on_mismatch:
                        raise StoreMismatch(
                            f"{self.root}: shards were made by model {meta.get('model_hash')} (dim {meta.get('dim')}), "
                            f"not {model_hash} (dim {dim}); delete the folder or extract into another one")
                    shutil.rmtree(self.root)
            self.root.mkdir(parents=True, exist_ok=True)
            if not meta_path.exists():
                tmp = self.root / f"{META_FILE}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps({"dim": dim, "model_hash": model_hash}))
                os.replace(tmp, meta_path)
        for stale in self.root.glob("*.tmp"):
            if not _writer_alive(stale):
                stale.unlink(missing_ok=True)  # leftovers of a killed writer; live siblings keep theirs

    # ------------------------------------------------------------ listing
    def shard_paths(self) -> list[Path]:
        found = []
        for p in self.root.iterdir():
            m = SHARD_RE.match(p.name)
            if m:
                found.append((int(m.group(2)), int(m.group(1)), p))
        return [p for _, _, p in sorted(found)]

    def done_keys(self) -> set[tuple[str, str]]:
        keys: set[tuple[str, str]] = set()
        for p in self.shard_paths():
            t = read_shard(p, columns=["item_id", "content_hash"])
            keys.update(zip(t.column("item_id").to_pylist(), t.column("content_hash").to_pylist()))
        return keys

    def writer(self, partition: int = 0, shard_items: int = 32) -> "ShardWriter":
        seqs = [int(SHARD_RE.match(p.name).group(2)) for p in self.shard_paths()
                if int(SHARD_RE.match(p.name).group(1)) == partition]
        return ShardWriter(self, partition, shard_items, next_seq=(max(seqs) + 1) if seqs else 0)

    # ------------------------------------------------------------ reading
    def read(self, current: Mapping[str, str] | None = None, partition: int | None = None,
             num_partitions: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
        """(rows without vectors, float32 vectors [n, dim]); `current` maps item_id -> content_hash to keep.

        With `partition`, only items that `partition_of(item_id, num_partitions)` assigns to it
        (whichever shard holds them), so a large store can be indexed one partition at a time.
        """
        metas, vecs = [], []
        for p in self.shard_paths():
            if partition is not None:
                ids = read_shard(p, columns=["item_id"]).column("item_id").to_pylist()
                if not any(partition_of(i, num_partitions) == partition for i in set(ids)):
                    continue
            t = read_shard(p)
            meta = t.drop(["vector"]).to_pandas()
            flat = t.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
            v = np.asarray(flat, dtype=np.float32).reshape(-1, self.dim)
            keep = np.ones(len(meta), bool)
            if current is not None:
                keep &= np.array([current.get(i) == h for i, h in zip(meta["item_id"], meta["content_hash"])], bool)
            if partition is not None:
                keep &= np.array([partition_of(i, num_partitions) == partition for i in meta["item_id"]], bool)
            if not keep.all():
                meta, v = meta[keep], v[keep]
            metas.append(meta)
            vecs.append(v)
        if not metas:
            return pd.DataFrame(columns=["item_id", "content_hash", "segment", "start_s", "end_s"]), np.zeros((0, self.dim), np.float32)
        meta = pd.concat(metas, ignore_index=True)
        vectors = np.concatenate(vecs)
        dup = meta.duplicated(["item_id", "content_hash", "segment"], keep="first").to_numpy()
        if dup.any():
            meta, vectors = meta[~dup].reset_index(drop=True), vectors[~dup]
        order = np.lexsort((meta["segment"].to_numpy(), meta["item_id"].to_numpy()))
        return meta.iloc[order].reset_index(drop=True), np.ascontiguousarray(vectors[order])


@dataclass
class ShardWriter:
    store: ShardStore
    partition: int
    shard_items: int
    next_seq: int
    _buffer: list[pa.Table] = field(default_factory=list)
    _n_items: int = 0
    written: list[Path] = field(default_factory=list)

    def add_item(self, item_id: str, content_hash: str, vectors: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.store.dim:
            raise ValueError(f"{item_id}: vectors must be [n, {self.store.dim}], got {vectors.shape}")
        n = len(vectors)
        table = pa.table({
            "item_id": pa.array([item_id] * n, pa.string()),
            "content_hash": pa.array([content_hash] * n, pa.string()),
            "segment": pa.array(np.arange(n, dtype=np.int32)),
            "start_s": pa.array(np.asarray(starts, np.float32)),
            "end_s": pa.array(np.asarray(ends, np.float32)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.store.dim),
        }, schema=_schema(self.store.dim))
        self._buffer.append(table)
        self._n_items += 1
        if self._n_items >= self.shard_items:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        name = f"part-{self.partition:03d}-{self.next_seq:06d}.parquet"
        final = self.store.root / name
        tmp = self.store.root / (name + f".{os.getpid()}.tmp")
        pq.write_table(pa.concat_tables(self._buffer), tmp)
        os.replace(tmp, final)
        self.written.append(final)
        self.next_seq += 1
        self._buffer, self._n_items = [], 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        # on error the partial buffer is dropped: those items are redone on the next run


def _writer_alive(tmp: Path) -> bool:
    """Temp files are named `<final>.<pid>.tmp`; one is stale when its writer process is gone."""
    try:
        pid = int(tmp.name.rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partition_of(item_id: str, num_partitions: int) -> int:
    """Stable assignment of an item to a partition (independent of Python's hash seed)."""
    import zlib

    return zlib.crc32(item_id.encode()) % num_partitions
