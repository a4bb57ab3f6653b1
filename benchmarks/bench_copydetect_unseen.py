#!/usr/bin/env python
"""Copy detection on footage sources never used in training (issue 17): does the descriptor generalise?

The unseen-source collection (`avmatch.copydetect.corpus.build_unseen_collection`: the demo corpus's
transformations, splicing, ground truth and VSC22 layout, drawn only from photo sources that neither
the demo corpus nor training uses, pHash-disjoint from every demo photo) is built under --collection
when it is missing (a few minutes on 2 busy cores), or reused.

Four descriptors through the project's own recall (`detect_copies`: FAISS k-NN, CSLS normalisation with
the collection's noise set, candidate pairs) and localisation, with the settings of --root's
params.yaml, scored with the project's VSC22 metrics (descriptor µAP on the descriptor-track
submission, matching segment µAP and pairwise µAP):

* trained: --root's models/copydetect/encoder.pt (read only);
* untrained: the same architecture, seeded as the evaluate stage seeds it;
* dct_colour: the training-free DCT layout + colour histogram descriptor;
* phash: 64-bit pHash per frame (±1 vector).

Frames are decoded at copydetect.frames.fps / size, as the frames stage does. The same four are scored on
the demo corpus of --root from its frame cache (read only; every demo query is a test query: training
sees references and noise only). Intervals: 95 % percentile bootstrap over queries (--bootstrap
resamples; a resampled query's copies are renamed so each counts as its own query); the same resamples
for every method give the paired trained − DCT + colour differences.

Prints the report (--json PATH: the raw numbers too); writes docs/benchmarks.md only with --doc PATH.
Session 7's run and what it says: docs/benchmarks.md, Copy detection, "footage sources never used in training".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from _report import Report, add_common_args, quiet_env, set_threads  # noqa: E402

METHODS = ("trained", "untrained", "dct_colour", "phash")
MEASURES = ("descriptor_uap", "matching_uap", "pairwise_uap")


def describe_collection(folder: Path, embed, fps: float, size: int) -> tuple[list, list, list]:
    """Queries, references and noise of a VSC22 folder described by `embed` (frames -> vectors)."""
    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.core.video import decode_frames

    out = []
    for sub in ("query", "reference", "noise"):
        feats = []
        for v in sorted((folder / sub).glob("*.mp4")):
            dec = decode_frames(v, fps=fps, size=size)
            feats.append(VideoFeatures(v.stem, dec.timestamps, embed(dec.frames)))
        out.append(feats)
    return tuple(out)


def pipeline_describer(root: Path, batch_size: int = 128):
    """(spec, frames -> vectors): --root's pipeline descriptor as `avmatch copydetect add` takes it (params.yaml's
    copydetect.descriptor; a section older than the post-processing options is the plain descriptor), whitened
    with the fit of --root's extract stage when it is whitened."""
    from avmatch.copydetect.db_build import _project_settings, whitening_for
    from avmatch.copydetect.descriptor import DescriptorSpec, Whitening, frame_describer
    from avmatch.copydetect.model import load_frame_encoder

    enc = Path(root) / "models/copydetect/encoder.pt"
    spec = DescriptorSpec.from_record(_project_settings(Path(root))["descriptor"])
    fit = whitening_for(enc, spec)
    return spec, frame_describer(spec, load_frame_encoder(enc), "cpu", batch_size, Whitening.load(fit) if fit else None)


def score(gt, queries, refs, noise, cd, beta: float, n_boot: int, seed: int = 0) -> dict:
    """µAPs of one descriptor set at normalisation weight β, with bootstrap intervals over queries."""
    from avmatch.copydetect.candidates import descriptor_submission
    from avmatch.copydetect.localisation import detect_copies

    _, matches = detect_copies(queries, refs, noise, beta, cd.candidates.k, cd.candidates.max_pairs_per_query,
                               **cd.localise.model_dump())
    qa, ra = descriptor_submission(queries, refs, noise, beta)
    return score_matches(gt, matches, qa, ra, n_boot, seed)


