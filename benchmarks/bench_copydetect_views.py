#!/usr/bin/env python
"""Query crop views for picture-in-picture copies (issue 17, session 14): matching / pairwise µAP with and without.

On unseen footage every copy that got no overlapping match at all was a picture-in-picture inset, which a
whole-frame descriptor cannot see. The views (`avmatch.copydetect.query_views`): crops of each query frame
(`--crops` sides x the frame, `--grid` x `--grid` positions), described with the pipeline's descriptor, searched
and localised as queries of their own; their new segments kept only when they verify (`verify.view_pass`).

For each `HALF:SEED` collection of unseen footage (built with `build_unseen_collection` when missing; encoder,
whitening fit and every other setting = --root's / --params', as bench_copydetect_lowfloor.py): the default
matches (candidates, localisation, `Verifier.verify_pairs`), then, per crop side, the verified view segments with
rule `all` (`view_pass`); rule `new_pairs` keeps those outside pairs with a verified whole-frame match and bonus b
shifts their scores by b - views_bonus, which is what `view_pass` gives with those settings (the verification of a
segment does not depend on them), so the grid costs one verification per crop side. Grid 2 is measured apart
(`--grid 2`). `--dump DIR`: per set `<set>/queries.txt`, `gt.csv`, `default.csv` and `views_<crop>_<rule>_<bonus>.csv`
for bench_copydetect_pooled.py.

    python benchmarks/bench_copydetect_views.py --root /work/cd14 --collections /tmp/cd14/coll --sets val:11 --cache /tmp/cd14/feats
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="project whose params.yaml, encoder and demo corpus are used")
    p.add_argument("--params", default=None, help="params.yaml instead of --root's")
    p.add_argument("--collections", required=True, help="folder of the collections: <folder>/s<seed>/<half>")
    p.add_argument("--sets", required=True, help="comma-separated HALF:SEED (half: val or test)")
    p.add_argument("--cache", default=None, help="folder keeping the described sets")
    p.add_argument("--crops", default="0.5,0.6,0.7", help="crop sides (fractions of the frame), comma-separated")
    p.add_argument("--grid", type=int, default=3)
    p.add_argument("--bonuses", default="1.0,0.5", help="view bonuses, comma-separated")
    p.add_argument("--dump", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from bench_copydetect_lowfloor import collection_bench_setup, whitened_set
    from avmatch.copydetect.candidates import find_candidates, reference_index
    from avmatch.copydetect.localisation import localise_pairs
    from avmatch.copydetect.metrics import matching_metrics, write_matches
    from avmatch.copydetect.query_views import describe_views, localised_views
    from avmatch.copydetect.verify import Verifier, VerifyParams, view_pass
    from avmatch.core.video import decode_frames

    root, params, cache, described = collection_bench_setup(args)
    cd = params.copydetect
    cc, loc = cd.candidates, cd.localise.model_dump()
    _, embed, _, whitening = described
    describe = embed if whitening is None else (lambda frames: whitening.apply(embed(frames)))
    base = dataclasses.replace(VerifyParams.from_params(cd.verify), views_crop=0.0, views_rule="all")
    results: dict = {}

    def ap(gt, ms) -> dict:
        mm = matching_metrics(gt, ms)
        return {"matching_uap": mm["segment"].ap, "pairwise_uap": mm["pairwise"].ap}

    for item in args.sets.split(","):
        half, seed = item.split(":")
        gt, q, r, noise, vdir = whitened_set(item, params, root, Path(args.collections), described, cache)
        qdir, rdir = vdir / cd.corpus.query_dir, vdir / cd.corpus.ref_dir
        qm, rm = {x.video_id: x for x in q}, {x.video_id: x for x in r}
        index = reference_index(r)
        c = find_candidates(index, q, noise, cc.beta, cc.k, cc.max_pairs_per_query)
        first = localise_pairs(c.pairs, qm, rm, c.bias, **loc)
        verifier = Verifier(lambda i: qdir / f"{i}.mp4", lambda i: rdir / f"{i}.mp4", base, max_videos=10_000)
        t0 = time.process_time()
        default, counts = verifier.verify_pairs(first, c.pairs, qm, rm, c.bias, loc)
        t_verify = time.process_time() - t0
        verified_pairs = {(m.query_id, m.ref_id) for m, n in zip(default, counts) if n >= base.min_inliers}
        frames = {x.video_id: decode_frames(qdir / f"{x.video_id}.mp4", fps=cd.frames.fps, size=cd.frames.size).frames
                  for x in q}
        tag = f"{half}_s{seed}"
        res = {"queries": len(q), "copies": len(gt), "default": ap(gt, default),
               "cpu_s_per_query_verify": t_verify / len(q), "views": {}}
        dump = Path(args.dump) / tag if args.dump else None
        if dump:
            dump.mkdir(parents=True, exist_ok=True)
            (dump / "queries.txt").write_text("\n".join(x.video_id for x in q) + "\n")
            write_matches(dump / "gt.csv", gt, gt=True)
            write_matches(dump / "default.csv", default)
        print(f"[views] {tag}: default {res['default']}", flush=True)
        for crop in [float(x) for x in args.crops.split(",")]:
            t0 = time.process_time()
            views = [v for x in q for v in describe_views(x, frames[x.video_id], describe, crop, args.grid)]
            t_describe = time.process_time() - t0
            found = localised_views(views, index, rm, noise, cc.beta, cc.k, cc.max_pairs_per_query, loc)
            t_localise = time.process_time() - t0 - t_describe
            p_all = dataclasses.replace(base, views_crop=crop, views_grid=args.grid, views_rule="all")
            verifier.params = p_all
            t0 = time.process_time()
            kept, _ = view_pass(verifier, found, first, default, counts)
            t_pass = time.process_time() - t0
            verifier.params = base
            for rule in ("all", "new_pairs"):
                for bonus in [float(x) for x in args.bonuses.split(",")]:
                    extra = [dataclasses.replace(m, score=m.score - p_all.views_bonus + bonus) for m in kept
                             if rule == "all" or (m.query_id, m.ref_id) not in verified_pairs]
                    name = f"{crop:g}_{rule}_{bonus:g}"
                    res["views"][name] = {**ap(gt, default + extra), "added": len(extra)}
                    if dump:
                        write_matches(dump / f"views_{name}.csv", default + extra)
                    print(f"[views] {tag} crop {crop:g} grid {args.grid} {rule} bonus {bonus:g}: {res['views'][name]}",
                          flush=True)
            res["views"][f"{crop:g}_cpu_s_per_query"] = {"describe": t_describe / len(q), "localise": t_localise / len(q),
                                                         "verify": t_pass / len(q)}
        results[tag] = res
    text = json.dumps(results, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
