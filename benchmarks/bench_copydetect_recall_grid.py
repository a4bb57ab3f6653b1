#!/usr/bin/env python
"""Candidate recall settings under geometric verification (issue 17, session 12).

Now that verification (`avmatch.copydetect.verify`, the library's defaults) sinks false candidates cheaply, does
a wider candidate recall pay? For each set (val / test halves of the unseen-source collection, demo), the
pipeline's matches (--root's params.yaml and encoder, read only, as bench_copydetect_verify.py) for every
setting of --k × --max-pairs × --max-segments, each verified and re-scored with the library's `Verifier.verify`.
Reports matching / pairwise µAP with 95 % bootstrap intervals over queries, the paired difference of each
setting against the first one (the current default when listed first), pairs and matches per query, and CPU
per query (recall + localisation, and verification; keypoint extraction is the same for every setting and
reported apart). Settings giving the same candidate pairs are computed once. --choose picks the setting with
the best matching µAP on the first set (ties: the first listed).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from _report import Report, add_common_args, quiet_env, set_threads  # noqa: E402
from bench_copydetect_unseen import (  # noqa: E402
    MEASURES,
    describe_collection,
    paired_difference,
    pipeline_describer,
    score_matches,
)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="project whose params.yaml, encoder and demo corpus are used")
    p.add_argument("--collections", default=str(ROOT / "data/copydetect/unseen_split"))
    p.add_argument("--sets", default="val", help="comma-separated, of val, test, demo")
    p.add_argument("--seed", type=int, default=11, help="collection seed")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--k", default="20,40,80", help="comma-separated k (nearest reference frames per query frame)")
    p.add_argument("--max-pairs", default="25,50", help="comma-separated candidate pairs per query")
    p.add_argument("--max-segments", default="3", help="comma-separated segments per pair")
    p.add_argument("--choose", action="store_true", help="report the best setting on the first set")
    add_common_args(p)
    args = p.parse_args(argv)
    args.no_doc = args.no_doc or args.doc is None
    quiet_env(args.verbose, args.quick)
    threads = set_threads(args.threads)
    import dataclasses

    import cv2
    import numpy as np

    from avmatch.copydetect.candidates import descriptor_submission, find_candidates, reference_index
    from avmatch.copydetect.corpus import build_unseen_collection
    from avmatch.copydetect.localisation import localise_pairs
    from avmatch.copydetect.metrics import read_matches
    from avmatch.copydetect.verify import Verifier, VerifyParams
    from avmatch.core.config import load_params
    from pipelines.copydetect.evaluate import _describe_sets
    from pipelines.copydetect.paths import CopydetectPaths
    from pipelines.copydetect.shared import noise_matrix

    cv2.setNumThreads(max(1, threads))
    rep = Report("copydetect_recall_grid", "Copy detection: candidate recall under verification", args)
    rep.refresh_machine()
    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    cd = params.copydetect
    vp = VerifyParams()
    _, embed = pipeline_describer(root, cd.extract.batch_size)
    settings = list(itertools.product(ints(args.k), ints(args.max_pairs), ints(args.max_segments)))
    folder = Path(args.collections)
    n_boot = 10 if args.quick else args.bootstrap
    results: dict = {}
    chosen = None
    for s in args.sets.split(","):
        if s == "demo":
            paths = CopydetectPaths.from_params(params, root)
            gt = read_matches(paths.ground_truth, is_gt=True)
            q, r, n = _describe_sets(paths, embed)
            vdir = paths.corpus
        else:
            if not (folder / s / "matching_ground_truth.csv").exists():
                build_unseen_collection(folder / s, seed=args.seed, split=s)
            gt = read_matches(folder / s / "matching_ground_truth.csv", is_gt=True)
            q, r, n = describe_collection(folder / s, embed, cd.frames.fps, cd.frames.size)
            vdir = folder / s
        if args.quick:
            q = q[:12]
            gt = [m for m in gt if m.query_id in {x.video_id for x in q}]
        noise = noise_matrix(n, r[0].features.shape[1])
        qdir, rdir = vdir / cd.corpus.query_dir, vdir / cd.corpus.ref_dir
        ver = Verifier(lambda i: qdir / f"{i}.mp4", lambda i: rdir / f"{i}.mp4", vp, max_videos=10_000)
        t0 = time.process_time()
        for x in q:
            ver.keypoints("query", x.video_id)
        for x in r:
            ver.keypoints("ref", x.video_id)
        t_kp = time.process_time() - t0
        index = reference_index(r)
        qa, ra = descriptor_submission(q, r, noise, cd.candidates.beta)
        qmap, rmap = {x.video_id: x for x in q}, {x.video_id: x for x in r}
        done: dict = {}      # (pair set, max_segments) -> result
        memo: dict = {}      # match -> (verified match, cpu s): verification is deterministic per match
        rows = {}
        for k, mp, ms in settings:
            t0 = time.process_time()
            cands = find_candidates(index, q, noise, cd.candidates.beta, k, mp)
            key = (tuple(zip(cands.pairs["query_id"], cands.pairs["ref_id"])), ms)
            if key in done:
                rows[f"{k},{mp},{ms}"] = done[key]
                continue
            loc = {**cd.localise.model_dump(), "max_segments": ms}
            matches = localise_pairs(cands.pairs, qmap, rmap, cands.bias, **loc)
            t_loc = time.process_time() - t0
            verified, t_ver = [], 0.0
            for m in matches:
                if m not in memo:
                    t1 = time.process_time()
                    vm = ver.verify([m])[0][0]
                    memo[m] = (vm, time.process_time() - t1)
                verified.append(memo[m][0])
                t_ver += memo[m][1]
            sc = score_matches(gt, verified, qa, ra, n_boot)
            res = {"k": k, "max_pairs": mp, "max_segments": ms, "pairs": len(key[0]), "matches": len(matches),
                   "scores": sc, "recall_localise_cpu_s_per_query": t_loc / len(q),
                   "verify_cpu_s_per_query": t_ver / len(q)}
            done[key] = rows[f"{k},{mp},{ms}"] = res
            print(f"[grid] {s} k {k} max_pairs {mp} max_segments {ms}: {len(key[0])} pairs, {len(matches)} matches, "
                  f"matching {sc['matching_uap']:.3f}, pairwise {sc['pairwise_uap']:.3f}, cpu/query "
                  f"{t_loc / len(q):.3f} + {t_ver / len(q):.3f} s", flush=True)
        first = rows[f"{settings[0][0]},{settings[0][1]},{settings[0][2]}"]
        for res in rows.values():
            if res is not first and n_boot > 0 and "paired" not in res:
                res["paired"] = paired_difference(res["scores"], first["scores"])
        if args.choose and chosen is None:
            chosen = max(rows, key=lambda x: (rows[x]["scores"]["matching_uap"], -list(rows).index(x)))
        results[s] = {"queries": len(q), "keypoints_cpu_s_per_query": t_kp / len(q), "rows": rows}

    def cell(res: dict, k: str) -> str:
        ci = res.get(f"{k}_ci")
        return f"{res[k]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    table = []
    for s, out in results.items():
        for name, res in out["rows"].items():
            d = res.get("paired", {}).get("matching_uap")
            table.append({"set": s, "k, max_pairs, max_segments": name, "pairs": res["pairs"], "matches": res["matches"],
                          "matching µAP": cell(res["scores"], "matching_uap"),
                          "− first": f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d else "",
                          "pairwise µAP": cell(res["scores"], "pairwise_uap"),
                          "CPU s/query recall+loc": f"{res['recall_localise_cpu_s_per_query']:.3f}",
                          "CPU s/query verify": f"{res['verify_cpu_s_per_query']:.2f}"})
    rep.table(table, caption=f"verified matches (library defaults); 95 % bootstrap intervals over queries, {n_boot} "
              "resamples, paired against the first setting")
    rep.add(f"Encoder: {root}/models/copydetect/encoder.pt; verify {dataclasses.asdict(vp)}; chosen: {chosen}; "
            f"keypoint CPU s/query: " + ", ".join(f"{s} {o['keypoints_cpu_s_per_query']:.2f}" for s, o in results.items()))
    for out in results.values():
        for res in out["rows"].values():
            res["scores"].pop("_samples", None)
    rep.data = {"results": results, "chosen": chosen, "verify": dataclasses.asdict(vp)}
    rep.finish()
    if chosen:
        print(f"[grid] chosen on {args.sets.split(',')[0]}: k, max_pairs, max_segments = {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