def score_matches(gt, matches, qa, ra, n_boot: int, seed: int = 0) -> dict:
    """Descriptor µAP of the submission descriptors `qa` / `ra`, matching and pairwise µAP of `matches`, with
    95 % percentile bootstrap intervals over queries (`n_boot` resamples of seed `seed`; a resampled query's
    copies are renamed so each counts as its own query). "_samples" keeps the resampled values: the same
    seed gives the same resamples for every method, so differences of samples are paired."""
    import numpy as np

    from avmatch.copydetect.metrics import Match, VideoFeatures, descriptor_ap, matching_metrics

    def measure(gt_, matches_, qa_) -> dict:
        mm = matching_metrics(gt_, matches_)
        return {"descriptor_uap": descriptor_ap(gt_, qa_, ra).ap, "matching_uap": mm["segment"].ap,
                "pairwise_uap": mm["pairwise"].ap}

    out = measure(gt, matches, qa)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        ids = sorted(q.video_id for q in qa)
        by_q = {q.video_id: q for q in qa}
        gt_by = {i: [m for m in gt if m.query_id == i] for i in ids}
        pred_by = {i: [m for m in matches if m.query_id == i] for i in ids}

        def renamed(m, new_id):
            return Match(new_id, m.ref_id, m.query_start, m.query_end, m.ref_start, m.ref_end, m.score)

        samples = {k: [] for k in MEASURES}
        for _ in range(n_boot):
            pick = rng.integers(len(ids), size=len(ids))
            g, p, q = [], [], []
            for j, i in enumerate(pick):
                new = f"{ids[i]}#{j}"
                g += [renamed(m, new) for m in gt_by[ids[i]]]
                p += [renamed(m, new) for m in pred_by[ids[i]]]
                q.append(VideoFeatures(new, by_q[ids[i]].timestamps, by_q[ids[i]].features))
            if not g:
                continue
            for k, v in measure(g, p, q).items():
                samples[k].append(v)
        for k, vals in samples.items():
            out[f"{k}_ci"] = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]
        out["_samples"] = samples   # the same resamples (seed) for every method: paired differences
    return out


