#!/usr/bin/env python
"""Re-scoring the verified matches from what verification and localisation already know (issue 17, session 14).

The matching µAP ranks every match of every query on one scale. Today a match's score is its best normalised
similarity, + 1 when it verifies (`copydetect.verify.bonus`), so a false match that verifies with 5 inliers ranks
with true ones that verify with 200, and a 40-second false match costs as much precision per rank as its length
(the segment µAP counts predicted seconds). This bench measures whether a score learned from a handful of
per-match quantities ranks better on footage it never saw:

    similarity (the localisation score), verified (0/1), log(1 + inliers), log query / reference duration,
    |log speed|, log(1 + matches of the query), the gap to the query's best similarity

Two sub-commands:

* `features`: for each `HALF:SEED` collection of unseen footage (built with `build_unseen_collection` when
  missing; the encoder, the whitening fit and every setting = --root's / --params', the pipeline's default path:
  candidates, localisation, `Verifier.verify`), writes `<out>/<half>_s<seed>/`: `matches.csv` (the default
  matches with their features and a label: overlaps a copy of its pair on both axes), `queries.txt`, `gt.csv`,
  and `default.csv` (the default matches, VSC22 matching CSV, for bench_copydetect_pooled.py).
* `fit`: fits an L2-regularised logistic regression of the label on the features of the --fit sets (standardised
  with the fit sets' mean / sd) and writes `logistic.csv` (score = 1 + P(copy) for a verified match, P(copy)
  otherwise, so verification keeps its order as today and only the order within each group changes... unless
  --ungrouped: score = P(copy)) into every --eval set's folder, and the coefficients to `<out>/logistic.json`.
  Pool the eval sets with bench_copydetect_pooled.py (--baseline default --variant logistic).

    python benchmarks/bench_copydetect_rescore.py features --root /work/cd14 --collections /tmp/cd14/coll --sets val:11,test:11 --cache /tmp/cd14/feats --out /tmp/cd14/rescore
    python benchmarks/bench_copydetect_rescore.py fit --out /tmp/cd14/rescore --fit val_s11 --eval test_s11
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

FEATURES = ["similarity", "verified", "log_inliers", "log_q_dur", "log_r_dur", "abs_log_speed", "log_query_matches",
            "gap_to_best"]
BOUNDS = ["query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end", "score"]


def match_features(first: list, verified: list, inliers: list[int], min_inliers: int) -> list[dict]:
    """One row per match: its (verified, refined) bounds and default score, and FEATURES. `first` = the matches
    before verification (their score is the localisation's), `verified` = the same after `Verifier.verify`."""
    by_q: dict = {}
    for m in first:
        by_q.setdefault(m.query_id, []).append(m.score)
    rows = []
    for f, v, n in zip(first, verified, inliers):
        qd, rd = max(v.query_end - v.query_start, 1e-3), max(v.ref_end - v.ref_start, 1e-3)
        rows.append({"query_id": v.query_id, "ref_id": v.ref_id, "query_start": v.query_start, "query_end": v.query_end,
                     "ref_start": v.ref_start, "ref_end": v.ref_end, "score": v.score,
                     "similarity": f.score, "verified": float(n >= min_inliers), "log_inliers": math.log1p(n),
                     "log_q_dur": math.log(qd), "log_r_dur": math.log(rd), "abs_log_speed": abs(math.log(qd / rd)),
                     "log_query_matches": math.log1p(len(by_q[f.query_id])),
                     "gap_to_best": max(by_q[f.query_id]) - f.score})
    return rows


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (v if k in ("query_id", "ref_id") else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


def fit_logistic(x, y, l2: float = 1.0, iters: int = 50):
    """Weights (bias first) of an L2-penalised logistic regression by Newton's method (the bias unpenalised)."""
    import numpy as np

    X = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(X.shape[1])
    pen = np.full(X.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (p - y) + pen * w
        h = (X * (p * (1 - p))[:, None]).T @ X + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def cmd_features(args) -> int:
    from bench_copydetect_lowfloor import collection_bench_setup, whitened_set
    from bench_copydetect_verify import label_matches
    from avmatch.copydetect.candidates import find_candidates, reference_index
    from avmatch.copydetect.localisation import localise_pairs
    from avmatch.copydetect.metrics import write_matches
    from avmatch.copydetect.verify import Verifier, VerifyParams

    root, params, cache, described = collection_bench_setup(args)
    cd = params.copydetect
    vp = VerifyParams.from_params(cd.verify)
    for item in args.sets.split(","):
        half, seed = item.split(":")
        t0 = time.time()
        gt, q, r, noise, vdir = whitened_set(item, params, root, Path(args.collections), described, cache)
        cands = find_candidates(reference_index(r), q, noise, cd.candidates.beta, cd.candidates.k,
                                cd.candidates.max_pairs_per_query)
        first = localise_pairs(cands.pairs, {x.video_id: x for x in q}, {x.video_id: x for x in r}, cands.bias,
                               **cd.localise.model_dump())
        qdir, rdir = vdir / cd.corpus.query_dir, vdir / cd.corpus.ref_dir
        verifier = Verifier(lambda i: qdir / f"{i}.mp4", lambda i: rdir / f"{i}.mp4", vp, max_videos=10_000)
        verified, inliers = verifier.verify(first)
        rows = match_features(first, verified, inliers, vp.min_inliers)
        for row, lab in zip(rows, label_matches(gt, verified)):
            row["label"] = float(lab)
        out = Path(args.out) / f"{half}_s{seed}"
        out.mkdir(parents=True, exist_ok=True)
        write_rows(out / "matches.csv", rows, BOUNDS + FEATURES + ["label"])
        write_matches(out / "default.csv", verified)
        write_matches(out / "gt.csv", gt, gt=True)
        (out / "queries.txt").write_text("\n".join(x.video_id for x in q) + "\n")
        print(f"[rescore] {half}_s{seed}: {len(q)} queries, {len(gt)} copies, {len(rows)} matches "
              f"({sum(r_['label'] for r_ in rows):.0f} true, {sum(r_['verified'] for r_ in rows):.0f} verified), "
              f"{time.time() - t0:.0f} s", flush=True)
    return 0


def cmd_fit(args) -> int:
    import numpy as np

    from avmatch.copydetect.metrics import Match, write_matches

    out = Path(args.out)
    fit_rows = [r for s in args.fit.split(",") for r in read_rows(out / s / "matches.csv")]
    x = np.array([[r[f] for f in FEATURES] for r in fit_rows])
    y = np.array([r["label"] for r in fit_rows])
    mu, sd = x.mean(0), x.std(0) + 1e-9
    w = fit_logistic((x - mu) / sd, y, args.l2)
    (out / f"{args.name}.json").write_text(json.dumps(
        {"fit": args.fit, "l2": args.l2, "features": FEATURES, "mean": mu.tolist(), "sd": sd.tolist(),
         "weights": w.tolist(), "fit_matches": len(y), "fit_true": int(y.sum())}, indent=1))
    print(f"[rescore] fitted on {len(y)} matches ({int(y.sum())} true): " +
          ", ".join(f"{f} {c:+.2f}" for f, c in zip(["bias"] + FEATURES, w)), flush=True)
    for s in args.eval.split(","):
        rows = read_rows(out / s / "matches.csv")
        xe = (np.array([[r[f] for f in FEATURES] for r in rows]) - mu) / sd
        p = 1 / (1 + np.exp(-(w[0] + xe @ w[1:])))
        scores = p if args.ungrouped else p + np.array([r["verified"] for r in rows])
        write_matches(out / s / f"{args.name}.csv", [
            Match(r["query_id"], r["ref_id"], r["query_start"], r["query_end"], r["ref_start"], r["ref_end"], float(sc))
            for r, sc in zip(rows, scores)])
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="the default matches of each collection with their features and labels")
    f.add_argument("--root", default=str(ROOT), help="project whose params.yaml, encoder and demo corpus are used")
    f.add_argument("--params", default=None, help="params.yaml instead of --root's")
    f.add_argument("--collections", required=True, help="folder of the collections: <folder>/s<seed>/<half>")
    f.add_argument("--sets", required=True, help="comma-separated HALF:SEED (half: val or test)")
    f.add_argument("--cache", default=None, help="folder keeping the described sets")
    f.add_argument("--out", required=True)
    f.add_argument("--threads", type=int, default=2)
    g = sub.add_parser("fit", help="fit the logistic re-scoring on --fit sets, write its matches into --eval sets")
    g.add_argument("--out", required=True, help="the features sub-command's --out")
    g.add_argument("--fit", required=True, help="comma-separated set folders (e.g. val_s11)")
    g.add_argument("--eval", required=True, help="comma-separated set folders to re-score")
    g.add_argument("--l2", type=float, default=1.0)
    g.add_argument("--name", default="logistic", help="row name (csv and json file names)")
    g.add_argument("--ungrouped", action="store_true", help="score = P(copy), not 1 + P for verified matches")
    args = p.parse_args(argv)
    return cmd_features(args) if args.cmd == "features" else cmd_fit(args)


if __name__ == "__main__":
    raise SystemExit(main())
