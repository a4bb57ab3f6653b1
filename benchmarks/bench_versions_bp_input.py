#!/usr/bin/env python
"""Versions: the version encoder trained on basic-pitch's note posteriorgram instead of the CQT (issue 18).

Session 14 found basic-pitch's decoded top voice too noisy for exact melody n-grams (val 3-gram precision
0.21-0.26), but its frame-wise note likelihoods hold the soprano's pitch (some octave of it >= 0.3) on 71-90 %
of the soprano's frames. A note posteriorgram is, by construction, meant to be free of the instrument's spectral
envelope, harmonics and sustain, which is what the CQT-chroma encoder keys on and why it fails on renderings
with unseen soundfonts (`test_unseen` 0.22). This script trains the same encoder on it and scores it.

Input: basic-pitch's "note" output ([frames, 88], MIDI 21-108, 86.1 frames per second; the package's ONNX model
run as `bench_versions_melody.py` extractor `basicpitch` runs it, cached per content hash under `--cache`, and
read from `--reuse` folders holding that bench's `<hash>_basicpitch.npz` files), averaged over the CQT
features' 0.1 s frames and cut to MIDI 24-107 (the CQT's 84 bins, C1 = 32.7 Hz upward), so the model folds the
octaves itself exactly as for the CQT (mean and max over the 7 octaves, circular along the pitch classes).
Model overrides: `crp_coeffs: 0` (the CRP lifter removes a log spectrum's envelope; a posteriorgram has none,
and with it the likelihoods would go negative), `frame_norm: true` (each frame by its largest bin: the per-frame
normalisation). The instrument-change augmentation (`timbre`) acts on a log1p spectrum and is off; pitch shift,
frequency and time masks and time stretch keep the CQT defaults (they mean the same on this layout).

    python benchmarks/bench_versions_bp_input.py --bp-only                    # fill the posteriorgram cache
    python benchmarks/bench_versions_bp_input.py --steps 1000 --save /tmp/enc_bp.pt
    python benchmarks/bench_versions_bp_input.py --encoder /tmp/enc_bp.pt --paired-with /tmp/crp38_1000.pt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads

MIDI_LOW = 21  # basic-pitch's first note bin (A0)
CQT_MIDI_LOW = 24  # the CQT's f_min, 32.7 Hz = C1


def bp_file(cache: Path, content_hash: str, reuse: list[Path]) -> Path:
    """Where the model output of a track is (a `--reuse` folder if it has it, else `cache`)."""
    for d in reuse:
        f = d / f"{content_hash}_basicpitch.npz"
        if f.exists():
            return f
    return cache / f"{content_hash}_basicpitch.npz"


def posteriorgram_to_cqt_layout(note, fps: float, n_bins: int = 84):
    """basic-pitch note likelihoods [frames, 88] at 86.1 frames/s -> [frames', n_bins] at `fps`: the model
    frames whose start falls in each output frame averaged, bins MIDI 24 .. 24 + n_bins - 1 kept."""
    import numpy as np
    from bench_versions_melody import BP_FPS

    note = np.asarray(note, np.float32)
    k = np.floor(np.arange(len(note)) / BP_FPS * fps + 1e-9).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(k) > 0])
    counts = np.diff(np.r_[starts, len(note)])
    out = np.add.reduceat(note, starts, axis=0) / counts[:, None]
    lo = CQT_MIDI_LOW - MIDI_LOW
    return np.ascontiguousarray(out[:, lo:lo + n_bins], np.float32)


def fill_cache(items, paths, cache: Path, reuse: list[Path], model_fn, deadline: float | None = None) -> int:
    """Run basic-pitch on the items whose output is not cached yet (in the items' order); stop at `deadline`
    (epoch seconds). Returns how many were computed."""
    import numpy as np
    from bench_versions_melody import basicpitch_output

    cache.mkdir(parents=True, exist_ok=True)
    model, done, t_start = None, 0, time.perf_counter()
    todo = [r for r in items.itertuples() if not bp_file(cache, r.content_hash, reuse).exists()]
    for r in todo:
        if deadline is not None and time.time() > deadline:
            print(f"[bp] deadline reached after {done} of {len(todo)}", flush=True)
            break
        model = model or model_fn()
        t = time.perf_counter()
        audio = Path(r.path) if Path(r.path).is_absolute() else paths.corpus / r.path  # as ingest does
        out = basicpitch_output(str(audio), model)
        f = cache / f"{r.content_hash}_basicpitch.npz"
        np.savez(str(f) + ".part.npz", seconds=time.perf_counter() - t, **out)
        Path(str(f) + ".part.npz").rename(f)
        done += 1
        if done % 25 == 0:
            print(f"[bp] {done}/{len(todo)} {time.perf_counter() - t_start:.0f} s", flush=True)
    return done


def features(items, cache: Path, reuse: list[Path], fps: float, n_bins: int) -> list:
    import numpy as np

    return [posteriorgram_to_cqt_layout(np.load(bp_file(cache, h, reuse))["note"], fps, n_bins)
            for h in items["content_hash"]]


def training_order(tr, seed: int):
    """Training tracks grouped by clique, cliques in a seeded random order: any prefix of it is a random set of
    whole cliques (the subset used if the extraction cannot finish in time)."""
    import numpy as np

    labels = sorted(tr["label"].unique())
    rank = {lab: i for i, lab in enumerate(np.random.default_rng(seed).permutation(labels))}
    return tr.assign(_r=tr["label"].map(rank)).sort_values(["_r", "id"], kind="stable").drop(columns="_r")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (corpus and manifest inside)")
    p.add_argument("--cache", default="/work/scratch/ver14b/bp", help="basic-pitch output cache folder")
    p.add_argument("--reuse", nargs="*", default=["/work/scratch/ver14/melody"],
                   help="read-only folders of bench_versions_melody's <hash>_basicpitch.npz files")
    p.add_argument("--steps", type=int, default=1000, help="training steps (versions.train.max_steps)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params.yaml value (repeatable)")
    p.add_argument("--encoder", default=None, help="score this saved posteriorgram encoder instead of training one")
    p.add_argument("--save", default=None, help="write the selected encoder here")
    p.add_argument("--paired-with", nargs="*", default=[], metavar="ENCODER",
                   help="CQT encoders scored on the same tracks: paired per-query AP difference (this one's minus theirs)")
    p.add_argument("--collections", nargs="+", default=["val", "test_unseen", "test"])
    p.add_argument("--bp-only", action="store_true", help="only fill the basic-pitch cache")
    p.add_argument("--bp-deadline", default=None, help="--bp-only: stop extracting at this UTC time (HH:MM)")
    p.add_argument("--train-available", action="store_true",
                   help="train on the longest prefix of the seeded clique order whose tracks all have a posteriorgram "
                        "(the pre-registered fallback when the extraction cannot finish in time)")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import yaml
    from bench_versions_hpcp_input import score, train_on_features
    from bench_versions_melody import basicpitch_model
    from bench_versions_unseen import _paired, embed_variant, params_for_encoder

    from avmatch.core.config import load_params
    from avmatch.versions.model import load_encoder
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.renderings import rendering_shares, track_attributes
    from pipelines.versions.shared import ok_items, segment_sizes

    root = Path(args.project).resolve()
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)}
    fixed = {"versions.model.crp_coeffs": 0, "versions.model.frame_norm": True, "versions.train.augment.timbre": 0.0}
    params = load_params(root / "params.yaml", {"versions.train.threads": args.threads, **fixed, **overrides,
                                                  "versions.train.max_steps": args.steps})
    vp = params.versions
    paths = VersionsPaths.from_params(params, root)
    cache, reuse = Path(args.cache), [Path(d) for d in args.reuse]
    cp = vp.cqt
    fps = 1.0 / (cp.hop_s * cp.pool)
    seg, hop = segment_sizes(params)
    colls = {c: ok_items(paths, (c,)) for c in args.collections}
    tr = ok_items(paths, ("train",))
    tr = training_order(tr[tr["source"].isin(vp.train.sources)], params.common.seed).reset_index(drop=True)
    if args.quick:
        colls = {c: it.head(12) for c, it in colls.items()}
        tr = tr.head(60)
    t0 = time.perf_counter()

    def model_fn():
        return basicpitch_model(args.threads)

    for it in colls.values():
        fill_cache(it, paths, cache, reuse, model_fn)
    if args.bp_only:
        deadline = None
        if args.bp_deadline:
            import datetime as dt

            hh, mm = (int(x) for x in args.bp_deadline.split(":"))
            now = dt.datetime.now(dt.UTC)
            deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
        n = fill_cache(tr, paths, cache, reuse, model_fn, deadline)
        print(f"[bp] computed {n}, {time.perf_counter() - t0:.0f} s", flush=True)
        return 0
    feats = {c: features(it, cache, reuse, fps, cp.n_bins) for c, it in colls.items()}
    others = []  # loaded before training: a wrong path fails now, not after it
    for f in args.paired_with:
        m, cfg = load_encoder(Path(f), "cpu")
        others.append((Path(f).name, m, params_for_encoder(load_params(root / "params.yaml", {}), cfg)))
    rep = Report("versions_bp_input", "Versions: the encoder on basic-pitch's note posteriorgram", args)
    curve, info = [], {}
    if args.encoder:
        model, _ = load_encoder(Path(args.encoder), "cpu")
    else:
        if args.train_available:
            keep = []
            for lab, g in tr.groupby("label", sort=False):
                if not all(bp_file(cache, h, reuse).exists() for h in g["content_hash"]):
                    break
                keep.append(lab)
            tr = tr[tr["label"].isin(keep)].reset_index(drop=True)
        missing = [h for h in tr["content_hash"] if not bp_file(cache, h, reuse).exists()]
        if missing:
            raise SystemExit(f"{len(missing)} training tracks have no posteriorgram: run --bp-only or use --train-available")
        train_feats = features(tr, cache, reuse, fps, cp.n_bins)
        print(f"[train] {len(tr)} tracks, {tr['label'].nunique()} cliques", flush=True)
        model, curve, info = train_on_features(train_feats, tr, feats, colls, params, cp, seg, hop, args.save,
                                               {"input": "basic-pitch note"})
        info = {"train tracks": len(tr), **info}
        print(info, flush=True)
    model.eval()
    rep.refresh_machine()
    attrs = track_attributes(paths)
    ev = vp.evaluate
    rows = []
    for c, it in colls.items():
        res, dist, ids, cliques = score(model, feats[c], it, params, seg, hop, "cpu", ev.bootstrap)
        sh = rendering_shares({"cliques": cliques, "dist": dist}, ids, attrs)
        lo, hi = res["ci95"]["MAP"]
        row = {**info, "collection": c, "tracks": len(it), "track MAP": round(res["metrics"]["MAP"], 3),
               "95% CI": f"[{lo:.3f}, {hi:.3f}]", "MR1": round(res["metrics"]["MR1"], 1),
               "top-1 same instrument (chance)": f"{sh.get('top1_same_instrument', float('nan')):.3f} "
                                                 f"({sh.get('top1_same_instrument_chance', float('nan')):.3f})"}
        cl = dict(zip(it["id"], it["label"]))
        for name, m, op in others:
            pr = _paired(dist, embed_variant(m, it, op, "cpu", "plain"), cl, ids, ev, params.common.seed)
            row[f"{name} MAP"] = pr["other MAP"]
            row[f"paired vs {name}"] = pr["paired MAP difference [95% CI]"]
        rows.append(row)
        print(row, flush=True)
    rep.table(rows)
    if curve:
        rep.add("Validation curve (step, MAP): " + ", ".join(f"{s}: {m}" for s, m in curve))
    rep.add(f"Features and scoring: {time.perf_counter() - t0:.0f} s")
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