def paired_difference(a: dict, b: dict) -> dict:
    """a − b per measure, with the 95 % interval of the paired bootstrap differences and how often a > b."""
    import numpy as np

    out = {}
    for k in MEASURES:
        d = np.asarray(a["_samples"][k]) - np.asarray(b["_samples"][k])
        out[k] = {"difference": a[k] - b[k], "ci": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
                  "share_a_better": float((d > 0).mean())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="project whose params.yaml, models/copydetect/encoder.pt and "
                   "(for --demo) data/copydetect frame cache are used, read only")
    p.add_argument("--collection", default=str(ROOT / "data/copydetect/unseen"),
                   help="unseen-source collection folder (built there when missing)")
    p.add_argument("--rebuild", action="store_true", help="build the collection again even when present")
    p.add_argument("--seed", type=int, default=11, help="collection seed")
    p.add_argument("--no-demo", action="store_true", help="skip the demo corpus comparison")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples over queries (0 = none)")
    add_common_args(p)
    args = p.parse_args(argv)
    # the dated sub-sections of docs/benchmarks.md are written by hand from this report: a run changes the
    # docs file only when --doc names it (results:copydetect_unseen markers)
    args.no_doc = args.no_doc or args.doc is None
    quiet_env(args.verbose, args.quick)
    threads = set_threads(args.threads)
    import torch

    from avmatch.copydetect.corpus import build_unseen_collection
    from avmatch.copydetect.dct_colour import dct_colour_descriptors
    from avmatch.copydetect.metrics import read_matches
    from avmatch.copydetect.model import FrameEncoder, embed_frames, load_frame_encoder
    from avmatch.copydetect.phash import phash_descriptors
    from avmatch.core.config import load_params
    from pipelines.copydetect.evaluate import _describe_sets
    from pipelines.copydetect.paths import CopydetectPaths
    from pipelines.copydetect.shared import noise_matrix

    rep = Report("copydetect_unseen", "Copy detection on footage sources never used in training", args)
    rep.refresh_machine()
    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    cd = params.copydetect
    collection = Path(args.collection)
    build_s = None
    if args.rebuild or not (collection / "matching_ground_truth.csv").exists():
        t0 = time.perf_counter()
        build_unseen_collection(collection, seed=args.seed)
        build_s = time.perf_counter() - t0
    import json

    info = json.loads((collection / "corpus.json").read_text())

    encoder = root / "models/copydetect/encoder.pt"
    trained = load_frame_encoder(encoder)
    torch.manual_seed(params.common.seed)
    untrained = FrameEncoder(cd.model.dim, cd.model.channels, cd.model.input_size).eval()
    embedders = {"trained": lambda f: embed_frames(trained, f, "cpu", cd.extract.batch_size),
                 "untrained": lambda f: embed_frames(untrained, f, "cpu", cd.extract.batch_size),
                 "dct_colour": dct_colour_descriptors, "phash": phash_descriptors}
    n_boot = 20 if args.quick else args.bootstrap
    betas = {f"β={cd.candidates.beta:g} (params)": cd.candidates.beta, "β=0": 0.0}

    sets = {"unseen": None} if args.no_demo else {"unseen": None, "demo": None}
    results: dict = {}
    for set_name in sets:
        if set_name == "unseen":
            gt = read_matches(collection / "matching_ground_truth.csv", is_gt=True)
        else:
            paths = CopydetectPaths.from_params(params, root)
            gt = read_matches(paths.ground_truth, is_gt=True)
        for method, embed in embedders.items():
            t0 = time.perf_counter()
            if set_name == "unseen":
                q, r, n = describe_collection(collection, embed, cd.frames.fps, cd.frames.size)
            else:
                q, r, n = _describe_sets(paths, embed)
            if args.quick:
                q = q[:8]
            noise = noise_matrix(n, r[0].features.shape[1])
            for label, beta in betas.items():
                res = score(gt if not args.quick else [m for m in gt if m.query_id in {x.video_id for x in q}],
                            q, r, noise, cd, beta, n_boot)
                results.setdefault(set_name, {}).setdefault(method, {})[label] = res
            results[set_name][method]["seconds"] = time.perf_counter() - t0
            print(f"[bench] {set_name} {method}: {results[set_name][method]}", flush=True)

    def cell(res: dict, k: str) -> str:
        ci = res.get(f"{k}_ci")
        return f"{res[k]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    paired: dict = {}
    if n_boot > 0:
        for set_name, by_method in results.items():
            for label in betas:
                paired.setdefault(set_name, {})[label] = paired_difference(by_method["trained"][label],
                                                                           by_method["dct_colour"][label])
        for by_method in results.values():
            for method in METHODS:
                for label in betas:
                    by_method[method][label].pop("_samples", None)
    for set_name, by_method in results.items():
        rows = []
        for method in METHODS:
            for label in betas:
                res = by_method[method][label]
                rows.append({"method": method, "normalisation": label,
                             **{k: cell(res, k) for k in MEASURES}})
        if set_name == "unseen":
            what = (f"unseen-source collection ({info['references']} references, {info['queries']} queries, "
                    f"{info['copied_segments']} copied segments, {info['noise_videos']} noise videos; sources: "
                    f"{', '.join(sorted(info['sources']))})")
        else:
            what = f"demo corpus of {root} (all queries)"
        rep.table(rows, caption=f"{what}: µAP [95 % bootstrap interval over queries, {n_boot} resamples]")
        if set_name in paired:
            rep.table([{"normalisation": label, **{k: f"{v['difference']:+.3f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}]; "
                                                      f"{100 * v['share_a_better']:.0f} %" for k, v in d.items()}}
                       for label, d in paired[set_name].items()],
                      caption=f"{set_name}: trained − dct_colour, paired bootstrap [95 % interval]; share of "
                              "resamples where the trained encoder is ahead")
    rep.add(f"Encoder: {encoder} ({threads} threads)"
            + (f"; collection built in {build_s:.0f} s" if build_s is not None else "; collection reused"))
    rep.data = {"results": results, "trained_minus_dct_colour": paired, "collection": str(collection), "corpus": info, "build_seconds": build_s}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
