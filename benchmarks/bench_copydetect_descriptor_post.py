#!/usr/bin/env python
"""Post-processing of the copy-detection frame descriptor on unseen footage, and DCT + colour under verification
(issue 17, session 13).

Every frame of a set (val / test halves of the unseen-source collection, `build_unseen_collection` under
--collections; `demo`: --root's demo corpus from its frame cache) is described once by its two parts, the trained
encoder's descriptor (--root's models/copydetect/encoder.pt, read only) and the training-free DCT layout + colour
histogram (`avmatch.copydetect.dct_colour`), of the frame and of its mirror image (cached under --cache). The
descriptors compared are built from these parts (VARIANTS, or --variants):

* ``pipeline``: the pipeline's trained ⊕ DCT (`avmatch.copydetect.descriptor.concatenate`, --root's dct_weight);
* ``dct_colour``: the training-free DCT + colour alone; ``trained``: the encoder alone;
* ``w<x>``: trained ⊕ DCT at dct_weight x;
* ``tta``: each part averaged with its mirror frame's (one descriptor per frame), then trained ⊕ DCT;
* ``tta_<variant>``: a ``w<x>``, ``dct_colour`` or whitened variant of the mirror-averaged parts (the whitening
  then fitted on mirror-averaged training frames);
* ``pcaw<a>[_s<x>][_sqrt]``: trained ⊕ DCT (or, ``dctpcaw...``, DCT + colour alone) PCA-whitened: centred on
  the mean of the TRAINING frames (the demo corpus's references and noise, the encoder's own training
  material; never the unseen sources), rotated onto their principal axes, each component scaled by
  (eigenvalue + x · mean eigenvalue)^(-a/2) (a = 1: full whitening; x: shrinkage toward the identity,
  Jégou & Chum 2012), ``_sqrt``: signed square root of the components after whitening, then unit length.

Each descriptor goes through the project's recall (β normalisation with the set's noise), localisation and, with
--verify, the library's geometric verification (`Verifier.verify`, its defaults; keypoints computed once per set,
every match verified once across descriptors): descriptor µAP, matching µAP (verified and not) and pairwise µAP
with 95 % bootstrap intervals over queries (the same resamples for all: paired differences against the first
variant). Settings: params.yaml of --root, except ``dct_colour`` at its val-chosen settings (session 10: β 0.25,
floor 0.5, ref_extend 0; --dct-settings).
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

VARIANTS = ("pipeline", "dct_colour", "trained", "w0.25", "w0.75", "w1", "tta", "pcaw1", "pcaw0.5", "pcaw1_s0.1",
            "pcaw1_sqrt", "pcaw0.5_sqrt", "dctpcaw1")


def describe_parts(frames):
    """[n, 4, ·] stacked parts of frames: trained, dct of the frame; trained, dct of its mirror (padded)."""
    import numpy as np

    from avmatch.copydetect.dct_colour import dct_colour_descriptors
    from avmatch.copydetect.model import embed_frames

    flip = np.ascontiguousarray(frames[:, :, ::-1])
    t, d = embed_frames(MODEL[0], frames, "cpu", 128), dct_colour_descriptors(frames)
    tf, df = embed_frames(MODEL[0], flip, "cpu", 128), dct_colour_descriptors(flip)
    return np.concatenate([t, d, tf, df], 1)


MODEL: list = []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT))
    p.add_argument("--collections", default=str(ROOT / "data/copydetect/unseen_split"))
    p.add_argument("--sets", default="val", help="comma-separated, of val, test, demo")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--verify", action="store_true", help="also verify every variant's matches (library defaults)")
    p.add_argument("--dct-settings", default="0.25,0.5,0", help="β,floor,ref_extend of the dct_colour variants")
    p.add_argument("--cache", default=None, help="folder keeping the described parts (per set, seed and encoder; "
                   "default: none)")
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
    from avmatch.copydetect.dct_colour import DIM as DD
    from avmatch.copydetect.descriptor import concatenate
    from avmatch.copydetect.localisation import localise_pairs
    from avmatch.copydetect.metrics import VideoFeatures, read_matches
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.copydetect.verify import Verifier, VerifyParams
    from avmatch.core.config import load_params
    from avmatch.core.hashing import file_hash
    from pipelines.copydetect.evaluate import _describe_sets
    from pipelines.copydetect.paths import CopydetectPaths

    cv2.setNumThreads(max(1, threads))
    rep = Report("copydetect_descriptor_post", "Copy detection: descriptor post-processing on unseen footage", args)
    rep.refresh_machine()
    root = Path(args.root).resolve()
    params = load_params(root / "params.yaml")
    cd = params.copydetect
    MODEL.append(load_frame_encoder(root / "models/copydetect/encoder.pt"))
    TD = cd.model.dim
    w0 = cd.descriptor.dct_weight
    cache = Path(args.cache) if args.cache else None
    enc_tag = file_hash(root / "models/copydetect/encoder.pt")[:12]
    folder = Path(args.collections)
    n_boot = 10 if args.quick else args.bootstrap

    def parts_of(s: str):
        tag = s if s == "demo" else f"{s}_seed{args.seed}"    # a collection's halves differ with the seed
        f = cache / f"{tag}_{enc_tag}.npz" if cache else None
        if f is not None and f.exists():
            z = np.load(f, allow_pickle=True)
            return tuple([VideoFeatures(i, t, x) for i, t, x in z[k]] for k in ("q", "r", "n"))
        t0 = time.perf_counter()
        if s == "demo":
            q, r, n = _describe_sets(CopydetectPaths.from_params(params, root), describe_parts)
        else:
            if not (folder / s / "matching_ground_truth.csv").exists():
                build_unseen_collection(folder / s, seed=args.seed, split=s)
            q, r, n = describe_collection(folder / s, describe_parts, cd.frames.fps, cd.frames.size)
        pack = {k: np.array([(v.video_id, v.timestamps, v.features) for v in vs], dtype=object)
                for k, vs in zip("qrn", (q, r, n))}
        if f is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(f, **pack)
        print(f"[post] {s}: parts described in {time.perf_counter() - t0:.0f} s", flush=True)
        return q, r, n

    def unit(x):
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    # the whitening is learnt on the training footage only: the demo corpus's references and noise
    _, dr, dn = parts_of("demo")
    train = np.concatenate([v.features for v in dr + dn])
    fits: dict = {}

    def pca(x: np.ndarray) -> tuple:
        mu = x.mean(0)
        cov = np.cov((x - mu).T)
        ev, vec = np.linalg.eigh(cov)
        order = np.argsort(ev)[::-1]
        return mu, np.maximum(ev[order], 1e-12), vec[:, order]

    def base(x: np.ndarray, which: str, w: float = w0, tta: bool = False) -> np.ndarray:
        t, d = x[:, :TD], x[:, TD:TD + DD]
        if tta:
            t = unit(t + x[:, TD + DD:2 * TD + DD])
            d = unit(d + x[:, 2 * TD + DD:])
        if which == "dct":
            return d
        if which == "trained":
            return t
        return concatenate(t, d, w)

    def whiten(x: np.ndarray, which: str, a: float, shrink: float, sqrt: bool, tta: bool = False) -> np.ndarray:
        if (which, tta) not in fits:
            fits[which, tta] = pca(base(train, which, tta=tta).astype(np.float64))
        mu, ev, vec = fits[which, tta]
        y = (base(x, which, tta=tta) - mu) @ vec
        y = y * (ev + shrink * ev.mean()) ** (-a / 2)
        if sqrt:
            y = np.sign(y) * np.sqrt(np.abs(y))
        return unit(y)

    def post(name: str):
        if name.startswith("tta_"):
            rest = name[4:]
            if rest.startswith("w"):
                return lambda x: base(x, "both", float(rest[1:]), tta=True)
            if rest == "dct_colour":
                return lambda x: base(x, "dct", tta=True)
            which = "dct" if rest.startswith("dct") else "both"
            bits = rest.split("pcaw", 1)[1].split("_")
            shrink = next((float(b[1:]) for b in bits[1:] if b.startswith("s") and b != "sqrt"), 0.0)
            return lambda x: whiten(x, which, float(bits[0]), shrink, "sqrt" in bits, tta=True)
        if name == "pipeline":
            return lambda x: base(x, "both")
        if name == "dct_colour":
            return lambda x: base(x, "dct")
        if name == "trained":
            return lambda x: base(x, "trained")
        if name.startswith("w"):
            return lambda x: base(x, "both", float(name[1:]))
        if name == "tta":
            return lambda x: base(x, "both", tta=True)
        if name.startswith(("pcaw", "dctpcaw")):
            which = "dct" if name.startswith("dct") else "both"
            bits = name.split("pcaw", 1)[1].split("_")
            a = float(bits[0])
            shrink = next((float(b[1:]) for b in bits[1:] if b.startswith("s") and b != "sqrt"), 0.0)
            return lambda x: whiten(x, which, a, shrink, "sqrt" in bits)
        raise SystemExit(f"unknown variant {name}")

    vp = VerifyParams()
    b_dct, floor_dct, rext_dct = (float(v) for v in args.dct_settings.split(","))
    variants = args.variants.split(",")
    results: dict = {}
    for s in args.sets.split(","):
        q0, r0, n0 = parts_of(s)
        if s == "demo":
            paths = CopydetectPaths.from_params(params, root)
            gt = read_matches(paths.ground_truth, is_gt=True)
            vdir = paths.corpus
        else:
            gt = read_matches(folder / s / "matching_ground_truth.csv", is_gt=True)
            vdir = folder / s
        if args.quick:
            q0 = q0[:12]
            gt = [m for m in gt if m.query_id in {x.video_id for x in q0}]
        ver = None
        if args.verify:
            qdir, rdir = vdir / cd.corpus.query_dir, vdir / cd.corpus.ref_dir
            ver = Verifier(lambda i: qdir / f"{i}.mp4", lambda i: rdir / f"{i}.mp4", vp, max_videos=10_000)
        memo: dict = {}
        rows: dict = {}
        for name in variants:
            t0 = time.process_time()
            f = post(name)
            q, r, n = ([VideoFeatures(v.video_id, v.timestamps, f(v.features)) for v in vs] for vs in (q0, r0, n0))
            noise = np.concatenate([v.features for v in n])
            dct = name.startswith(("dct", "tta_dct"))   # the training-free descriptor's own settings
            beta = b_dct if dct else cd.candidates.beta
            loc = {**cd.localise.model_dump(), **({"floor": floor_dct, "ref_extend": rext_dct} if dct else {})}
            cands = find_candidates(reference_index(r), q, noise, beta, cd.candidates.k, cd.candidates.max_pairs_per_query)
            matches = localise_pairs(cands.pairs, {x.video_id: x for x in q}, {x.video_id: x for x in r}, cands.bias, **loc)
            qa, ra = descriptor_submission(q, r, noise, beta)
            t_desc = time.process_time() - t0
            res = {"dim": int(q[0].features.shape[1]), "beta": beta, "localise": loc, "matches": len(matches),
                   "plain": score_matches(gt, matches, qa, ra, n_boot), "post_cpu_s": round(t_desc, 2)}
            if ver is not None:
                t1 = time.process_time()
                verified = []
                for m in matches:
                    if m not in memo:
                        memo[m] = ver.verify([m])[0][0]
                    verified.append(memo[m])
                res["verified"] = score_matches(gt, verified, qa, ra, n_boot)
                res["verify_cpu_s"] = round(time.process_time() - t1, 1)
            rows[name] = res
            pl = res["plain"]
            print(f"[post] {s} {name} ({res['dim']}-d): descriptor {pl['descriptor_uap']:.4f}, matching "
                  f"{pl['matching_uap']:.3f}, pairwise {pl['pairwise_uap']:.3f}"
                  + (f"; verified matching {res['verified']['matching_uap']:.3f}, pairwise "
                     f"{res['verified']['pairwise_uap']:.3f}" if ver is not None else ""), flush=True)
        first = rows[variants[0]]
        if n_boot > 0:
            for name, res in rows.items():
                for kind in ("plain", "verified"):
                    if kind in res and name != variants[0]:
                        res[f"{kind}_paired"] = paired_difference(res[kind], first[kind])
                    if kind in res and "dct_colour" in rows and name != "dct_colour":
                        res[f"{kind}_minus_dct_colour"] = paired_difference(res[kind], rows["dct_colour"][kind])
        results[s] = {"queries": len(q0), "rows": rows}

    def cell(res: dict, k: str) -> str:
        ci = res.get(f"{k}_ci")
        return f"{res[k]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    def diff(res: dict, kind: str, k: str, against: str = "paired") -> str:
        d = res.get(f"{kind}_{against}", {}).get(k)
        return f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]; {100 * d['share_a_better']:.0f} %" if d else ""

    table = []
    for s, out in results.items():
        for name, res in out["rows"].items():
            row = {"set": s, "variant": name, "dim": res["dim"], "descriptor µAP": cell(res["plain"], "descriptor_uap"),
                   "− first": diff(res, "plain", "descriptor_uap"), "matching µAP": cell(res["plain"], "matching_uap"),
                   "pairwise µAP": cell(res["plain"], "pairwise_uap")}
            if "verified" in res:
                row.update({"verified matching µAP": cell(res["verified"], "matching_uap"),
                            "verified − first": diff(res, "verified", "matching_uap"),
                            "verified pairwise µAP": cell(res["verified"], "pairwise_uap")})
            table.append(row)
    rep.table([{"set": s, "variant": name, **{f"{kind} {k}": diff(res, kind, k, "minus_dct_colour")
                                              for kind in ("plain", "verified") for k in MEASURES
                                              if f"{kind}_minus_dct_colour" in res}}
               for s, out in results.items() for name, res in out["rows"].items()
               if any(k.endswith("minus_dct_colour") for k in res)],
              caption="variant − dct_colour (each at its settings), paired bootstrap [95 % interval]; share ahead")
    rep.table(table, caption=f"95 % bootstrap intervals over queries, {n_boot} resamples; differences paired against "
              f"the first variant ({variants[0]}) with the share of resamples where the variant is ahead")
    rep.add(f"Encoder: {root}/models/copydetect/encoder.pt; whitening fitted on {len(train)} training frames (demo "
            f"references + noise); verify {dataclasses.asdict(vp) if args.verify else 'off'}; {threads} threads")
    for out in results.values():
        for res in out["rows"].values():
            for kind in ("plain", "verified"):
                if kind in res:
                    res[kind].pop("_samples", None)
    rep.data = {"results": results, "variants": variants}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
