#!/usr/bin/env python
"""Versions: first stages and re-ranking configurations measured on one Qmax matrix per collection.

For each collection (default `val`, the unseen-rendering validation split, then `test_unseen` and `test`) the
faithful Essentia chain (`versions.baseline`: HPCP, cross-similarity, Qmax) is run on every ordered pair once
(the baseline itself; cached in --cache by track content hash and settings), so any re-ranking of a first
stage's top K can be scored by looking its alignments up: the alignment distances are exactly those the
`versions_rerank` stage computes, and its time per query is the first stage's plus K times the measured time of
one alignment (cross-similarity matrix + Qmax, timed on --time-pairs sampled pairs).

First stages: `encoder` (the trained encoder as the evaluate stage ranks), `ftm2d` (training-free: median 2D
Fourier magnitude of HPCP patches, `avmatch.versions.rerank.ftm2d`, for each --patches length), and `fused`
(encoder + ftm2d distances, z-scored per query and summed). For each: MAP / MR1 and recall@K (the share of a
query's versions inside its top K), then re-ranked with the alignment alone and fused with the first stage
(`fuse_scores`, rank or zscore, each --weights). Choose on `val`; read the others as the held-out check.

Needs the versions pipeline's features (and for `encoder` a trained encoder and extract shards).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hpcp_cached(params, paths, items, cache: Path):
    """HPCP of each item: the hpcp stage's where it stored it, else computed once into the cache."""
    import numpy as np

    from avmatch.core.audio import decode_audio
    from avmatch.core.progress import progress
    from avmatch.versions.qmax_baseline import hpcp

    hp = params.versions.baseline.hpcp
    out, t_total = [], 0.0
    for row in progress(items.itertuples(), desc="HPCP", total=len(items), unit="track"):
        stage = paths.hpcp / f"{row.content_hash}.npy"
        f = cache / "hpcp" / f"{row.content_hash}_{_key(hp.model_dump())}.npy"
        if stage.exists():
            out.append(np.load(stage))
            continue
        if f.exists():
            out.append(np.load(f))
            continue
        t = time.perf_counter()
        c = hpcp(decode_audio(row.path, hp.sample_rate), hp.sample_rate, hp.frame_size, hp.hop_size, hp.pool)
        t_total += time.perf_counter() - t
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, c)
        out.append(c)
    return out


def qmax_matrix(params, items, chroma, cache: Path, split: str):
    """[N, N] Qmax distances (row queries column), all ordered pairs, and the seconds per query it took."""
    import numpy as np

    from avmatch.core.progress import progress
    from pipelines.versions.qmax_collections import qmax_scorer

    key = _key(list(items["content_hash"]), params.versions.baseline.model_dump())
    f, meta = cache / f"qmax_{split}_{key}.npy", cache / f"qmax_{split}_{key}.json"
    if f.exists():
        return np.load(f), json.loads(meta.read_text())["seconds_per_query"]
    scorer = qmax_scorer(params)
    n = len(items)
    d = np.full((n, n), np.inf)
    t0 = time.perf_counter()
    for i in progress(range(n), desc=f"Qmax {split}", total=n, unit="query"):
        for j in range(i + 1, n):
            d[i, j], d[j, i] = scorer.distances(chroma[i], chroma[j])
    s = (time.perf_counter() - t0) / n
    np.save(f, d)
    meta.write_text(json.dumps({"seconds_per_query": s, "tracks": n}))
    return d, s


def ms_per_alignment(params, chroma, n_pairs: int, seed: int) -> float:
    """One re-rank alignment as the stage runs it (its own cross-similarity matrix + Qmax), timed on sampled pairs."""
    import numpy as np

    from pipelines.versions.qmax_collections import qmax_scorer

    scorer = qmax_scorer(params)
    rng = np.random.default_rng(seed)
    pairs = [tuple(rng.choice(len(chroma), 2, replace=False)) for _ in range(n_pairs)]
    t = time.perf_counter()
    for a, b in pairs:
        scorer.distance(chroma[a], chroma[b])
    return 1000 * (time.perf_counter() - t) / n_pairs


