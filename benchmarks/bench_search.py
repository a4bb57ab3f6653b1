#!/usr/bin/env python
"""Search latency and recall: exact flat index vs IVF-PQ, at 10^5 and 10^6 database segments.

Database: synthetic 128-d unit vectors with cluster structure (fingerprints of real music are not
uniform on the sphere, and clusters are what make IVF / PQ lose recall): --clusters centres, each
vector = normalise(centre + spread * gaussian). Vectors are grouped into "tracks" of --track-segments
consecutive segments (item id, segment number, start time), exactly as the pipeline indexes them.

Queries: a 5 s excerpt = 9 segments (1 s windows every 0.5 s) = 9 consecutive database vectors of a
random track at a random offset, each with gaussian noise added (--query-noise) and re-normalised, so
every query has one right answer (track, offset). A query is answered by the project's search path,
`search_queries` (FAISS k-NN of each segment, offset voting, exact rescoring; top_k / max_candidates /
rescore from params.yaml).

Reported per database size and index kind:
  build (s)           `SegmentIndex.build` (IVF-PQ: k-means + PQ training + adding every vector)
  bytes/segment       FAISS index memory per segment (IVF-PQ: code + 8-byte id), and with the float32
                      store used for rescoring (memory-mapped from disk in the pipeline)
  median / p90 ms     one query at a time (what a user waiting for an answer sees)
  batch q/s           all queries in one `search_queries` call (throughput of an offline evaluation)
  recall@1            right (track, offset) at rank 1; "agrees with flat" = same answer as exact search
  segment NN@1        share of query segments whose nearest neighbour is the segment they were made from
                      (more sensitive to the IVF-PQ approximation than the voted answer)
Query embedding (encoder on 9 segments) is timed separately, so search + embedding = end-to-end.

Goal (issue): <= 50 ms per 5 s query at 10^6 segments with IVF-PQ (judged on the median).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, percentile, quiet_env, set_threads  # noqa: E402

GOAL_MS = 50.0
GOAL_SIZE = 1_000_000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=str(ROOT / "params.yaml"),
                   help="parameter file: index (nlist, pq_m, pq_nbits, nprobe) and search (top_k, ...) settings")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="database sizes in segments")
    p.add_argument("--kinds", nargs="+", default=["flat", "ivfpq"], choices=["flat", "ivfpq"], help="index kinds")
    p.add_argument("--nprobe", type=int, nargs="+", default=None,
                   help="IVF-PQ nprobe values to measure on the same index (default: fingerprint.index.nprobe)")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: fingerprint.index.nlist)")
    p.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantisers (default: fingerprint.index.pq_m)")
    p.add_argument("--pq-nbits", type=int, default=None, help="bits per PQ code (default: fingerprint.index.pq_nbits)")
    p.add_argument("--queries", type=int, default=300, help="5 s queries per configuration")
    p.add_argument("--query-segments", type=int, default=9, help="segments per query (9 = 5 s at 1 s / 0.5 s hop)")
    p.add_argument("--dim", type=int, default=128, help="vector dimension")
    p.add_argument("--clusters", type=int, default=1000, help="cluster centres of the synthetic database")
    p.add_argument("--spread", type=float, default=0.8, help="within-cluster spread (relative to the unit centre)")
    p.add_argument("--query-noise", type=float, default=1.0, help="noise added to query segments (cos ≈ 1/sqrt(1+n²))")
    p.add_argument("--track-segments", type=int, default=400, help="segments per synthetic track (400 = 200 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-embed", action="store_true", help="skip timing the encoder on one query's segments")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [20_000]
        args.queries = min(args.queries, 20)
        args.clusters = min(args.clusters, 100)
    return args


def synthetic_database(n: int, dim: int, clusters: int, spread: float, rng, chunk: int = 200_000):
    """Unit vectors [n, dim] float32 around `clusters` random unit centres (built in chunks, float32 only)."""
    import numpy as np

    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    scale = np.float32(spread / np.sqrt(dim))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        x = rng.standard_normal((hi - lo, dim), dtype=np.float32) * scale
        x += centres[rng.integers(0, clusters, hi - lo)]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo:hi] = x
    return out


def id_rows(n: int, track_segments: int, hop_s: float):
    import numpy as np
    import pandas as pd

    rows = np.arange(n)
    track = rows // track_segments
    seg = rows % track_segments
    names = np.array([f"t{t:06d}" for t in range(int(track[-1]) + 1)], dtype=object)
    return pd.DataFrame({"item_id": names[track], "segment": seg, "start_s": seg * hop_s})


def make_queries(db, n_queries: int, q_len: int, track_segments: int, noise: float, rng):
    """[(query vectors [q_len, dim], track number, offset)]; the offset keeps the query inside its track."""
    import numpy as np

    n, dim = db.shape
    n_tracks = n // track_segments
    last_len = n - (n_tracks - 1) * track_segments  # the last track may be shorter (or longer) than the others
    out = []
    for _ in range(n_queries):
        t = int(rng.integers(0, n_tracks))
        length = track_segments if t < n_tracks - 1 else last_len
        off = int(rng.integers(0, max(1, length - q_len + 1)))
        v = db[t * track_segments + off: t * track_segments + off + q_len]
        q = v + rng.standard_normal(v.shape, dtype=np.float32) * np.float32(noise / np.sqrt(dim))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        out.append((np.ascontiguousarray(q, np.float32), t, off))
    return out


def measure(index, queries, sp, track_segments: int) -> dict:
    from avmatch.fingerprint.search import search_queries

    mats = [q for q, _, _ in queries]
    for q in mats[:3]:  # warm-up
        search_queries(index, [q], sp.top_k, sp.max_candidates, sp.rescore)
    lat, answers = [], []
    for q in mats:
        t0 = time.perf_counter()
        m = search_queries(index, [q], sp.top_k, sp.max_candidates, sp.rescore)[0]
        lat.append(1000 * (time.perf_counter() - t0))
        answers.append(m)
    batch_ts = []
    for _ in range(2):
        t0 = time.perf_counter()
        search_queries(index, mats, sp.top_k, sp.max_candidates, sp.rescore)
        batch_ts.append(time.perf_counter() - t0)
    right = [m.item_id == f"t{t:06d}" and m.offset_segment == off for m, (_, t, off) in zip(answers, queries)]
    # per-segment view, more sensitive to index approximation than the voted answer: is the nearest
    # neighbour of each query segment the database segment it was made from?
    import numpy as np

    _, nn = index.search(np.concatenate(mats), 1)
    truth = np.concatenate([t * track_segments + off + np.arange(len(q)) for q, t, off in queries])
    seg_recall = float(np.mean(nn[:, 0] == truth))
    return {"seg_recall1": seg_recall,"median_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "batch_qps": len(mats) / min(batch_ts),
            "recall1": sum(right) / len(right), "answers": [(m.item_id, m.offset_segment) for m in answers]}


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_env(args.verbose, args.quick)
    rep = Report("search", "Search latency and recall", args)

    import numpy as np

    from avmatch.core.config import load_params
    from avmatch.core.index import SegmentIndex

    threads = set_threads(args.threads)
    rep.refresh_machine()
    params = load_params(args.params)
    ix, sp = params.fingerprint.index, params.fingerprint.search
    nlist = args.nlist or ix.nlist
    pq_m = args.pq_m or ix.pq_m
    pq_nbits = args.pq_nbits or ix.pq_nbits
    nprobes = args.nprobe or [ix.nprobe]
    hop_s = params.fingerprint.audio.hop_s

    rows = []
    for n in args.sizes:
        rng = np.random.default_rng(args.seed)
        t0 = time.perf_counter()
        db = synthetic_database(n, args.dim, args.clusters, args.spread, rng)
        idmap = id_rows(n, args.track_segments, hop_s)
        queries = make_queries(db, args.queries, args.query_segments, args.track_segments, args.query_noise, rng)
        print(f"[bench] {n} segments, {idmap['item_id'].nunique()} tracks, {len(queries)} queries "
              f"(made in {time.perf_counter() - t0:.1f} s)", flush=True)
        flat_answers = None
        for kind in ["flat"] + [k for k in args.kinds if k != "flat"]:  # flat first: it is the reference
            t0 = time.perf_counter()
            seg = SegmentIndex.build(db, idmap, kind, nlist=nlist, pq_m=pq_m, pq_nbits=pq_nbits, nprobe=nprobes[0])
            build_s = time.perf_counter() - t0
            settings = [None] if seg.kind == "flat" else nprobes
            for nprobe in settings:
                if nprobe is not None:
                    import faiss

                    faiss.extract_index_ivf(seg.index).nprobe = int(nprobe)
                res = measure(seg, queries, sp, args.track_segments)
                if kind == "flat":
                    flat_answers = res["answers"]
                agree = (sum(a == b for a, b in zip(res["answers"], flat_answers)) / len(queries)
                         if flat_answers is not None else None)
                label = "flat" if seg.kind == "flat" else (
                    f"ivfpq nlist={seg.params['nlist']} m={seg.params['pq_m']}×{seg.params['pq_nbits']}b "
                    f"nprobe={nprobe}")
                if kind not in args.kinds:
                    label += " (reference only)"
                row = {"segments": n, "index": label, "build_s": build_s,
                       "bytes": seg.bytes_per_segment(), "bytes_store": seg.bytes_per_segment(include_vectors=True),
                       "median_ms": res["median_ms"], "p90_ms": res["p90_ms"], "batch_qps": res["batch_qps"],
                       "recall1": res["recall1"], "seg_recall1": res["seg_recall1"], "agree": agree}
                rows.append(row)
                print(f"[bench]   {label}: build {build_s:.1f} s, median {res['median_ms']:.1f} ms, "
                      f"p90 {res['p90_ms']:.1f} ms, recall@1 {res['recall1']:.3f}", flush=True)
            del seg
            gc.collect()
        del db, idmap, queries
        gc.collect()

    embed_row = None
    if not args.no_embed:
        import torch

        from avmatch.fingerprint.model import FingerprintEncoder, embed_segments

        fp = params.fingerprint
        model = FingerprintEncoder.from_params(fp.model, fp.logmel, fp.audio).eval()
        x = torch.randn(args.query_segments, model.seg_len)
        for _ in range(3):
            embed_segments(model, x, 256, "cpu")
        ts = []
        for _ in range(5 if args.quick else 30):
            t0 = time.perf_counter()
            embed_segments(model, x, 256, "cpu")
            ts.append(1000 * (time.perf_counter() - t0))
        embed_row = {"median_ms": percentile(ts, 50), "p90_ms": percentile(ts, 90)}

    headers = {"segments": "database segments", "index": "index", "build_s": "build (s)",
               "bytes": "bytes/segment (index)", "bytes_store": "+ rescoring store",
               "median_ms": "median ms/query", "p90_ms": "p90 ms/query", "batch_qps": "batch queries/s",
               "recall1": "recall@1 (track, offset)", "seg_recall1": "segment NN@1", "agree": "agrees with flat"}
    rep.add(f"Synthetic clustered unit vectors ({args.dim}-d, {args.clusters} clusters, spread {args.spread:g}), "
            f"tracks of {args.track_segments} segments; {args.queries} queries of {args.query_segments} segments "
            f"(noise {args.query_noise:g}, cos to the true segment ≈ {1 / np.sqrt(1 + args.query_noise ** 2):.2f}); "
            f"search top_k={sp.top_k}, max_candidates={sp.max_candidates}, rescore={sp.rescore}; "
            f"{threads} FAISS/torch threads.")
    rep.table(rows, list(headers), headers)
    if embed_row is not None:
        rep.add(f"Embedding one query's {args.query_segments} segments with the encoder (untrained, same "
                f"architecture): median {embed_row['median_ms']:.1f} ms, p90 {embed_row['p90_ms']:.1f} ms — add it to "
                "the search latency for the end-to-end time of a query given as audio.")
    goal_rows = [r for r in rows if r["segments"] == GOAL_SIZE and r["index"].startswith("ivfpq")]
    if goal_rows:
        best = min(goal_rows, key=lambda r: r["median_ms"])
        ok = best["median_ms"] <= GOAL_MS
        rep.add(f"**Goal: ≤ {GOAL_MS:.0f} ms per 5 s query at 10^6 segments with IVF-PQ.** Median "
                f"{best['median_ms']:.1f} ms (p90 {best['p90_ms']:.1f} ms) with {best['index']}, recall@1 "
                f"{best['recall1']:.3f} → {'**met**' if ok else '**not met**'}.")
    else:
        rep.add(f"Goal (≤ {GOAL_MS:.0f} ms at 10^6 segments with IVF-PQ): not measured in this run (sizes "
                f"{args.sizes}, kinds {args.kinds}).")
    rep.data = {"rows": rows, "embed": embed_row, "threads": threads}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
