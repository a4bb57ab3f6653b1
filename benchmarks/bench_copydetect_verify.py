#!/usr/bin/env python
"""Geometric verification of copy-detection candidates on unseen footage (issue 17, session 12).

The pipeline's matches (--root's params.yaml: its descriptor, β, recall and localisation; --root's
models/copydetect/encoder.pt, read only) on the unseen-source collection's halves (`build_unseen_collection`,
built under --collections when missing) and, with --sets demo, on --root's demo corpus (frame cache for the
descriptors, its videos for the keypoints). Every match is verified (`avmatch.copydetect.verify`: SIFT keypoints
of sampled query frames against the reference frames their alignment maps them to, and of the mirrored query
frames, RANSAC similarity transform, inlier count), and re-scored: old score + bonus when the inliers reach
min_inliers. The re-scoring rules of GRID are all measured from the same inlier counts (one verification per
match). Reports descriptor / matching / pairwise µAP before and after with 95 % bootstrap intervals over queries
(paired: the same resamples), and a diagnosis of the ground-truth segments: no match of the pair at all, the pair
found but no match overlapping the segment, found (overlap) with its rank; and of how many true / false matches
verify. --choose: pick the rule (min_inliers, bonus) on this run's first set by matching µAP (ties: the first in
GRID) and apply it to the others.

Prints the report (--json PATH: the raw numbers, per-match inliers too).
"""

from __future__ import annotations

import argparse
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

MIN_INLIERS = (4, 5, 6, 8, 10, 12, 15, 20)
# bound refinement of verified matches (`refined_bounds`): off, or "<frame_min>:<max_distance>"
REFINE = ("off",) + tuple(f"{n}:{d}" for n in (4, 6, 8) for d in (0.03, 0.06, 0.1, 0.2))   # "n:d": frame_min n, max_distance d
BONUSES = (0.1, 0.25, 0.5, 1.0)
GRID = tuple((t, b) for t in MIN_INLIERS for b in BONUSES)


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def label_matches(gt: list, matches: list) -> list[bool]:
    """True for a match of a ground-truth pair that overlaps one of its segments on both axes."""
    by_pair: dict = {}
    for g in gt:
        by_pair.setdefault((g.query_id, g.ref_id), []).append(g)
    return [any(overlap(m.query_start, m.query_end, g.query_start, g.query_end) > 0
                and overlap(m.ref_start, m.ref_end, g.ref_start, g.ref_end) > 0
                for g in by_pair.get((m.query_id, m.ref_id), ())) for m in matches]


def diagnose(gt: list, matches: list, scores: list[float], inliers: list[int], min_inliers: int) -> dict:
    """Per ground-truth segment: missing pair / pair without an overlapping match / found; for the found ones
    the global rank of the best overlapping match (among all matches, by `scores`) and whether it verifies;
    and the transforms of the segments that never verify."""
    import numpy as np

    order = np.argsort(-np.asarray(scores), kind="stable")
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    pairs = {(m.query_id, m.ref_id) for m in matches}
    out = {"no_pair": 0, "pair_no_overlap": 0, "found": 0, "found_verified": 0, "ranks": [], "misses": []}
    for g in gt:
        hit = [i for i, m in enumerate(matches) if m.query_id == g.query_id and m.ref_id == g.ref_id
               and overlap(m.query_start, m.query_end, g.query_start, g.query_end) > 0
               and overlap(m.ref_start, m.ref_end, g.ref_start, g.ref_end) > 0]
        if (g.query_id, g.ref_id) not in pairs:
            out["no_pair"] += 1
            out["misses"].append([g.query_id, g.ref_id, "no_pair"])
        elif not hit:
            out["pair_no_overlap"] += 1
            out["misses"].append([g.query_id, g.ref_id, "no_overlap"])
        else:
            out["found"] += 1
            best = min(hit, key=lambda i: rank[i])
            out["ranks"].append(int(rank[best]))
            ok = max(inliers[i] for i in hit) >= min_inliers
            out["found_verified"] += int(ok)
            if not ok:
                out["misses"].append([g.query_id, g.ref_id, "unverified", max(inliers[i] for i in hit)])
    return out


