"""Run experts over a corpus's tracks: `experts/<expert>.parquet` (track, vector) and
`experts/missing.parquet` (track, expert, reason, input).

Resumable: a track already in an expert's file, or already recorded as missing for it, is not done
again. Vectors are written in small part files (each written under a temporary name and renamed, so
a killed run leaves whole parts only) and merged into `<expert>.parquet` at the end of a run -- or at
the start of the next one when a run was killed. A track that has no vector for an expert is always
a row of missing.parquet with the reason (no speech, no face, unreadable file named as
`core.failures.failing_input` names it); an expert that cannot be loaded is reported once, its tracks
recorded as missing with that reason (and tried again on the next run), and the other experts run.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from avmatch.core.audio import MediaError
from avmatch.core.failures import failing_input
from avmatch.core.progress import progress
from avmatch.voiceface.experts.base import ExpertLoadError, ExpertUnavailable
from avmatch.voiceface.experts.registry import load_expert
from avmatch.voiceface.vectors import modality_of

log = logging.getLogger(__name__)

MISSING = "missing"
NOT_LOADED = "expert not loaded: "
PARTS = ".parts"
TRACK_ERRORS = (ExpertUnavailable, MediaError, OSError, ValueError, RuntimeError)


def _vector_table(tracks: list[str], vectors: list[np.ndarray]) -> pa.Table:
    return pa.table({"track": pa.array(tracks, pa.string()),
                     "vector": pa.array([np.asarray(v, np.float32) for v in vectors], pa.list_(pa.float32()))})


def _missing_table(rows: list[dict]) -> pa.Table:
    return pa.table({k: pa.array([r[k] for r in rows], pa.string()) for k in ("track", "expert", "reason", "input")})


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _read(path: Path) -> pa.Table | None:
    return pq.read_table(path) if path.exists() else None


def _consolidate(out_dir: Path, name: str, drop_not_loaded: tuple[str, ...] = ()) -> pa.Table | None:
    """Merge `name`'s part files into `<name>.parquet` (first row per track -- or per (track, expert)
    for missing -- wins) and delete the parts."""
    final = out_dir / f"{name}.parquet"
    parts = sorted((out_dir / PARTS / name).glob("part-*.parquet"))
    tables = [t for t in [_read(final)] if t is not None] + [pq.read_table(p) for p in parts]
    if not tables:
        return None
    df = pa.concat_tables(tables, promote_options="default").to_pandas()
    keys = ["track", "expert"] if name == MISSING else ["track"]
    if name == MISSING:
        if "input" not in df:
            df["input"] = ""
        if drop_not_loaded:
            df = df[~(df["reason"].str.startswith(NOT_LOADED) & df["expert"].isin(drop_not_loaded))]
    df = df.drop_duplicates(keys, keep="first").reset_index(drop=True)
    table = (_missing_table(df.to_dict("records")) if name == MISSING
             else _vector_table(df["track"].tolist(), list(df["vector"])))
    if parts or drop_not_loaded or len(df) != sum(t.num_rows for t in tables):
        _write_atomic(table, final)
        for p in parts:
            p.unlink(missing_ok=True)
    return table


def _track_path(path: object, base: Path | None) -> Path | None:
    if not isinstance(path, str) or not path:
        return None                         # a simulated track has no media
    p = Path(path)
    return base / p if base is not None and not p.is_absolute() else p


def _embed_track(loaded: dict, track: str, path: Path | None, todo: list[str]) -> tuple:
    """(track, {expert: vector}, {expert: (reason, input)}, {expert: seconds}) for one track."""
    vecs, fails, seconds = {}, {}, {}
    for name in todo:
        t0 = time.perf_counter()
        try:
            if path is None:
                raise ExpertUnavailable("no media file (a simulated track)")
            vecs[name] = loaded[name].embed(path)
        except TRACK_ERRORS as exc:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            fails[name] = (reason, failing_input(exc, str(path or "")))
        seconds[name] = time.perf_counter() - t0
    return track, vecs, fails, seconds


_WORKER_EXPERTS: dict = {}


def _init_worker(options: dict[str, dict]) -> None:
    import os as _os

    _os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)            # one core per worker: the workers are the parallelism
    except ImportError:
        pass
    _WORKER_EXPERTS.update({n: load_expert(n, o) for n, o in options.items()})


def _worker_track(job: tuple) -> tuple:
    return _embed_track(_WORKER_EXPERTS, *job)


class _Buffer:
    def __init__(self, out_dir: Path, name: str):
        self.folder, self.rows, self.n = out_dir / PARTS / name, [], 0
        self.name = name

    def add(self, row) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        table = (_missing_table(self.rows) if self.name == MISSING
                 else _vector_table([r[0] for r in self.rows], [r[1] for r in self.rows]))
        _write_atomic(table, self.folder / f"part-{os.getpid()}-{time.time_ns()}-{self.n:05d}.parquet")
        self.rows, self.n = [], self.n + 1


def extract_experts(tracks: pd.DataFrame, experts: list[str], out_dir: str | Path, *,
                    options: dict[str, dict] | None = None, root: str | Path | None = None,
                    flush_every: int = 64, desc: str = "experts", workers: int = 1) -> dict:
    """Compute each expert of `experts` for every track of its modality in `tracks` (columns track,
    modality, path; relative paths are under `root`) into `out_dir`.

    Returns {"tracks": n, "load_errors": {expert: reason}, "experts": {expert: {"computed", "already",
    "missing", "seconds"}}}: computed this run, found from an earlier run, without vector (this run),
    and the time spent embedding (summed over workers). `workers` > 1 embeds in that many processes
    (each loads the experts once); the results are written by this process, in track order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = options or {}
    loaded, load_errors = {}, {}
    for name in experts:
        try:
            loaded[name] = load_expert(name, options.get(name, {}))
        except ExpertLoadError as exc:
            load_errors[name] = exc.reason
            log.warning("expert %s not run: %s (the other experts run)", name, exc.reason)
    old_missing = _consolidate(out_dir, MISSING, drop_not_loaded=tuple(experts))
    done: dict[str, set[str]] = {}
    for name in experts:
        table = _consolidate(out_dir, name)
        done[name] = set(table.column("track").to_pylist()) if table is not None else set()
    if old_missing is not None:
        for t, e in zip(old_missing.column("track").to_pylist(), old_missing.column("expert").to_pylist()):
            if e in done:
                done[e].add(t)
    stats = {name: {"computed": 0, "already": 0, "missing": 0, "seconds": 0.0} for name in experts}
    buffers = {name: _Buffer(out_dir, name) for name in [*experts, MISSING]}
    base = Path(root) if root is not None else None
    work = []
    for row in tracks[["track", "modality", "path"]].itertuples(index=False):
        todo = []
        for name in experts:
            if modality_of(name) != row.modality:
                continue
            if row.track in done[name]:
                stats[name]["already"] += 1
            elif name in load_errors:
                buffers[MISSING].add({"track": row.track, "expert": name, "reason": NOT_LOADED + load_errors[name],
                                      "input": ""})
                stats[name]["missing"] += 1
            else:
                todo.append(name)
        if todo:
            work.append((row, todo))
    jobs = [(row.track, _track_path(row.path, base), todo) for row, todo in work]
    pool = None
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: torch and dlib in a forked child of a threaded parent can hang
        pool = ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=({n: options.get(n, {}) for n in loaded},))
        results = pool.map(_worker_track, jobs, chunksize=4)
    else:
        results = (_embed_track(loaded, *job) for job in jobs)
    try:
        for i, (track, vecs, fails, seconds) in enumerate(progress(results, desc, len(jobs), "track")):
            for name, vec in vecs.items():
                buffers[name].add((track, vec))
                stats[name]["computed"] += 1
            for name, (reason, where) in fails.items():
                buffers[MISSING].add({"track": track, "expert": name, "reason": reason, "input": where})
                stats[name]["missing"] += 1
            for name, sec in seconds.items():
                stats[name]["seconds"] += sec
            if (i + 1) % flush_every == 0:
                for b in buffers.values():
                    b.flush()
    finally:
        for b in buffers.values():
            b.flush()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    for name in experts:
        if _consolidate(out_dir, name) is None:          # an expert with no vector yet: an empty file
            _write_atomic(_vector_table([], []), out_dir / f"{name}.parquet")
    if _consolidate(out_dir, MISSING) is None:            # nothing missing: say so with an empty table
        _write_atomic(_missing_table([]), out_dir / f"{MISSING}.parquet")
    for name, s in stats.items():
        if s["missing"]:
            log.info("expert %s: %d track(s) without a vector (reasons in %s)", name, s["missing"],
                     out_dir / f"{MISSING}.parquet")
    return {"tracks": len(tracks), "load_errors": load_errors, "experts": stats}


def read_expert_vectors(out_dir: str | Path, expert: str) -> dict[str, np.ndarray]:
    """{track: vector} of one expert's file (empty when the expert has no file yet)."""
    path = Path(out_dir) / f"{expert}.parquet"
    if not path.exists():
        return {}
    table = pq.read_table(path)
    return {t: np.asarray(v, np.float32) for t, v in zip(table.column("track").to_pylist(),
                                                        table.column("vector").to_pylist())}
