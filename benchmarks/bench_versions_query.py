#!/usr/bin/env python
"""Versions pipeline: query time against 10^4 and 10^5 tracks, and peak memory.

Synthetic collection (random unit vectors; scale, not accuracy, is measured): N tracks x
`--segments` segment embeddings of the model's dimension. A query (a track of the same shape) is
answered as `avmatch versions query` answers it above `faiss_above_tracks`: FAISS (flat inner
product) recalls candidate tracks from the nearest segments of each query segment, then the exact
segment-pair reduction (bpwr-3) ranks the candidates. Reported: median / p95 time per query and the
process's peak RSS after building each collection (each size in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import Report, add_common_args, percentile, quiet_env, set_threads  # noqa: E402

TAG = "BENCH_VERSIONS_QUERY "


def one_size(n_tracks: int, segments: int, dim: int, queries: int, candidates: int, threads: int) -> dict:
    import resource

    import numpy as np
    import pandas as pd
    import torch

    set_threads(threads)
    from avmatch.versions.retrieval import Collection
    from avmatch.versions.segment_pairs import track_distances

    rng = np.random.default_rng(0)
    v = rng.standard_normal((n_tracks * segments, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    meta = pd.DataFrame({"item_id": np.repeat([f"t{i:06d}" for i in range(n_tracks)], segments),
                         "segment": np.tile(np.arange(segments), n_tracks),
                         "start_s": np.tile(np.arange(segments) * 5.0, n_tracks)})
    t0 = time.perf_counter()
    coll = Collection.from_rows(meta, v)
    padded, mask = coll.padded()
    import faiss

    index = faiss.IndexFlatIP(dim)
    index.add(coll.vectors)
    build_s = time.perf_counter() - t0
    times = []
    for q in range(queries):
        qv = v[q * segments:(q + 1) * segments] + 0.05 * rng.standard_normal((segments, dim)).astype(np.float32)
        qv /= np.linalg.norm(qv, axis=1, keepdims=True)
        t1 = time.perf_counter()
        sims, rows = index.search(qv, 64)
        cand = np.unique(coll.track_of_row[rows.ravel()])[:candidates]
        d, _ = track_distances(torch.from_numpy(qv)[None], torch.ones(1, segments, dtype=torch.bool),
                               padded[cand], mask[cand], "bpwr-3")
        times.append(time.perf_counter() - t1)
    return {"tracks": n_tracks, "vectors": len(v), "build_s": build_s, "times": times,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--segments", type=int, default=10, help="segments per track (a 65 s track at 5 s hop)")
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    if args.child is not None:
        r = one_size(args.child, args.segments, 128, args.queries, args.candidates, args.threads)
        print(TAG + json.dumps(r))
        return 0
    sizes = [1000, 5000] if args.quick else args.sizes
    rep = Report("versions_query", "Versions: query time and memory at scale", args)
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--segments", str(args.segments),
                              "--queries", str(3 if args.quick else args.queries), "--candidates",
                              str(args.candidates), "--threads", str(args.threads), "--no-doc"],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(next(line for line in out.splitlines() if line.startswith(TAG))[len(TAG):])
        rows.append({"tracks": n, "segment vectors": r["vectors"], "index build (s)": round(r["build_s"], 2),
                     "median query (ms)": round(1000 * percentile(r["times"], 50), 1),
                     "p95 query (ms)": round(1000 * percentile(r["times"], 95), 1),
                     "peak RSS (MB)": round(r["peak_rss_mb"])})
    rep.refresh_machine()
    rep.add(f"{args.segments} segments x 128-d per track, FAISS flat top-64 per query segment, "
            f"up to {args.candidates} candidate tracks reduced exactly with bpwr-3.")
    rep.table(rows)
    rep.data = {"rows": rows}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
