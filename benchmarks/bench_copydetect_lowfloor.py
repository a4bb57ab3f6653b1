#!/usr/bin/env python
"""A second, verified-only localisation pass at a lower floor, and reference bounds of crops / insets (issue 17,
session 13).

The pipeline's matches (--root's params.yaml and encoder, read only, as bench_copydetect_verify.py) on the halves
of the unseen-source collection (and --sets demo), verified with the library's defaults (`Verifier`): the
baseline. Then, for every --floors F x keypoint setting (--kp: "base" = the defaults, "sN" = frames whose longer
side is below N upscaled to N for SIFT, `VerifyParams.min_side`): the candidate pairs are localised again at floor F, the segments the
first pass did not report (`verify.new_segments`) are verified with that keypoint setting and kept only when
they verify (`verify.verified_only`; an unverified one is dropped). --rules: the reference-bound rule of the
refinement (`VerifyParams.ref_rule`: identity, coverage), applied to all verified matches. --second-chance: the
first pass's unverified matches are checked again with the upscaled keypoints.

Reports matching / pairwise µAP with 95 % bootstrap intervals over queries (paired against the baseline), the
ground-truth diagnosis (no pair / no overlapping match / found unverified / found verified), the IoU of the
reference bounds of the true matches with the truth, false matches that verify, and CPU per query.
--choose: the best setting on the first set by matching µAP (ties: the first / cheapest listed).

Session 13 (cd13c): the descriptor is --params's (default: --root's params.yaml), built by the library
(`frame_describer`); a whitened descriptor's whitening is fitted by `whiten_sets` on the demo corpus's references +
noise (the encoder's training footage, as the extract stage does; never the unseen sources). --betas / --base-floors:
a grid over the first pass too (candidates.beta x localise.floor; the baseline stays params' values, no second
pass); the second-pass floors are then tried only below the row's floor. --cache: the described sets (before
whitening) are kept there.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from _report import Report, add_common_args, quiet_env, set_threads  # noqa: E402
from bench_copydetect_unseen import paired_difference, score_matches  # noqa: E402
from bench_copydetect_verify import label_matches, load_set, overlap  # noqa: E402


def iou(a0: float, a1: float, b0: float, b1: float) -> float:
    u = max(a1, b1) - min(a0, b0)
    return overlap(a0, a1, b0, b1) / u if u > 0 else 0.0


def gt_status(gt: list, matches: list, verified: set) -> dict:
    """Per ground-truth segment: no match of its pair / no overlapping match / found, unverified / verified."""
    out = {"no_pair": 0, "no_overlap": 0, "unverified": 0, "verified": 0}
    pairs = {(m.query_id, m.ref_id) for m in matches}
    for g in gt:
        hit = [i for i, m in enumerate(matches) if m.query_id == g.query_id and m.ref_id == g.ref_id
               and overlap(m.query_start, m.query_end, g.query_start, g.query_end) > 0
               and overlap(m.ref_start, m.ref_end, g.ref_start, g.ref_end) > 0]
        if (g.query_id, g.ref_id) not in pairs:
            out["no_pair"] += 1
        elif not hit:
            out["no_overlap"] += 1
        else:
            out["verified" if any(i in verified for i in hit) else "unverified"] += 1
    return out


def ref_iou(gt: list, matches: list, idx: list[int]) -> float:
    """Mean IoU of the reference bounds of the matches `idx` with the ground-truth segment they overlap most."""
    vals = []
    for i in idx:
        m = matches[i]
        gs = [g for g in gt if g.query_id == m.query_id and g.ref_id == m.ref_id]
        if gs:
            g = max(gs, key=lambda g: overlap(m.query_start, m.query_end, g.query_start, g.query_end))
            vals.append(iou(m.ref_start, m.ref_end, g.ref_start, g.ref_end))
    return float(sum(vals) / len(vals)) if vals else float("nan")


def dump_matches(folder: Path, row: str, matches: list, query_ids: list[str]) -> None:
    """A row's matches as a VSC22 matching CSV (file name: the row with "|" as "_"), and the set's query ids."""
    import csv

    from avmatch.copydetect.metrics import MATCH_COLUMNS

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "queries.txt").write_text("\n".join(query_ids) + "\n")
    with open(folder / f"{row.replace('|', '_')}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MATCH_COLUMNS)
        for m in matches:
            w.writerow([m.query_id, m.ref_id] + [repr(float(x)) for x in (m.query_start, m.query_end, m.ref_start,
                                                                          m.ref_end, m.score)])


def described_set(s: str, params, root: Path, folder: Path, seed: int, embed, enc_hash: str, spec, cache: Path | None,
                  quick: bool = False):
    """`load_set` of set `s` with the descriptor before whitening (`spec.unwhitened()`), kept under `cache` (keyed by
    the set, the collection seed, the encoder's hash and the descriptor)."""
    import numpy as np

    from avmatch.copydetect.metrics import VideoFeatures

    tag = s if s == "demo" else f"{s}_seed{seed}"    # a collection's halves differ with the seed
    f = cache / f"{tag}_{enc_hash[:12]}_{spec.unwhitened().label.replace(' ', '')}.npz" if cache else None
    if f is not None and f.exists() and not quick:
        z = np.load(f, allow_pickle=True)
        gt_, _, _, _, vd = load_set(s, params, root, folder, seed, None, quick, describe=False)
        q_, r_ = ([VideoFeatures(i, t, x) for i, t, x in z[k]] for k in ("q", "r"))
        return gt_, q_, r_, z["n"], vd
    out = load_set(s, params, root, folder, seed, embed, quick)
    if f is not None and not quick:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(f, q=np.array([(v.video_id, v.timestamps, v.features) for v in out[1]], dtype=object),
                 r=np.array([(v.video_id, v.timestamps, v.features) for v in out[2]], dtype=object), n=out[3])
    return out


def pipeline_descriptor(root: Path, params, collections: Path, cache: Path | None):
    """(spec, frames -> descriptors before whitening, the encoder's hash, the whitening or None): --root's encoder
    and params' descriptor, the whitening fitted as the extract stage fits it (on the demo corpus's references +
    noise, the encoder's training footage; never the unseen sources)."""
    import numpy as np

    from avmatch.copydetect.descriptor import DescriptorSpec, frame_describer, whiten_sets
    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.core.hashing import file_hash

    cd = params.copydetect
    spec = DescriptorSpec.from_params(cd.descriptor)
    enc_file = root / "models/copydetect/encoder.pt"
    enc_hash = file_hash(enc_file)
    embed = frame_describer(spec.unwhitened(), load_frame_encoder(enc_file), "cpu", cd.extract.batch_size)
    whitening = None
    if spec.whitens:
        _, _, dr, dn, _ = described_set("demo", params, root, collections, 0, embed, enc_hash, spec, cache)
        whitening, _ = whiten_sets(spec, enc_hash, {"refs": dr, "noise": [VideoFeatures("noise", np.arange(len(dn)), dn)]})
    return spec, embed, enc_hash, whitening


def collection_bench_setup(args) -> tuple:
    """What the benches over `HALF:SEED` collections start with (--root, --params, --threads, --collections,
    --cache): quiet logs, the thread count for torch and OpenCV, and (root, params, cache, `pipeline_descriptor`)."""
    import cv2

    from _report import quiet_env, set_threads
    from avmatch.core.config import load_params

    quiet_env(False, False)
    cv2.setNumThreads(max(1, set_threads(args.threads)))
    root = Path(args.root).resolve()
    params = load_params(Path(args.params) if args.params else root / "params.yaml")
    cache = Path(args.cache) if args.cache else None
    return root, params, cache, pipeline_descriptor(root, params, Path(args.collections), cache)


def whitened_set(item: str, params, root: Path, collections: Path, described: tuple, cache: Path | None):
    """`described_set` of `item` ("HALF:SEED"; <collections>/s<seed>/<half>), whitened with `described`'s
    whitening (`pipeline_descriptor`'s output): (ground truth, queries, references, noise, folder of the videos)."""
    from avmatch.copydetect.metrics import VideoFeatures

    spec, embed, enc_hash, whitening = described
    half, seed = item.split(":")
    gt, q, r, noise, vdir = described_set(half, params, root, collections / f"s{seed}", int(seed), embed, enc_hash,
                                          spec, cache)
    if whitening is not None:
        q, r = ([VideoFeatures(x.video_id, x.timestamps, whitening.apply(x.features)) for x in vs] for vs in (q, r))
        noise = whitening.apply(noise)
    return gt, q, r, noise, vdir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="project whose params.yaml, encoder and demo corpus are used")
    p.add_argument("--params", default=None, help="params.yaml to use instead of --root's (encoder, demo corpus: --root)")
    p.add_argument("--betas", default=None, help="first-pass candidates.beta values (comma-separated; default params')")
    p.add_argument("--base-floors", default=None, help="first-pass localise.floor values (default params')")
    p.add_argument("--cache", default=None, help="folder keeping the described sets (before whitening)")
    p.add_argument("--collections", default=str(ROOT / "data/copydetect/unseen_split"))
    p.add_argument("--sets", default="val", help="comma-separated, of val, test, demo")
    p.add_argument("--seed", type=int, default=11, help="collection seed")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--floors", default="0.1,0.15,0.2", help="second-pass floors (comma-separated; empty = none)")
    p.add_argument("--kp", default="base,s320", help="second-pass keypoint settings: base, sN (longer side upscaled to N)")
    p.add_argument("--rules", default="identity,coverage", help="reference-bound rules of the refinement")
    p.add_argument("--second-chance", default="off", help="comma-separated of off, on: re-check the first pass's "
                   "unverified matches with the (upscaled) keypoint setting of the row")
    p.add_argument("--only", default=None, help="one setting 'F|kp|rule|sc' (e.g. 0.15|s320|coverage|off; F 0 = no "
                   "second pass) or 'beta|floor|F|kp|rule|sc' measured against the baseline")
    p.add_argument("--library", action="store_true", help="with --only: also run the library's path "
                   "(`Verifier.verify_pairs` with second_floor / second_min_side / ref_rule set) and report its µAP")
    p.add_argument("--dump", default=None, help="folder: write each set's query ids and each row's matches "
                   "(<set>/queries.txt, <set>/<row>.csv, VSC22 matching CSV) for bench_copydetect_pooled.py")
    p.add_argument("--choose", action="store_true", help="report the best setting on the first set")
    add_common_args(p)
    args = p.parse_args(argv)
    args.no_doc = args.no_doc or args.doc is None
    quiet_env(args.verbose, args.quick)
    threads = set_threads(args.threads)

    import cv2

    from avmatch.copydetect.candidates import descriptor_submission, find_candidates, reference_index
    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.copydetect.localisation import localise_pairs
    from avmatch.copydetect.verify import Verifier, VerifyParams, clipped, new_segments, refined_bounds, rescored
    from avmatch.core.config import load_params

    cv2.setNumThreads(max(1, threads))
    rep = Report("copydetect_lowfloor", "Copy detection: verified-only low-floor pass, reference bounds", args)
    rep.refresh_machine()
    root = Path(args.root).resolve()
    params = load_params(Path(args.params) if args.params else root / "params.yaml")
    cd = params.copydetect
    loc = cd.localise.model_dump()
    vp = VerifyParams()
    b0, l0 = cd.candidates.beta, cd.localise.floor
    if args.only:
        bits = args.only.split("|")
        b, lf = (float(bits[0]), float(bits[1])) if len(bits) == 6 else (b0, l0)
        f, k, r, sc = bits[-4:]
        settings = [(b0, l0, 0.0, "base", "identity", "off"), (b, lf, float(f), k, r, sc)]
    else:
        floors = [0.0] + [float(x) for x in args.floors.split(",") if x]
        kps = [x for x in args.kp.split(",") if x]
        betas = [b0] + [float(x) for x in (args.betas or "").split(",") if x]
        lfloors = [l0] + [float(x) for x in (args.base_floors or "").split(",") if x]
        settings = [(b0, l0, 0.0, "base", r, "off") for r in args.rules.split(",")]
        settings += [(b, lf, f, k, r, sc) for b in dict.fromkeys(betas) for lf in dict.fromkeys(lfloors)
                     for f in floors for k in kps for r in args.rules.split(",")
                     for sc in args.second_chance.split(",") if f < lf and not (f == 0 and k == "base" and sc == "off"
                     and (b, lf) == (b0, l0)) and not (f == 0 and k != "base" and sc == "off") and not (k == "base" and sc == "on")]
        settings = list(dict.fromkeys(settings))
    cache = Path(args.cache) if args.cache else None
    folder = Path(args.collections)
    n_boot = 10 if args.quick else args.bootstrap
    # the whitening (a whitened descriptor) is fitted as the extract stage does: on the demo references + noise
    spec, embed, enc_hash, whitening = pipeline_descriptor(root, params, folder, cache)

    def described(s: str):
        return described_set(s, params, root, folder, args.seed, embed, enc_hash, spec, cache, args.quick)

    results: dict = {}
    chosen = None
    for s in args.sets.split(","):
        gt, q, r, noise, vdir = described(s)
        if whitening is not None:
            q, r = ([VideoFeatures(x.video_id, x.timestamps, whitening.apply(x.features)) for x in vs] for vs in (q, r))
            noise = whitening.apply(noise)
        qdir, rdir = vdir / cd.corpus.query_dir, vdir / cd.corpus.ref_dir
        qmap, rmap = {x.video_id: x for x in q}, {x.video_id: x for x in r}
        t0 = time.process_time()
        ref_index = reference_index(r)
        cands_b: dict = {}
        firsts: dict = {}

        def first_pass(b: float, lf: float):
            if b not in cands_b:
                cands_b[b] = (find_candidates(ref_index, q, noise, b, cd.candidates.k, cd.candidates.max_pairs_per_query),
                              descriptor_submission(q, r, noise, b))
            if (b, lf) not in firsts:
                c = cands_b[b][0]
                firsts[b, lf] = localise_pairs(c.pairs, qmap, rmap, c.bias, **{**loc, "floor": lf})
            return cands_b[b][0], firsts[b, lf], cands_b[b][1]

        cands, first, (qa, ra) = first_pass(b0, l0)
        t_first = time.process_time() - t0
        verifiers: dict = {}
        kp_cpu: dict = {}

        def verifier(kp: str) -> Verifier:
            if kp not in verifiers:
                p_kp = vp if kp == "base" else dataclasses.replace(vp, min_side=int(kp[1:]), max_side=max(vp.max_side, int(kp[1:])))
                verifiers[kp] = Verifier(lambda i: qdir / f"{i}.mp4", lambda i: rdir / f"{i}.mp4", p_kp, max_videos=10_000)
                t1 = time.process_time()
                for x in q:
                    verifiers[kp].keypoints("query", x.video_id)
                for x in r:
                    verifiers[kp].keypoints("ref", x.video_id)
                kp_cpu[kp] = time.process_time() - t1
            return verifiers[kp]

        memo: dict = {}   # (kp, match without its score) -> (inliers, alignment rows or None, cpu s)

        def checked(kp: str, m):
            key = (kp, dataclasses.replace(m, score=0.0))
            if key not in memo:
                v = verifier(kp)
                t1 = time.process_time()
                nn, flipped = v.check(m)
                rows = v.alignment(m, flipped, vp.q_extend, vp.r_extend, vp.frame_min) if nn >= vp.min_inliers else None
                memo[key] = (nn, rows, time.process_time() - t1)
            return memo[key]

        def finished(kp: str, m, rule: str):
            """(the match re-scored and refined as Verifier.verify does, verified?)"""
            nn, rows, _ = checked(kp, m)
            out = rescored(m, nn, vp)
            if rows is not None:
                v = verifier(kp)
                out = clipped(out, refined_bounds(rows, out, vp.frame_min, 0.5 / vp.fps, vp.max_distance, rule=rule),
                              v.keypoints("query", m.query_id), v.keypoints("ref", m.ref_id), vp)
            return out, nn >= vp.min_inliers

        lows: dict = {}
        rows_out: dict = {}
        for b, lf, f, kp, rule, sc in settings:
            cands, first, (qa, ra) = first_pass(b, lf)
            t_set = 0.0
            matches, ver_idx = [], set()
            for m in first:
                out, ok = finished("base", m, rule)
                t_set += checked("base", m)[2]
                if not ok and sc == "on":
                    out, ok = finished(kp, m, rule)
                    t_set += checked(kp, m)[2]
                if ok:
                    ver_idx.add(len(matches))
                matches.append(out)
            n_extra = n_extra_cand = 0
            t_low = 0.0
            if f > 0:
                lk = (b, lf, f)
                if lk not in lows:
                    t1 = time.process_time()
                    lows[lk] = new_segments(localise_pairs(cands.pairs, qmap, rmap, cands.bias, **{**loc, "floor": f}), first)
                    lows[(lk, "cpu")] = time.process_time() - t1
                t_low = lows[(lk, "cpu")]
                n_extra_cand = len(lows[lk])
                for m in lows[lk]:
                    out, ok = finished(kp, m, rule)
                    t_set += checked(kp, m)[2]
                    if ok:
                        ver_idx.add(len(matches))
                        matches.append(out)
                        n_extra += 1
            sc_ = score_matches(gt, matches, qa, ra, n_boot)
            if args.dump:
                dump_matches(Path(args.dump) / s, f"{b:g}|{lf:g}|{f:g}|{kp}|{rule}|{sc}", matches, [x.video_id for x in q])
            labels = label_matches(gt, matches)
            true_ver = [i for i in ver_idx if labels[i]]
            name = f"{b:g}|{lf:g}|{f:g}|{kp}|{rule}|{sc}"
            rows_out[name] = {
                "beta": b, "base_floor": lf, "floor": f, "kp": kp, "rule": rule, "second_chance": sc, "matches": len(matches),
                "extra_candidates": n_extra_cand, "extra_verified": n_extra,
                "extra_true": sum(labels[i] for i in range(len(first), len(matches))),
                "false_verified": sum(1 for i in ver_idx if not labels[i]),
                "ref_iou_true_verified": ref_iou(gt, matches, true_ver), "status": gt_status(gt, matches, ver_idx),
                "scores": sc_, "cpu_s_per_query_verify": t_set / len(q), "cpu_s_per_query_low_localise": t_low / len(q),
            }
            d = rows_out[name]
            print(f"[lowfloor] {s} {name}: {len(matches)} matches (+{n_extra} of {n_extra_cand}, {d['extra_true']} true), "
                  f"matching {sc_['matching_uap']:.4f} pairwise {sc_['pairwise_uap']:.4f}, false verified "
                  f"{d['false_verified']}, ref IoU {d['ref_iou_true_verified']:.3f}, {d['status']}, cpu/query verify "
                  f"{d['cpu_s_per_query_verify']:.2f} s", flush=True)
        if args.library and args.only:
            b, lf, f, kp, rule, _ = settings[-1]
            cands, first, (qa, ra) = first_pass(b, lf)
            lp = dataclasses.replace(vp, second_floor=f, ref_rule=rule,
                                     second_min_side=0 if kp == "base" else int(kp[1:]))
            t1 = time.process_time()
            lib, _ = Verifier(lambda i: qdir / f"{i}.mp4", lambda i: rdir / f"{i}.mp4", lp, max_videos=10_000
                              ).verify_pairs(first, cands.pairs, qmap, rmap, cands.bias, {**loc, "floor": lf})
            t_lib = time.process_time() - t1
            ls = score_matches(gt, lib, qa, ra, 0)
            rows_out[f"{b:g}|{lf:g}|{f:g}|{kp}|{rule}|{settings[-1][5]}"]["library"] = {
                "matches": len(lib), "matching_uap": ls["matching_uap"], "pairwise_uap": ls["pairwise_uap"],
                "cpu_s_per_query_all": t_lib / len(q)}
            print(f"[lowfloor] {s} library path (Verifier.verify_pairs, {lp.second_floor=}): {len(lib)} matches, "
                  f"matching {ls['matching_uap']:.4f} pairwise {ls['pairwise_uap']:.4f}, CPU {t_lib / len(q):.2f} s per "
                  "query (keypoints included)", flush=True)
        base = next(iter(rows_out.values()))
        for res in rows_out.values():
            if res is not base and n_boot > 0:
                res["paired"] = paired_difference(res["scores"], base["scores"])
        if args.choose and chosen is None:
            names = list(rows_out)
            chosen = max(names, key=lambda x: (rows_out[x]["scores"]["matching_uap"], -names.index(x)))
        results[s] = {"queries": len(q), "first_pass_cpu_s_per_query": t_first / len(q),
                      "keypoints_cpu_s_per_query": {k: v / len(q) for k, v in kp_cpu.items()}, "rows": rows_out}

    def cell(res: dict, k: str) -> str:
        ci = res.get(f"{k}_ci")
        return f"{res[k]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    table = []
    for s, out in results.items():
        for name, res in out["rows"].items():
            d = res.get("paired", {}).get("matching_uap")
            st = res["status"]
            table.append({"set": s, "β / floor / 2nd floor / kp / rule / 2nd chance": name.replace("|", " / "), "extra (true)": f"{res['extra_verified']} ({res['extra_true']})",
                          "matching µAP": cell(res["scores"], "matching_uap"),
                          "− baseline": f"{d['difference']:+.4f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d else "",
                          "pairwise µAP": cell(res["scores"], "pairwise_uap"),
                          "copies: no pair / no overlap / unverified / verified": f"{st['no_pair']} / {st['no_overlap']} / "
                          f"{st['unverified']} / {st['verified']}",
                          "false verified": res["false_verified"], "ref IoU": f"{res['ref_iou_true_verified']:.3f}",
                          "CPU s/query verify": f"{res['cpu_s_per_query_verify']:.2f}"})
    rep.table(table, caption=f"95 % bootstrap intervals over queries, {n_boot} resamples, paired against the first row")
    rep.add(f"Encoder: {root}/models/copydetect/encoder.pt; descriptor {spec.label}; verify {dataclasses.asdict(vp)}; chosen: {chosen}; keypoint "
            "CPU s/query: " + "; ".join(f"{s} {o['keypoints_cpu_s_per_query']}" for s, o in results.items()))
    for out in results.values():
        for res in out["rows"].values():
            res["scores"].pop("_samples", None)
    rep.data = {"results": results, "chosen": chosen, "verify": dataclasses.asdict(vp)}
    rep.finish()
    if chosen:
        print(f"[lowfloor] chosen on {args.sets.split(',')[0]}: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
