#!/usr/bin/env python
"""Copy detection speed: decode + descriptor, candidate recall at 10^5 / 10^6 reference frames,
localisation per candidate pair, peak memory.

* Decode + descriptor: the demo corpus's reference videos (data/copydetect/corpus/reference, built
  by `avmatch corpus build copydetect` or `dvc repro copydetect_corpus`) decoded at 1 fps by
  `avmatch.core.video.decode_frames` and embedded by the trained encoder
  (models/copydetect/encoder.pt; a seeded untrained one of the same shape when missing: same cost).
  Frames per second of video frames produced, on --threads cores.
* Recall: the project's `find_candidates` (FAISS flat inner-product k-NN of every query frame, CSLS
  normalisation against a noise set, max aggregation per pair) with synthetic unit descriptors:
  the reference frames are grouped in 30-frame "videos" with cluster structure; 20 queries of 30
  frames; the noise set has 2,000 frames. Reported per query video (median over queries).
* Localisation: `localise` on 30 × 30 frame similarity matrices (query × reference video), one
  planted copy each; median ms per candidate pair.
* Peak memory: the process's peak RSS after each part (resource.getrusage).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default=str(ROOT / "data/copydetect/corpus/reference"), help="videos to decode")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="reference frames")
    p.add_argument("--dim", type=int, default=None,
                   help="descriptor size for the recall rows (default: params.yaml's copydetect descriptor's)")
    add_common_args(p)
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    threads = set_threads(args.threads)
    import numpy as np

    from avmatch.copydetect.candidates import find_candidates, reference_index
    from avmatch.copydetect.localisation import localise
    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.copydetect.descriptor import DescriptorSpec, Whitening, frame_describer
    from avmatch.copydetect.model import FrameEncoder, load_frame_encoder
    from avmatch.copydetect.params import CdDescriptorParams, CdModelParams
    from avmatch.core.video import decode_frames

    rep = Report("copydetect", "Copy detection (VSC22)", args)
    rep.refresh_machine()
    sizes = [2_000, 20_000] if args.quick else args.sizes

    # ---- decode + descriptor
    enc = ROOT / "models/copydetect/encoder.pt"
    enc_dim = CdModelParams().dim
    model = load_frame_encoder(enc) if enc.exists() else FrameEncoder(enc_dim, [16, 32, 64, 128], 64).eval()
    default_spec = DescriptorSpec.from_params(CdDescriptorParams())
    if args.dim is None:
        args.dim = default_spec.dim(enc_dim)
    # the trained encoder alone and the default descriptor (the extract stage's and `add` / `query`'s)
    specs = list(dict.fromkeys([DescriptorSpec("trained"), default_spec]))
    videos = sorted(Path(args.videos).glob("*.mp4"))[: 4 if args.quick else None]
    rows = []
    if videos:
        t0 = time.perf_counter()
        decoded = [decode_frames(v, fps=1.0, size=112) for v in videos]
        t_dec = time.perf_counter() - t0
        n = sum(len(d.frames) for d in decoded)
        for spec in specs:
            fit = None
            if spec.whitens:   # for the speed only: a whitening fitted on these frames (the pipeline fits its own)
                raw = frame_describer(spec.unwhitened(), model)
                fit = Whitening.fit(np.concatenate([raw(d.frames) for d in decoded[:4]]), spec, "speed bench")
            describe = frame_describer(spec, model, whitening=fit)
            t0 = time.perf_counter()
            for d in decoded:
                describe(d.frames)
            t_emb = time.perf_counter() - t0
            rows.append({"descriptor": spec.label, "videos": len(videos), "frames": n, "decode_fps": n / t_dec,
                         "descriptor_fps": n / t_emb, "both_fps": n / (t_dec + t_emb), "peak_mb": peak_mb()})
        rep.table(rows, caption=f"Decode at 1 fps + descriptor ({'trained' if enc.exists() else 'untrained'} "
                                f"encoder, {threads} threads): frames per second")
    else:
        rep.add(f"Decode + descriptor skipped: no videos in {args.videos} (build the corpus first).")

    # ---- recall
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(256, args.dim)).astype(np.float32)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    rec_rows = []
    for n_ref in sizes:
        per = 30
        n_vid = n_ref // per
        refs = []
        for v in range(n_vid):
            c = centres[rng.integers(len(centres))]
            refs.append(VideoFeatures(f"R{v:07d}", np.stack([np.arange(per), np.arange(1, per + 1)], 1).astype(float),
                                      unit(c + 0.8 * rng.normal(size=(per, args.dim)).astype(np.float32))))
        t0 = time.perf_counter()
        index = reference_index(refs)
        t_build = time.perf_counter() - t0
        noise = unit(centres[rng.integers(len(centres), size=2000)] + 0.8 * rng.normal(size=(2000, args.dim)))
        queries = []
        for q in range(5 if args.quick else 20):
            src = refs[int(rng.integers(len(refs)))]
            queries.append(VideoFeatures(f"Q{q}", src.timestamps, unit(src.features + 0.3 * rng.normal(size=src.features.shape))))
        times, found = [], 0
        for q in queries:
            t0 = time.perf_counter()
            c = find_candidates(index, [q], noise, 1.0, 20, 25)
            times.append(time.perf_counter() - t0)
            found += int(len(c.pairs) > 0)
        del index, refs
        rec_rows.append({"ref_frames": n_ref, "build_s": t_build, "median_ms_per_query_video": 1000 * float(np.median(times)),
                         "ms_per_query_frame": 1000 * float(np.median(times)) / 30, "peak_mb": peak_mb()})
    rep.table(rec_rows, caption=f"Candidate recall ({args.dim}-d descriptors, flat FAISS k=20 per query frame + CSLS "
                                "with 2,000 noise frames, 30-frame query videos)")

    # ---- localisation
    loc_ms = []
    for _ in range(50 if args.quick else 500):
        sim = rng.uniform(-0.1, 0.2, (30, 30)).astype(np.float32)
        a, b, L = int(rng.integers(0, 15)), int(rng.integers(0, 15)), int(rng.integers(4, 15))
        for i in range(L):
            sim[a + i, b + i] = 0.7
        t0 = time.perf_counter()
        localise(sim, np.stack([np.arange(30), np.arange(1, 31)], 1), np.stack([np.arange(30), np.arange(1, 31)], 1),
                 floor=0.1)
        loc_ms.append(1000 * (time.perf_counter() - t0))
    rep.table([{"pairs": len(loc_ms), "median_ms_per_pair": float(np.median(loc_ms)),
                "p90_ms_per_pair": float(np.percentile(loc_ms, 90))}],
              caption="Localisation (temporal network, 30 × 30 frame similarity matrix per candidate pair)")
    rep.add(f"Peak RSS of the whole run: {peak_mb():.0f} MB.")
    rep.data = {"decode": rows, "recall": rec_rows, "localise_ms": float(np.median(loc_ms))}
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
