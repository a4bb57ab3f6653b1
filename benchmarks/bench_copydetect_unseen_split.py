#!/usr/bin/env python
"""Copy detection on unseen footage with settings chosen on unseen footage (issue 17, session 9).

The unseen-source collection is built in two halves with no footage source in common
(`avmatch.copydetect.corpus.build_unseen_collection(split=...)`, `UNSEEN_SPLIT_SOURCES`): **val** = Debian
plasma-workspace-wallpapers, **test** = the six other unseen sources (desktop-base, gnome-backgrounds,
xplanet-images, debian-edu-artwork-emerald, sway-backgrounds, scikit-learn, matplotlib). References, noise
and the distractor footage of each half come from its own sources; 12 references, 4 noise videos and 96
queries (72 with a copy) per half. Each half is built under --collections when missing (~20 s each).

For each descriptor (trained: --root's models/copydetect/encoder.pt, read only; dct_colour: the training-free
DCT layout + colour histogram) the settings are chosen on the val half only, by matching (segment) µAP, in
three small coordinate steps (ties: the earlier grid value):

1. β (CSLS normalisation, the half's own noise videos) in BETAS, localisation as in --root's params.yaml;
2. the temporal network at that β: floor × per_row × max_gap in FLOORS × PER_ROWS × MAX_GAPS;
3. the session-9 options at those settings: ref_extend × smooth in REF_EXTENDS × SMOOTHS.

The test half is then scored with (a) --root's params.yaml settings, (b) the settings of step 2 (the
network's own parameters validated, new options off) and (c) all validated settings; descriptor, matching
and pairwise µAP with 95 % percentile bootstrap intervals over queries (the same resamples for every row, so
differences are paired: trained − dct_colour per row, (c) − (a) per descriptor). The demo corpus of --root
(frame cache, read only; every demo query is a test query) is scored with (a), (a) + the validated
ref_extend / smooth only, and (c), to check that what was chosen on unseen footage does not lower the demo.

--methods fused: the pipeline's `trained_dct` descriptor (`avmatch.copydetect.descriptor`, params.yaml
copydetect.descriptor; session 10): the trained descriptor and dct_colour concatenated, [trained, √w · dct_colour]
/ √(1 + w) (--fused-weight w), so a frame pair's similarity is (trained cosine + w × dct_colour cosine) / (1 + w);
chosen like the others, paired against dct_colour and the trained encoder.

Prints the report (--json PATH: the raw numbers, every grid point too); writes docs/benchmarks.md only with
--doc PATH. Session 9's run and what it says: docs/benchmarks.md, Copy detection, "2026-12-02 (session 9)".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from _report import Report, add_common_args, quiet_env, set_threads  # noqa: E402
from bench_copydetect_unseen import MEASURES, describe_collection, paired_difference, score_matches  # noqa: E402

BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
FLOORS = (0.3, 0.4, 0.5, 0.6, 0.7)
PER_ROWS = (3, 5, 8)
MAX_GAPS = (3, 5)
REF_EXTENDS = (0.0, 0.02, 0.05, 0.1, 0.15)
SMOOTHS = (1, 3, 5)
METHODS = ("trained", "dct_colour", "fused")


class Half:
    """One described half (or the demo corpus): recall per β computed once, localisation per setting."""

    def __init__(self, gt, queries, refs, noise, cd):
        from avmatch.copydetect.candidates import reference_index

        self.gt, self.queries, self.refs, self.noise, self.cd = gt, queries, refs, noise, cd
        self.index = reference_index(refs)
        self.q_by = {q.video_id: q for q in queries}
        self.r_by = {r.video_id: r for r in refs}
        self._cands: dict = {}

    def candidates(self, beta: float):
        from avmatch.copydetect.candidates import find_candidates

        if beta not in self._cands:
            self._cands[beta] = find_candidates(self.index, self.queries, self.noise, beta, self.cd.candidates.k,
                                                self.cd.candidates.max_pairs_per_query)
        return self._cands[beta]

    def matches(self, beta: float, loc: dict) -> list:
        from avmatch.copydetect.localisation import localise_pairs

        c = self.candidates(beta)
        return localise_pairs(c.pairs, self.q_by, self.r_by, c.bias, **loc)

    def matching_uap(self, beta: float, loc: dict) -> float:
        from avmatch.copydetect.metrics import matching_metrics

        return matching_metrics(self.gt, self.matches(beta, loc))["segment"].ap

    def score(self, beta: float, loc: dict, n_boot: int) -> dict:
        from avmatch.copydetect.candidates import descriptor_submission

        qa, ra = descriptor_submission(self.queries, self.refs, self.noise, beta)
        return score_matches(self.gt, self.matches(beta, loc), qa, ra, n_boot)


def choose_on_val(val: Half, beta0: float, loc0: dict) -> tuple[float, dict, dict, list]:
    """The three coordinate steps of the module docstring: (β, step-2 localisation, step-3 localisation, grid)."""
    grid = []

    def best(cands):   # cands: [(beta, loc)]; first best wins ties
        top = None
        for beta, loc in cands:
            v = val.matching_uap(beta, loc)
            grid.append({"beta": beta, **loc, "val_matching_uap": v})
            if top is None or v > top[0] + 1e-12:
                top = (v, beta, loc)
        return top

    base = {**loc0, "smooth": 1, "ref_extend": 0.0}
    _, beta, _ = best([(b, base) for b in BETAS])
    _, _, loc_net = best([(beta, {**base, "floor": f, "per_row": p, "max_gap": g})
                          for f in FLOORS for p in PER_ROWS for g in MAX_GAPS])
    _, _, loc_all = best([(beta, {**loc_net, "ref_extend": e, "smooth": s}) for e in REF_EXTENDS for s in SMOOTHS])
    return beta, loc_net, loc_all, grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="project whose params.yaml, models/copydetect/encoder.pt and "
                   "(unless --no-demo) data/copydetect frame cache are used, read only")
    p.add_argument("--collections", default=str(ROOT / "data/copydetect/unseen_split"),
                   help="folder of the two halves (val/, test/; built there when missing)")
    p.add_argument("--rebuild", action="store_true", help="build both halves again even when present")
    p.add_argument("--seed", type=int, default=11, help="collection seed")
    p.add_argument("--no-demo", action="store_true", help="skip the demo corpus check")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples over queries (0 = none)")
    p.add_argument("--methods", default="trained,dct_colour", help="comma-separated, of " + ", ".join(METHODS)
                   + " (fused: the pipeline's trained_dct descriptor, the trained one and dct_colour concatenated)")
    p.add_argument("--fused-weight", type=float, default=0.5, help="weight w of dct_colour in fused (params.yaml's "
                   "copydetect.descriptor.dct_weight: 0.5, chosen on val)")
    add_common_args(p)
    args = p.parse_args(argv)
    args.no_doc = args.no_doc or args.doc is None
    quiet_env(args.verbose, args.quick)
    threads = set_threads(args.threads)
    import json

    from avmatch.copydetect.corpus import build_unseen_collection
    from avmatch.copydetect.dct_colour import dct_colour_descriptors
    from avmatch.copydetect.metrics import read_matches
    from avmatch.copydetect.descriptor import DescriptorSpec, frame_describer
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.core.config import load_params
    from pipelines.copydetect.evaluate import _describe_sets
    from pipelines.copydetect.paths import CopydetectPaths
    from pipelines.copydetect.shared import noise_matrix

    rep = Report("copydetect_unseen_split", "Copy detection: settings chosen on unseen footage, tested on other "
                 "unseen footage", args)
    rep.refresh_machine()
    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    cd = params.copydetect
    loc0 = cd.localise.model_dump()
    folder = Path(args.collections)
    info, build_s = {}, {}
    for split in ("val", "test"):
        if args.rebuild or not (folder / split / "matching_ground_truth.csv").exists():
            t0 = time.perf_counter()
            build_unseen_collection(folder / split, seed=args.seed, split=split)
            build_s[split] = round(time.perf_counter() - t0, 1)
        info[split] = json.loads((folder / split / "corpus.json").read_text())
    if set(info["val"]["sources"]) & set(info["test"]["sources"]):
        raise SystemExit("the two halves share a footage source: " + str(set(info["val"]["sources"]) & set(info["test"]["sources"])))

    encoder = root / "models/copydetect/encoder.pt"
    trained = load_frame_encoder(encoder)
    # fused: the pipeline's trained_dct descriptor (copydetect.descriptor), the library's own builder
    embedders = {"trained": frame_describer(DescriptorSpec("trained"), trained, "cpu", cd.extract.batch_size),
                 "dct_colour": dct_colour_descriptors,
                 "fused": frame_describer(DescriptorSpec("trained_dct", args.fused_weight), trained, "cpu",
                                          cd.extract.batch_size)}
    embedders = {k: v for k, v in embedders.items() if k in args.methods.split(",")}
    n_boot = 10 if args.quick else args.bootstrap

    def described(kind: str, embed) -> Half:
        if kind == "demo":
            paths = CopydetectPaths.from_params(params, root)
            gt = read_matches(paths.ground_truth, is_gt=True)
            q, r, n = _describe_sets(paths, embed)
        else:
            gt = read_matches(folder / kind / "matching_ground_truth.csv", is_gt=True)
            q, r, n = describe_collection(folder / kind, embed, cd.frames.fps, cd.frames.size)
        if args.quick:
            q = q[:12]
            gt = [m for m in gt if m.query_id in {x.video_id for x in q}]
        return Half(gt, q, r, noise_matrix(n, r[0].features.shape[1]), cd)

    results: dict = {}
    for method, embed in embedders.items():
        t0 = time.perf_counter()
        val = described("val", embed)
        beta, loc_net, loc_all, grid = choose_on_val(val, cd.candidates.beta, loc0)
        res = {"chosen": {"beta": beta, "network": loc_net, "all": loc_all}, "grid": grid,
               "val": {"params": val.matching_uap(cd.candidates.beta, loc0), "network": val.matching_uap(beta, loc_net),
                       "all": val.matching_uap(beta, loc_all)}}
        test = described("test", embed)
        res["test"] = {"params": test.score(cd.candidates.beta, loc0, n_boot), "network": test.score(beta, loc_net, n_boot),
                       "all": test.score(beta, loc_all, n_boot)}
        if not args.no_demo:
            demo = described("demo", embed)
            new_only = {**loc0, "ref_extend": loc_all["ref_extend"], "smooth": loc_all["smooth"]}
            res["demo"] = {"params": demo.score(cd.candidates.beta, loc0, n_boot),
                           "params_new_options": demo.score(cd.candidates.beta, new_only, n_boot),
                           "all": demo.score(beta, loc_all, n_boot)}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[method] = res
        print(f"[bench] {method}: chosen {res['chosen']}, val {res['val']}", flush=True)

    sets = ["test"] + ([] if args.no_demo else ["demo"])
    paired: dict = {}
    if n_boot > 0:
        for s in sets:
            paired[s] = {}
            for method in [m for m in results if m != "dct_colour" and "dct_colour" in results]:
                for row in results[method][s]:
                    paired[s][f"{method} − dct_colour, {row}"] = paired_difference(results[method][s][row],
                                                                                  results["dct_colour"][s][row])
            if {"fused", "trained"} <= set(results):
                for row in results["fused"][s]:
                    paired[s][f"fused − trained, {row}"] = paired_difference(results["fused"][s][row],
                                                                             results["trained"][s][row])
            for method in results:
                paired[s][f"{method}: all − params"] = paired_difference(results[method][s]["all"],
                                                                         results[method][s]["params"])
        for method in results:
            for s in sets:
                for row in results[method][s].values():
                    row.pop("_samples", None)

    def cell(res: dict, k: str) -> str:
        ci = res.get(f"{k}_ci")
        return f"{res[k]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    def setting(beta: float, loc: dict) -> str:
        return (f"β {beta:g}, floor {loc['floor']:g}, per_row {loc['per_row']}, max_gap {loc['max_gap']}, "
                f"ref_extend {loc['ref_extend']:g}, smooth {loc['smooth']}")

    rep.table([{"method": m, "params.yaml": setting(cd.candidates.beta, {**loc0}),
                "val: params → step 2 → step 3": " → ".join(f"{results[m]['val'][k]:.3f}" for k in ("params", "network", "all")),
                "chosen on val (step 3)": setting(results[m]["chosen"]["beta"], results[m]["chosen"]["all"])}
               for m in results], caption="Settings chosen on the val half (plasma-workspace-wallpapers), matching µAP there")
    labels = {"params": "params.yaml settings", "network": "β + network chosen on val (new options off)",
              "all": "all chosen on val", "params_new_options": "params.yaml + the val-chosen ref_extend / smooth"}
    for s in sets:
        rows = [{"method": m, "settings": labels[row], **{k: cell(res, k) for k in MEASURES}}
                for m in results for row, res in results[m][s].items()]
        what = (f"test half ({info['test']['references']} references, {info['test']['queries']} queries, "
                f"{info['test']['copied_segments']} copied segments; sources {', '.join(sorted(info['test']['sources']))})"
                if s == "test" else f"demo corpus of {root} (all queries)")
        rep.table(rows, caption=f"{what}: µAP [95 % bootstrap interval over queries, {n_boot} resamples]")
        if s in paired:
            rep.table([{"difference": label, **{k: f"{v['difference']:+.3f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}]; "
                                                   f"{100 * v['share_a_better']:.0f} %" for k, v in d.items()}}
                       for label, d in paired[s].items()],
                      caption=f"{s}: paired bootstrap differences [95 % interval]; share of resamples where the first is ahead")
    rep.add(f"Encoder: {encoder} ({threads} threads); halves "
            + (f"built in {build_s} s" if build_s else "reused") + f"; {folder}")
    rep.data = {"results": results, "paired": paired, "corpus": info, "build_seconds": build_s,
                "grid": {"betas": BETAS, "floors": FLOORS, "per_rows": PER_ROWS, "max_gaps": MAX_GAPS,
                         "ref_extends": REF_EXTENDS, "smooths": SMOOTHS}}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
