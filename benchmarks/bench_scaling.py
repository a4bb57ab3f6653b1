#!/usr/bin/env python
"""Scaling of distributed extraction: the flow's extract stage on a Dask cluster of 1 vs 2 workers.

Runs the real path (`flows.<pipeline>` → partitions as Prefect tasks on a `DaskTaskRunner` local
cluster, each partition writing its own shards) in scratch copies of a project where the pipeline has
run (the corpus, decoded audio and trained encoder are linked, the shards folder is new), against a
Prefect server started here on loopback. Each worker has one thread, so k workers use k cores.
Reported: wall time, audio hours per wall hour, speed-up over one worker; the shards of every run
are checked to hold the same items and segments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import ROOT, Report, add_common_args, quiet_env  # noqa: E402

LINKED = ("data/fingerprint/corpus", "data/fingerprint/pcm", "data/fingerprint/features",
          "data/fingerprint/manifest", "models")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=str(ROOT), help="project where the fingerprint pipeline has run")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    add_common_args(p, threads=False)
    return p.parse_args(argv)


def scratch_project(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in ("params.yaml", "dvc.yaml"):
        shutil.copy2(src / f, dest / f)
    for d in ("pipelines", "flows", "tasks"):
        shutil.copytree(src / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    for rel in LINKED:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src / rel, dest / rel)
    return dest


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    src = Path(args.project).resolve()
    if not (src / "models/fingerprint/encoder.pt").exists():
        print(f"[bench] SKIPPED: no trained encoder in {src} (run make demo first)", flush=True)
        return 0
    import pandas as pd

    from avmatch.core.config import load_params
    from avmatch.core.hashing import file_hash
    from avmatch.core.shards import ShardStore
    from flows.servers import prefect_env, start_prefect

    rep = Report("scaling", "Distributed extraction: 1 vs 2 Dask workers", args)
    params = load_params(src / "params.yaml")
    refs = pd.read_parquet(src / "data/fingerprint/features/refs.parquet")
    queries = pd.read_parquet(src / "data/fingerprint/features/queries.parquet")
    sr = params.fingerprint.audio.sample_rate
    hours = float((refs["n_samples"].sum() + queries["n_samples"].sum()) / sr / 3600)
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    server = start_prefect(src, prefect_home=work / "prefect")
    rows, reads = [], []
    try:
        for k in args.workers:
            proj = scratch_project(src, work / f"w{k}")
            env = {**prefect_env(work / "prefect", server.url), "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
                   "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
            cmd = [sys.executable, "-m", "flows.fingerprint", "--stages", "extract",
                   "-S", f"fingerprint.extract.num_partitions={max(2, k)}",   # one worker gets both partitions
                   "-S", f"orchestration.dask.n_workers={k}", "-S", "common.num_threads=1"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr[-3000:], flush=True)
                return 1
            model = file_hash(src / "models/fingerprint/encoder.pt")
            meta, _ = ShardStore(proj / "data/fingerprint/shards/refs", params.fingerprint.model.dim, model).read()
            reads.append(meta[["item_id", "segment"]].reset_index(drop=True))
            rows.append({"workers": k, "wall_s": wall, "audio_h": hours, "x_realtime": hours * 3600 / wall,
                         "segments": len(meta)})
            print(f"[bench] {rows[-1]}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        r["speedup"] = rows[0]["wall_s"] / r["wall_s"]
    same = all(r.equals(reads[0]) for r in reads)
    headers = {"workers": "Dask workers (1 thread each)", "wall_s": "wall (s)", "audio_h": "audio (h)",
               "x_realtime": "× real time", "segments": "ref segments", "speedup": "speed-up"}
    rep.add(f"Extract stage of the fingerprint flow on `{src.name}` (references + queries, {hours:.2f} h of audio, "
            f"from the decoded-audio cache), 2 partitions, including Dask cluster and worker start-up; "
            f"every run wrote the same items and segments: {'yes' if same else 'NO'}.")
    rep.table(rows, list(headers), headers)
    rep.data = {"rows": rows, "identical": same}
    rep.finish()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
