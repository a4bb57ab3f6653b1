#!/usr/bin/env python
"""Does a training-free spectral verification of the winning alignment fix the no-match decision? (issue 16)

The learned search answers every query (test queries and the null queries the thresholds are calibrated
on) with (track, offset, drift rate); `avmatch.fingerprint.verify` scores how many of the query's spectral
peaks land on the reference's at that alignment. This script computes that score V for every query, then
compares decisions whose per-length thresholds are calibrated on null queries only (as the evaluate stage
calibrates `either`: the null queries cut from the training music given by each `--null-root`, plus the
validation out-of-database queries):

* either: the current decision (margin or similarity, 0.5 % each)
* V: the search's top-1 answered iff V passes its own 1 % threshold
* either AND V: both at 1 %
* either OR V: each at 0.5 %

    python benchmarks/bench_fingerprint_verify.py OUT --encoder /work/scratch/s7/s3000/encoder.pt \\
        --root /work/fp10 --null-root demo40=/work/fplarge --null-root cal140=/work/fp10

`--root` gives the references, queries and ground truth; each `--null-root NAME=PROJECT` a calibration (its
training music and training noise). OUT keeps the per-query scores (scores.parquet; a rerun reuses them).

`--queries DIR` scores a fresh query set instead (made by `fingerprint_fresh_queries.py --query-seed`: new
excerpts of the same references, out-of-database ones from the same held-out music): every one of its queries is
a test query, and the thresholds are still calibrated as the evaluate stage does (null queries plus the ROOT's
validation out-of-database queries), never on the fresh queries. The report then gives counts and Wilson 95 %
intervals per length.

    python benchmarks/bench_fingerprint_verify.py OUT --encoder ENC --root /work/fplarge \
        --null-root demo40=/work/fplarge --queries /work/scratch/fp12/fresh
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from avmatch.core.config import load_params  # noqa: E402
from avmatch.core.device import resolve_device  # noqa: E402
from avmatch.core.index import SegmentIndex  # noqa: E402
from avmatch.core.manifest import build_manifest, read_manifest, scan_media  # noqa: E402
from avmatch.core.pcm_cache import decode_manifest, load_pcm  # noqa: E402
from avmatch.fingerprint.calibration import Thresholds, calibrate, calibrate_decision, null_excerpts_from  # noqa: E402
from avmatch.fingerprint.embedding import embed_audio, embed_many  # noqa: E402
from avmatch.fingerprint.metrics import build_analysis, length_key, summarize  # noqa: E402
from avmatch.fingerprint.model import load_encoder  # noqa: E402
from avmatch.fingerprint.search import Match, search_with  # noqa: E402
from avmatch.fingerprint.verify import PeakParams, peak_grid, spectral_peaks, verification_score  # noqa: E402
from pipelines.fingerprint.evaluation import (  # noqa: E402
    _calibrated_length,
    _oov_rate_by_length,
    _speed_changed,
    is_validation,
    wilson_interval,
    read_ground_truth,
)
from pipelines.fingerprint.paths import FingerprintPaths  # noqa: E402

MATCH_FIELDS = ("item_id", "offset_segment", "score", "votes", "runner_up", "rate")


def ok_items(paths: FingerprintPaths, name: str) -> pd.DataFrame:
    items = read_manifest(paths.items(name))
    return items[items["status"] == "ok"].reset_index(drop=True)


def score_rows(kind: str, ids: list[str], lengths: list[float], n_segs: list[int], audios: list[np.ndarray],
               matches: list[Match], grids: dict, hop_s: float, pp: PeakParams) -> pd.DataFrame:
    rows = []
    for i, v, n, x, m in zip(ids, lengths, n_segs, audios, matches):
        row = {"kind": kind, "id": i, "length_s": v, "n_segments": n, **{f: getattr(m, f) for f in MATCH_FIELDS}}
        if m.item_id is None:
            row["V"] = -np.inf
        else:
            qf, qb = spectral_peaks(x, pp)
            row["V"] = verification_score(qf, qb, grids[m.item_id], m.offset_segment * hop_s, m.rate, pp)
        rows.append(row)
    return pd.DataFrame(rows)


def compute_scores(args, params, pp: PeakParams) -> pd.DataFrame:
    fp = params.fingerprint
    paths = FingerprintPaths.from_params(params, args.root)
    device = resolve_device(params.common.device)
    model = load_encoder(args.encoder, device)
    refs = ok_items(paths, "refs")
    t0 = time.perf_counter()
    ref_audio = {r.id: load_pcm(r.pcm_file) for r in refs.itertuples()}
    embedded = {k: embed_audio(model, x, fp.audio, device, fp.extract.batch_size) for k, x in ref_audio.items()}
    vecs = np.concatenate([v for v, _, _ in embedded.values()])
    idmap = pd.concat([pd.DataFrame({"item_id": k, "segment": np.arange(len(v)), "start_s": s})
                       for k, (v, s, _) in embedded.items()], ignore_index=True)
    index = SegmentIndex.build(vecs, idmap, "flat")
    grids = {}
    for k, x in ref_audio.items():
        f, b = spectral_peaks(x, pp)
        grids[k] = peak_grid(f, b, pp)
    print(f"refs embedded and peaked: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    queries = ok_items(paths, "queries")
    q_audio = {r.id: load_pcm(r.pcm_file) for r in queries.itertuples()}
    gt = read_ground_truth(paths.ground_truth)
    have = [i for i in gt["item_id"] if i in q_audio]
    q_vecs = embed_many(model, [q_audio[i] for i in have], fp.audio, device, fp.extract.batch_size)
    found = search_with(index, q_vecs, fp.search)
    lengths = dict(zip(gt["item_id"], gt["length_s"].astype(float)))
    frames = [score_rows("query", have, [lengths[i] for i in have], [len(v) for v in q_vecs],
                         [q_audio[i] for i in have], found, grids, fp.audio.hop_s, pp)]
    print(f"queries: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if args.queries is not None:   # a fresh set: decoded as the features stage decodes, into OUT
        man = build_manifest(scan_media(args.queries / "queries"), base=args.queries, split="queries",
                             desc="ingest fresh queries")
        fresh = decode_manifest(man, args.out / "pcm", fp.audio.sample_rate, desc="decode fresh queries")
        fresh = fresh[fresh["status"] == "ok"]
        f_audio = {r.id: load_pcm(r.pcm_file) for r in fresh.itertuples()}
        fgt = read_ground_truth(args.queries / "ground_truth.csv")
        fhave = [i for i in fgt["item_id"] if i in f_audio]
        f_vecs = embed_many(model, [f_audio[i] for i in fhave], fp.audio, device, fp.extract.batch_size)
        flen = dict(zip(fgt["item_id"], fgt["length_s"].astype(float)))
        frames.append(score_rows("fresh", fhave, [flen[i] for i in fhave], [len(v) for v in f_vecs],
                                 [f_audio[i] for i in fhave], search_with(index, f_vecs, fp.search), grids,
                                 fp.audio.hop_s, pp))
        print(f"fresh queries ({len(fhave)} of {len(fgt)}): {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)

    for name, root in args.null_roots:
        npaths = FingerprintPaths.from_params(params, root)
        train = [load_pcm(f) for f in ok_items(npaths, "train")["pcm_file"]]
        noises = [load_pcm(f) for f in ok_items(npaths, "noise_train")["pcm_file"]]
        cuts = null_excerpts_from(train, noises, fp.corpus.query_lengths_s, fp.evaluate.null_queries_per_length,
                                  fp.audio.sample_rate, params.common.seed, fp.corpus.max_speed_change)
        nv = embed_many(model, [x for _, x, _ in cuts], fp.audio, device, fp.extract.batch_size)
        nm = search_with(index, nv, fp.search)
        frames.append(score_rows(f"null_{name}", [f"{name}/{j}" for j in range(len(cuts))],
                                 [v for v, _, _ in cuts], [len(v) for v in nv], [x for _, x, _ in cuts], nm,
                                 grids, fp.audio.hop_s, pp))
        print(f"null {name} ({len(train)} tracks): {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return pd.concat(frames, ignore_index=True)


def as_match(row) -> Match:
    item = row.item_id if isinstance(row.item_id, str) else None
    return Match(item, int(row.offset_segment), float(row.score), int(row.votes), float(row.runner_up), float(row.rate))


def counts(analysis: pd.DataFrame, lengths: list[float]) -> dict:
    """Per length: [k, n, wilson lo, hi] of the in-database hits, the speed-changed hits, the OOD answered."""
    ind = analysis["in_db"].astype(bool)
    speed = analysis["degradation"].isin(["speed", "stretch"])
    answered = analysis["pred_track_path"].astype(str).str.len().gt(0)
    out = {}
    for v in lengths:
        at = np.isclose(analysis["length_s"], v)
        row = {}
        for name, sel, ok in (("hit", ind & at, analysis["track_hit"].astype(bool)),
                              ("speed_hit", ind & speed & at, analysis["track_hit"].astype(bool)),
                              ("ood_answered", ~ind & at, answered)):
            k, n = int((sel & ok).sum()), int(sel.sum())
            row[name] = [k, n, *wilson_interval(k, n)]
        out[length_key(v)] = row
    return out


def evaluate_decisions(scores: pd.DataFrame, gt: pd.DataFrame, null_name: str, params,
                       fresh_gt: pd.DataFrame | None = None) -> dict:
    """Per decision: hit rate per length, speed-changed hit rate, OOD test answered; thresholds from null only.

    With `fresh_gt` (the scores' "fresh" rows), every fresh query is a test query; the calibration is unchanged."""
    fp = params.fingerprint
    sp, au, target = fp.search, fp.audio, fp.evaluate.target_false_match_rate
    lengths_cfg = fp.corpus.query_lengths_s
    q = scores[scores["kind"] == "query"].set_index("id")
    gt = gt[gt["item_id"].isin(q.index)].reset_index(drop=True)
    val = np.array([is_validation(x, fp.evaluate.validation_fraction) for x in gt["query_id"]])
    in_db = gt["in_db"].astype(int).to_numpy() == 1
    nulls = scores[scores["kind"] == f"null_{null_name}"]
    cal_rows = pd.concat([nulls, q.loc[gt.loc[val & ~in_db, "item_id"]].reset_index()], ignore_index=True)
    cal_len = [_calibrated_length(float(v), lengths_cfg) for v in cal_rows["length_s"]]
    null_matches: dict[float, list[Match]] = {}
    null_v: dict[float, list[float]] = {}
    for v, row in zip(cal_len, cal_rows.itertuples()):
        null_matches.setdefault(v, []).append(as_match(row))
        null_v.setdefault(v, []).append(float(row.V))
    th_either = calibrate_decision(null_matches, "either", sp.runner_up_weight, target)
    th_either_half = calibrate_decision(null_matches, "either", sp.runner_up_weight, target / 2)
    th_v = calibrate(null_v, target)
    th_v_half = calibrate(null_v, target / 2)

    test = gt[~val].reset_index(drop=True)
    if fresh_gt is not None:
        fq = scores[scores["kind"] == "fresh"].set_index("id")
        test = fresh_gt[fresh_gt["item_id"].isin(fq.index)].reset_index(drop=True)
    else:
        fq = q
    decisions = {}

    def passes_v(row, th: Thresholds) -> bool:
        return row.item_id is not None and isinstance(row.item_id, str) and \
            row.V >= th.for_segments(int(row.n_segments), au.segment_s, au.hop_s)

    def either(row, th: Thresholds) -> Match:
        return th.decide(as_match(row), "either", sp.runner_up_weight, int(row.n_segments), au.segment_s, au.hop_s)

    from dataclasses import replace
    rules = {
        "either": lambda r: either(r, th_either),
        "V": lambda r: as_match(r) if passes_v(r, th_v) else replace(as_match(r), item_id=None),
        "either AND V": lambda r: either(r, th_either) if passes_v(r, th_v) else replace(as_match(r), item_id=None),
        "either OR V": lambda r: (as_match(r) if passes_v(r, th_v_half) else either(r, th_either_half)),
    }
    vin = gt[val & in_db].reset_index(drop=True)   # validation in-db queries: used by no calibration
    for name, rule in rules.items():
        vpreds = {qid: rule(q.loc[iid]) for qid, iid in zip(vin["query_id"], vin["item_id"])}
        vsumm = summarize(build_analysis(vin, vpreds, au.hop_s, segment_s=au.segment_s), lengths_cfg)
        preds = {qid: rule(fq.loc[iid]) for qid, iid in zip(test["query_id"], test["item_id"])}
        analysis = build_analysis(test, preds, au.hop_s, segment_s=au.segment_s)
        summ = summarize(analysis, lengths_cfg)
        oov = _oov_rate_by_length(analysis, lengths_cfg)
        decisions[name] = {
            "track_hit_rate": summ["track_hit_rate"],
            "validation_in_db_hit_rate": vsumm["track_hit_rate"],
            "speed_changed_hit_rate": _speed_changed(analysis, lengths_cfg),
            "ood_answered": {k: [o["answered"], o["n"]] for k, o in oov.items()},
            "ood_pooled": [sum(o["answered"] for o in oov.values()), sum(o["n"] for o in oov.values())],
            "counts": counts(analysis, lengths_cfg),
            "ood_answers": [f"{a.query_id} {a.length_s:g}s -> {a.pred_item_id} (V {fq.loc[i, 'V']:.3f})"
                            for a, i in zip(analysis.itertuples(), test["item_id"])
                            if not a.in_db and a.pred_track_path],
        }
    decisions["thresholds"] = {"V": th_v.to_json(), "V_half": th_v_half.to_json(), "either": th_either.to_json()}
    return decisions


def separation(scores: pd.DataFrame, gt: pd.DataFrame, null_names: list[str], params) -> dict:
    """Per length: null V max / 99th percentile against the correct answers' V, and the OOD test queries' V."""
    fp = params.fingerprint
    q = scores[scores["kind"] == "query"].merge(gt[["item_id", "query_id", "ref_id", "in_db", "degradation"]],
                                                 left_on="id", right_on="item_id")
    val = np.array([is_validation(x, fp.evaluate.validation_fraction) for x in q["query_id"]])
    q = q[~val]
    out = {}
    for v in fp.corpus.query_lengths_s:
        k = length_key(v)
        ql = q[np.isclose(q["length_s"], v)]
        correct = ql[(ql["in_db"].astype(int) == 1) & (ql["item_id_x"] == ql["ref_id"])]["V"].to_numpy()
        ood = ql[ql["in_db"].astype(int) == 0]["V"].to_numpy()
        row = {"correct_p5_p10_p50": [float(np.percentile(correct, p)) for p in (5, 10, 50)],
               "n_correct": len(correct), "ood_max": float(np.max(ood)), "ood_top3": sorted(ood)[-3:]}
        for name in null_names:
            nv = scores[(scores["kind"] == f"null_{name}") & np.isclose(scores["length_s"], v)]["V"].to_numpy()
            row[f"null_{name}_p99_max"] = [float(np.percentile(nv, 99)), float(np.max(nv))]
            row[f"correct_below_null_{name}_p99"] = int(np.sum(correct < np.percentile(nv, 99)))
        out[k] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--encoder", type=Path, required=True)
    ap.add_argument("--root", type=Path, required=True, help="project whose references, queries, ground truth")
    ap.add_argument("--null-root", action="append", default=[], help="NAME=PROJECT: null queries' training music")
    ap.add_argument("--queries", type=Path, default=None,
                    help="a fresh query set (fingerprint_fresh_queries.py) scored as the test set")
    ap.add_argument("--rate-step", type=float, default=PeakParams.rate_step,
                    help="verifier's speed grid step (0: only the search's rate, the pre-registered V1)")
    args = ap.parse_args()
    args.null_roots = [(a.split("=", 1)[0], Path(a.split("=", 1)[1])) for a in args.null_root]
    params = load_params(ROOT / "params.yaml")
    pp = PeakParams(sample_rate=params.fingerprint.audio.sample_rate, rate_step=args.rate_step)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "scores.parquet"
    if cache.exists():
        scores = pd.read_parquet(cache)
    else:
        scores = compute_scores(args, params, pp)
        scores.to_parquet(cache)
    gt = read_ground_truth(FingerprintPaths.from_params(params, args.root).ground_truth)
    fresh_gt = read_ground_truth(args.queries / "ground_truth.csv") if args.queries is not None else None
    report = {} if fresh_gt is not None else {"separation": separation(scores, gt, [n for n, _ in args.null_roots],
                                                                      params)}
    for name, _ in args.null_roots:
        report[f"cal_{name}"] = evaluate_decisions(scores, gt, name, params, fresh_gt)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    for name, _ in args.null_roots:
        print(f"== calibration {name}")
        for d, r in report[f"cal_{name}"].items():
            if d == "thresholds":
                continue
            print(f"{d:14s} hit {' / '.join(f'{x:.3f}' for x in r['track_hit_rate'].values())}  speed "
                  f"{' / '.join(f'{x:.2f}' for x in r['speed_changed_hit_rate'].values())}  OOD "
                  f"{', '.join(str(a) for a, _ in r['ood_answered'].values())} = {r['ood_pooled'][0]}/{r['ood_pooled'][1]}"
                  f"  | validation in-db hit {' / '.join(f'{x:.3f}' for x in r['validation_in_db_hit_rate'].values())}")
            if fresh_gt is not None:
                for what in ("hit", "speed_hit", "ood_answered"):
                    print(f"    {what:13s}", "  ".join(
                        f"{k} {c[what][0]}/{c[what][1]} [{c[what][2]:.2f}, {c[what][3]:.2f}]"
                        for k, c in r["counts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