def load_set(name: str, params, root: Path, folder: Path, seed: int, embed, quick: bool = False,
             describe: bool = True):
    """(ground truth, query features, reference features, noise matrix, folder of the videos) of a set: the `name`
    half (val / test) of the unseen-source collection under `folder` (built there when missing), or --root's demo
    corpus ("demo"); --quick keeps 12 queries. describe=False: the ground truth and the folder only (None for the
    rest)."""
    from avmatch.copydetect.corpus import build_unseen_collection
    from avmatch.copydetect.metrics import read_matches
    from pipelines.copydetect.evaluate import _describe_sets
    from pipelines.copydetect.paths import CopydetectPaths
    from pipelines.copydetect.shared import noise_matrix

    cd = params.copydetect
    if name == "demo":
        paths = CopydetectPaths.from_params(params, root)
        gt = read_matches(paths.ground_truth, is_gt=True)
        vdir = paths.corpus
        if not describe:
            return gt, None, None, None, vdir
        q, r, n = _describe_sets(paths, embed)
    else:
        if not (folder / name / "matching_ground_truth.csv").exists():
            build_unseen_collection(folder / name, seed=seed, split=name)
        gt = read_matches(folder / name / "matching_ground_truth.csv", is_gt=True)
        vdir = folder / name
        if not describe:
            return gt, None, None, None, vdir
        q, r, n = describe_collection(folder / name, embed, cd.frames.fps, cd.frames.size)
    if quick:
        q = q[:12]
        gt = [m for m in gt if m.query_id in {x.video_id for x in q}]
    return gt, q, r, noise_matrix(n, r[0].features.shape[1]), vdir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="project whose params.yaml, encoder and demo corpus are used "
                   "(read only)")
    p.add_argument("--collections", default=str(ROOT / "data/copydetect/unseen_split"),
                   help="folder of the two halves (val/, test/; built there when missing)")
    p.add_argument("--sets", default="val", help="comma-separated, of val, test, demo")
    p.add_argument("--seed", type=int, default=11, help="collection seed")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples over queries (0 = none)")
    p.add_argument("--choose", action="store_true", help="choose (min_inliers, bonus) on the first set")
    p.add_argument("--min-inliers", type=int, default=None, help="rule applied (default: VerifyParams')")
    p.add_argument("--bonus", type=float, default=None, help="rule applied (default: VerifyParams')")
    p.add_argument("--query-frames", type=int, default=None)
    p.add_argument("--ref-window", type=float, default=None)
    p.add_argument("--kp-fps", type=float, default=None)
    p.add_argument("--contrast", type=float, default=None, help="SIFT contrast threshold")
    p.add_argument("--refine", default=None, help="bound refinement rule applied (see REFINE; default: the library's "
                   "VerifyParams, frame_min:max_distance, or off)")
    p.add_argument("--max-pairs", type=int, default=None, help="candidate pairs per query (default: params.yaml's)")
    p.add_argument("--max-segments", type=int, default=None, help="segments per pair (default: params.yaml's)")
    add_common_args(p)
    args = p.parse_args(argv)
    args.no_doc = args.no_doc or args.doc is None
    quiet_env(args.verbose, args.quick)
    threads = set_threads(args.threads)
    import dataclasses
    import json

    import cv2
    import numpy as np

    from avmatch.copydetect.candidates import descriptor_submission, find_candidates, reference_index
    from avmatch.copydetect.localisation import localise_pairs
    from avmatch.copydetect.verify import Verifier, VerifyParams, clipped, refined_bounds
    from avmatch.core.config import load_params

    cv2.setNumThreads(max(1, threads))
    rep = Report("copydetect_verify", "Copy detection: geometric verification of the candidates", args)
    rep.refresh_machine()
    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    cd = params.copydetect
    loc = cd.localise.model_dump()
    if args.max_segments:
        loc["max_segments"] = args.max_segments
    max_pairs = args.max_pairs or cd.candidates.max_pairs_per_query
    vp = VerifyParams()
    over = {"min_inliers": args.min_inliers, "bonus": args.bonus, "query_frames": args.query_frames,
            "ref_window": args.ref_window, "fps": args.kp_fps,
            "contrast": args.contrast}
    vp = dataclasses.replace(vp, **{k: v for k, v in over.items() if v is not None})
    _, embed = pipeline_describer(root, cd.extract.batch_size)
    folder = Path(args.collections)
    n_boot = 10 if args.quick else args.bootstrap
    sets = args.sets.split(",")
    results: dict = {}
    refine = args.refine or (f"{vp.frame_min}:{vp.max_distance:g}" if vp.refine else "off")
    rule = (vp.min_inliers, vp.bonus, refine)
    for s in sets:
        t0 = time.perf_counter()
        gt, q, r, noise, vdir = load_set(s, params, root, folder, args.seed, embed, args.quick)
        t_desc = time.perf_counter() - t0
        t0 = time.perf_counter()
        cands = find_candidates(reference_index(r), q, noise, cd.candidates.beta, cd.candidates.k, max_pairs)
        matches = localise_pairs(cands.pairs, {x.video_id: x for x in q}, {x.video_id: x for x in r}, cands.bias, **loc)
        t_loc = time.perf_counter() - t0
        qdir, rdir = vdir / cd.corpus.query_dir, vdir / cd.corpus.ref_dir
        ver = Verifier(lambda i: qdir / f"{i}.mp4", lambda i: rdir / f"{i}.mp4", vp, max_videos=10_000)
        t0 = time.process_time()
        for x in q:   # keypoints first (timed apart)
            ver.keypoints("query", x.video_id)
        for x in r:
            ver.keypoints("ref", x.video_id)
        t_kp = time.process_time() - t0
        t0 = time.process_time()
        checks = [ver.check(m) for m in matches]
        inliers = [c[0] for c in checks]
        t_ver = time.process_time() - t0
        t0 = time.process_time()
        align = {i: ver.alignment(m, checks[i][1], vp.q_extend, vp.r_extend, 4)
                 for i, m in enumerate(matches) if inliers[i] >= min(MIN_INLIERS)}
        t_align = time.process_time() - t0
        half = 0.5 / vp.fps

        def refined(m, i: int, t: int, mode: str):
            if mode == "off" or i not in align or inliers[i] < t:
                return m
            fmin, dmax = mode.split(":")
            # the library's clipping to the videos: Verifier.verify does exactly this for the rule applied
            return clipped(m, refined_bounds(align[i], m, int(fmin), half, float(dmax)),
                           ver.keypoints("query", m.query_id), ver.keypoints("ref", m.ref_id), vp)
        labels = label_matches(gt, matches)
        qa, ra = descriptor_submission(q, r, noise, cd.candidates.beta)
        old = [m.score for m in matches]

        def rescore(t: int, b: float, mode: str = "off") -> list:
            return [refined(dataclasses.replace(m, score=m.score + (b if c >= t else 0.0)), i, t, mode)
                    for i, (m, c) in enumerate(zip(matches, inliers))]

        grid = {}
        from avmatch.copydetect.metrics import matching_metrics
        for t, b in GRID:
            for mode in REFINE:
                mm = matching_metrics(gt, rescore(t, b, mode))
                grid[f"{t},{b},{mode}"] = {"min_inliers": t, "bonus": b, "refine": mode, "matching_uap": mm["segment"].ap,
                                           "pairwise_uap": mm["pairwise"].ap}
        keys = [(t, b, mode) for t, b in GRID for mode in REFINE]
        if args.choose and s == sets[0]:
            rule = max(keys, key=lambda k: (grid[",".join(map(str, k))]["matching_uap"], -keys.index(k)))
        before = score_matches(gt, matches, qa, ra, n_boot)
        after = score_matches(gt, rescore(*rule), qa, ra, n_boot)
        diff = paired_difference(after, before) if n_boot > 0 else {}
        lab = np.asarray(labels)
        inl = np.asarray(inliers)
        verified = inl >= rule[0]
        res = {
            "queries": len(q), "matches": len(matches), "pairs": int(len(cands.pairs["query_id"])),
            "true_matches": int(lab.sum()), "rule": {"min_inliers": rule[0], "bonus": rule[1], "refine": rule[2]},
            "verified_true": int((verified & lab).sum()), "verified_false": int((verified & ~lab).sum()),
            "before": before, "after": after, "paired": diff, "grid": grid,
            "diag_before": diagnose(gt, matches, old, inliers, rule[0]),
            "diag_after": diagnose(gt, rescore(*rule), [m.score for m in rescore(*rule)], inliers, rule[0]),
            "align": {str(i): a.round(3).tolist() for i, a in align.items()},
            "false_inliers_quantiles": [float(x) for x in np.percentile(inl[~lab], [50, 90, 99, 100])] if (~lab).any() else [],
            "true_inliers_quantiles": [float(x) for x in np.percentile(inl[lab], [10, 25, 50, 75])] if lab.any() else [],
            "seconds": {"describe_wall": round(t_desc, 1), "candidates_localise_wall": round(t_loc, 2),
                        "keypoints_cpu": round(t_kp, 2), "verify_cpu": round(t_ver, 2), "align_cpu": round(t_align, 2), "aligned_matches": len(align),
                        "verify_ms_per_match": round(1000 * t_ver / max(1, len(matches)), 2),
                        "verify_ms_per_query": round(1000 * (t_ver + t_kp * len(q) / max(1, len(q) + len(r))) / max(1, len(q)), 1),
                        "keypoints_ms_per_video_second": None},
            "per_match": [[m.query_id, m.ref_id, m.query_start, m.query_end, m.ref_start, m.ref_end, m.score, c, bool(l)]
                          for m, c, l in zip(matches, inliers, labels)],
        }
        for row in (before, after):
            row.pop("_samples", None)
        results[s] = res
        print(f"[bench] {s}: rule {rule}, before {[round(before[k], 3) for k in MEASURES]}, after "
              f"{[round(after[k], 3) for k in MEASURES]}; {res['verified_true']}/{res['true_matches']} true and "
              f"{res['verified_false']}/{len(matches) - res['true_matches']} false matches verify; "
              f"{res['seconds']}", flush=True)

    def cell(res: dict, k: str) -> str:
        ci = res.get(f"{k}_ci")
        return f"{res[k]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    rows = []
    for s, res in results.items():
        for name in ("before", "after"):
            rows.append({"set": s, "scores": name if name == "before" else f"verified (min_inliers {res['rule']['min_inliers']}, "
                         f"bonus {res['rule']['bonus']:g}, refine {res['rule']['refine']})", **{k: cell(res[name], k) for k in MEASURES}})
        if res["paired"]:
            rows.append({"set": s, "scores": "after − before", **{k: f"{v['difference']:+.3f} [{v['ci'][0]:+.2f}, "
                                                                   f"{v['ci'][1]:+.2f}]; {100 * v['share_a_better']:.0f} %"
                                                                   for k, v in res["paired"].items()}})
    rep.table(rows, caption=f"µAP [95 % bootstrap interval over queries, {n_boot} resamples]")
    rep.table([{"set": s, **{k: v for k, v in res["diag_after"].items() if k not in ("ranks", "misses")},
                "median rank before": float(np.median(res["diag_before"]["ranks"])) if res["diag_before"]["ranks"] else None,
                "median rank after": float(np.median(res["diag_after"]["ranks"])) if res["diag_after"]["ranks"] else None}
               for s, res in results.items()], caption="ground-truth segments")
    rep.add(f"Encoder: {root}/models/copydetect/encoder.pt; verify {dataclasses.asdict(vp)}; max_pairs {max_pairs}; "
            f"localise {loc}; {threads} threads")
    rep.data = {"results": results, "verify": dataclasses.asdict(vp), "localise": loc, "max_pairs": max_pairs}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