def coarse_qmax(params, chroma, pool: int, stack: int):
    """All-pairs Qmax on the HPCP averaged by `pool` more frames, `stack` frames stacked: ([N, N], ms per query)."""
    import numpy as np

    from avmatch.versions.qmax_baseline import QmaxScorer, QmaxSettings, pool_frames

    q = params.versions.baseline.qmax
    scorer = QmaxScorer(QmaxSettings(stack, q.binarize_percentile, q.oti, q.dis_onset, q.dis_extension,
                                     q.alignment, q.distance))
    c = [pool_frames(x, pool) for x in chroma]
    n = len(c)
    d = np.full((n, n), np.inf)
    t = time.perf_counter()
    for i in range(n):
        for j in range(n):
            if i != j:
                d[i, j] = scorer.distance(c[i], c[j])
    return d, 1000 * (time.perf_counter() - t) / n


def recall_at(dist, cliques, k: int) -> float:
    import numpy as np

    c = np.asarray(cliques, dtype=object)
    rel = (c[:, None] == c[None]) & ~np.eye(len(c), dtype=bool)
    q = rel.sum(1) > 0
    r = []
    for i in np.flatnonzero(q):
        cols = np.flatnonzero(np.isfinite(dist[i]) & (np.arange(len(c)) != i))
        top = cols[np.argsort(dist[i, cols], kind="stable")][:k]
        r.append(rel[i, top].sum() / rel[i].sum())
    return float(np.mean(r))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (features and encoder inside)")
    p.add_argument("--collections", nargs="+", default=["val", "test_unseen", "test"])
    p.add_argument("--cache", default=None, help="HPCP and Qmax matrices (default $AVMATCH_CACHE/bench_rerank)")
    p.add_argument("--ks", nargs="+", type=int, default=[5, 10, 15, 20, 25, 30, 40, 50])
    p.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--patches", nargs="*", type=int, default=[25, 50, 75])
    p.add_argument("--fuse-first", nargs="+", type=float, default=[0.5], help="ftm2d weight in the fused first stage")
    p.add_argument("--coarse", nargs="*", default=["3x3", "4x3"], help="coarse Qmax first stages, POOLxSTACK")
    p.add_argument("--no-encoder", action="store_true")
    p.add_argument("--time-pairs", type=int, default=60)
    p.add_argument("--out", default=None, help="write every row as JSON lines here")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import numpy as np

    from avmatch.core.config import load_params
    from avmatch.core.debian import cache_root
    from avmatch.versions.rerank import ftm2d, rerank_distances, vector_distances, zscore_rows
    from pipelines.versions.evaluation import evaluate_track_distances
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.shared import ok_items

    root = Path(args.project).resolve()
    params = load_params(root / "params.yaml")
    paths = VersionsPaths.from_params(params, root)
    cache = Path(args.cache) if args.cache else cache_root() / "bench_rerank"
    cache.mkdir(parents=True, exist_ok=True)
    ev, seed = params.versions.evaluate, params.common.seed
    model = device = None
    if not args.no_encoder:
        from avmatch.core.device import resolve_device
        from avmatch.versions.model import load_encoder

        device = resolve_device("cpu")
        model, _ = load_encoder(paths.encoder, device)
    rep = Report("versions_rerank", "Versions: first stages and re-ranking", args)
    rep.refresh_machine()
    rows = []
    out = open(args.out, "a") if args.out else None

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    for split in args.collections:
        items = ok_items(paths, (split,))
        if args.quick:
            items = items.head(16)
        firsts: dict[str, tuple[np.ndarray, float]] = {}
        if model is not None:
            from avmatch.versions.retrieval import Collection, track_distance_matrix
            from pipelines.versions.rerank import _embeddings

            meta, vecs = _embeddings(params, paths, model, device, items)
            coll = Collection.from_rows(meta, vecs)
            items = items.set_index("id").loc[coll.track_ids].reset_index()
            t = time.perf_counter()
            enc = track_distance_matrix(coll, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates)
            firsts["encoder"] = (enc, 1000 * (time.perf_counter() - t) / len(items))
        n = len(items)
        cliques = list(items["label"])
        chroma = hpcp_cached(params, paths, items, cache)
        Q, base_s = qmax_matrix(params, items, chroma, cache, split)
        ms_al = ms_per_alignment(params, chroma, args.time_pairs, seed)
        res = evaluate_track_distances(Q, cliques, ev.bootstrap, seed)
        emit({"collection": split, "system": "baseline (Qmax all pairs)", "first": "-", "K": n - 1, "fusion": "-",
              "w": 0.0, "MAP": res["metrics"]["MAP"], "CI": res["ci95"]["MAP"], "MR1": res["metrics"]["MR1"],
              "NAR": res["metrics"].get("NAR"), "ms_per_query": 1000 * base_s, "ms_per_alignment": ms_al,
              "tracks": n, "queries": res["n_queries"]})
        for patch in args.patches:
            t = time.perf_counter()
            v = np.stack([ftm2d(c, patch) for c in chroma])
            feat_ms = 1000 * (time.perf_counter() - t) / n
            t = time.perf_counter()
            d = vector_distances(v)
            firsts[f"ftm2d-{patch}"] = (d, 1000 * (time.perf_counter() - t) / n)
            print(f"ftm2d-{patch}: {feat_ms:.2f} ms per track (feature)", flush=True)
        for pool, stack in (tuple(map(int, c.split("x"))) for c in args.coarse):
            firsts[f"qmax-coarse-p{pool}s{stack}"] = coarse_qmax(params, chroma, pool, stack)
        if "encoder" in firsts:
            for other in [f for f in firsts if f != "encoder"]:
                for a in args.fuse_first:
                    d = (1 - a) * zscore_rows(firsts["encoder"][0]) + a * zscore_rows(firsts[other][0])
                    firsts[f"encoder+{other} a={a}"] = (d, firsts["encoder"][1] + firsts[other][1])
        for name, (d, ms) in firsts.items():
            r = evaluate_track_distances(d, cliques, ev.bootstrap, seed)
            emit({"collection": split, "system": "first stage alone", "first": name, "K": 0, "fusion": "-", "w": 1.0,
                  "MAP": r["metrics"]["MAP"], "CI": r["ci95"]["MAP"], "MR1": r["metrics"]["MR1"],
                  "NAR": r["metrics"].get("NAR"), "ms_per_query": ms,
                  "recall": {k: round(recall_at(d, cliques, k), 3) for k in args.ks}})
            for k in args.ks:
                if k >= n - 1 and k != args.ks[0]:
                    continue
                for fusion in ("rank", "zscore"):
                    for w in args.weights:
                        if w == 0 and fusion == "zscore":
                            continue
                        rd = rerank_distances(d, k, lambda q, j: Q[q, j], weight=w, fusion=fusion)
                        r = evaluate_track_distances(rd, cliques, ev.bootstrap, seed)
                        emit({"collection": split, "system": "rerank", "first": name, "K": min(k, n - 1),
                              "fusion": fusion if w else "-", "w": w, "MAP": r["metrics"]["MAP"],
                              "CI": r["ci95"]["MAP"], "MR1": r["metrics"]["MR1"], "NAR": r["metrics"].get("NAR"),
                              "ms_per_query": ms + min(k, n - 1) * ms_al})
    if out:
        out.close()
    rep.table([{k: (f"[{v[0]:.3f}, {v[1]:.3f}]" if k == "CI" else v) for k, v in r.items() if k != "recall"}
               for r in rows])
    print(rep.finish())
    return 0


if __name__ == "__main__":
    sys.exit(main())
