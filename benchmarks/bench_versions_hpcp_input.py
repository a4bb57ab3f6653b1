#!/usr/bin/env python
"""Versions: the version encoder trained on Essentia's HPCP instead of the CQT, scored on unseen renderings.

The training-free coarse Qmax on HPCP holds up on renderings training never heard (`test_unseen` MAP 0.50),
the CQT-chroma encoder does not (0.15): HPCP keeps spectral peaks only, weights each peak's harmonics into
its pitch class and normalises each frame, so the spectral envelope of an instrument (what the encoder had
keyed on) reaches it much less. This script asks whether the same encoder, trained the same way (material,
sampler, CLEWS loss, model selection on the unseen-rendering `val` split), does better on that input.

HPCP of every track of the training sources and of the collections is computed once with the baseline's
settings (`versions.baseline.hpcp`, unpooled) and cached under `--cache` (default data/versions/hpcp_bench/,
<content hash>.npy); `--pool` frames are then averaged (2: 7.8 frames per second, the CQT's is 10). The model
sees a 12-bin "CQT" of one octave (n_bins = bins_per_octave = 12: the chroma path, circular along the pitch
classes). The CQT-specific augmentations do not apply to 12 pitch classes and are off (instrument change,
pitch shift by bins, which the circular convolutions make nearly moot); time stretch, a 2-class frequency mask
and time masks stay.

    python benchmarks/bench_versions_hpcp_input.py --steps 1000 --save /tmp/enc_hpcp.pt
    python benchmarks/bench_versions_hpcp_input.py --encoder /tmp/enc_hpcp.pt --collections val test_unseen test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads


def cached_hpcp(params, items, cache: Path, pool: int) -> list:
    """[frames, 12] HPCP of each item (computed once, unpooled, cached by content hash), `pool` frames averaged."""
    import numpy as np

    from avmatch.versions.qmax_baseline import pool_frames
    from pipelines.versions.qmax_collections import hpcp_chroma

    cache.mkdir(parents=True, exist_ok=True)
    todo = items[[not (cache / f"{h}.npy").exists() for h in items["content_hash"]]]
    if len(todo):
        hp = params.versions.baseline.hpcp
        raw = params.model_copy(update={"versions": params.versions.model_copy(update={
            "baseline": params.versions.baseline.model_copy(update={"hpcp": hp.model_copy(update={"pool": 1})})})})
        chroma, _ = hpcp_chroma(raw, todo, desc="HPCP")
        for h, c in zip(todo["content_hash"], chroma):
            np.save(cache / f"{h}.npy", np.asarray(c, np.float32))
    return [pool_frames(np.load(cache / f"{h}.npy"), pool) for h in items["content_hash"]]


def embed_feats(model, feats, ids, seg: int, hop: int, device, batch_size: int):
    import numpy as np
    import pandas as pd

    from avmatch.versions.cqt import segment_frames
    from avmatch.versions.training import embed_windows

    metas, vecs = [], []
    for tid, f in zip(ids, feats):
        f = np.asarray(f, np.float32)
        if f.shape[0] < seg:  # short track: one padded window, as training pads
            f = np.concatenate([f, np.zeros((seg - f.shape[0], f.shape[1]), np.float32)])
        win, _ = segment_frames(f, seg, hop)
        v = embed_windows(model, win, device, batch_size)
        metas.append(pd.DataFrame({"item_id": tid, "segment": np.arange(len(v)), "start_s": np.zeros(len(v)),
                                   "end_s": np.zeros(len(v))}))
        vecs.append(v)
    return pd.concat(metas, ignore_index=True), np.concatenate(vecs)


def score(model, feats, items, params, seg, hop, device, bootstrap: int):
    from avmatch.versions.retrieval import Collection, track_distance_matrix
    from pipelines.versions.evaluation import evaluate_track_distances

    ev = params.versions.evaluate
    meta, vecs = embed_feats(model, feats, list(items["id"]), seg, hop, device, params.versions.extract.batch_size)
    coll = Collection.from_rows(meta, vecs)
    dist = track_distance_matrix(coll, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates)
    cl = dict(zip(items["id"], items["label"]))
    cliques = [cl[t] for t in coll.track_ids]
    return evaluate_track_distances(dist, cliques, bootstrap, params.common.seed), dist, coll.track_ids, cliques


def train_on_features(train_feats, tr, feats: dict, colls: dict, params, cp, seg: int, hop: int,
                      save: Path | None = None, record: dict | None = None) -> tuple:
    """(model, val MAP curve, info) of the version encoder trained on another input (`train_feats` of the
    `tr` tracks, `cp` its CQT-like layout), model selection on the `val` collection's MAP when `colls` has one;
    saved to `save` with its config (+ `record`). The HPCP and basic-pitch input benches share it."""
    from avmatch.versions.model import save_encoder
    from avmatch.versions.training import train_version_encoder

    vp = params.versions
    val = colls.get("val")
    vs = (lambda m, d: float(score(m, feats["val"], val, params, seg, hop, d, 0)[0]["metrics"]["MAP"])) \
        if val is not None else None
    res = train_version_encoder(train_feats, list(tr["label"]), vs, vp.train, vp.model, cp, seg,
                                params.common.seed, "cpu", None, list(tr["source"]))
    curve = [(h["step"], round(h["val_map"], 3)) for h in res.history if "val_map" in h]
    info = {"best val MAP": round(res.best_val_map, 3), "best step": res.best_step,
            "train minutes": round(res.seconds / 60, 1)}
    if save:
        save_encoder(res.model, Path(save), {"model": vp.model.model_dump(), "cqt": cp.model_dump(),
                                             "audio": vp.audio.model_dump(), **(record or {})})
    return res.model, curve, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (corpus and manifest inside)")
    p.add_argument("--cache", default=None, help="HPCP cache folder (default: <project>/data/versions/hpcp_bench)")
    p.add_argument("--pool", type=int, default=2, help="HPCP frames averaged (hop 64 ms each)")
    p.add_argument("--steps", type=int, default=1000, help="training steps (versions.train.max_steps)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params.yaml value (repeatable)")
    p.add_argument("--encoder", default=None, help="score this saved HPCP encoder instead of training one")
    p.add_argument("--save", default=None, help="write the selected encoder here")
    p.add_argument("--collections", nargs="+", default=["val", "test_unseen", "test"])
    p.add_argument("--hpcp-only", action="store_true", help="only fill the HPCP cache")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import numpy as np
    import yaml

    from avmatch.core.config import load_params
    from avmatch.versions.model import load_encoder
    from avmatch.versions.params import CQTParams
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.renderings import rendering_shares, track_attributes
    from pipelines.versions.shared import ok_items

    root = Path(args.project).resolve()
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)}
    aug = {"versions.train.augment.timbre": 0.0, "versions.train.augment.pitch_shift_bins": 0,
           "versions.train.augment.freq_mask_bins": 2, "versions.train.augment.time_mask_frames": 16,
           # the CRP lifter (default 38 since session 8) keeps DCT coefficients >= 38 of 12 bins: none, a zero input
           "versions.model.crp_coeffs": 0}
    params = load_params(root / "params.yaml", {"versions.train.threads": args.threads, **aug, **overrides,
                                                  "versions.train.max_steps": args.steps})
    vp = params.versions
    paths = VersionsPaths.from_params(params, root)
    cache = Path(args.cache) if args.cache else root / "data" / "versions" / "hpcp_bench"
    hp = vp.baseline.hpcp
    cp = CQTParams(n_bins=12, bins_per_octave=12, f_min=vp.cqt.f_min, hop_s=hp.hop_size / hp.sample_rate,
                   n_fft=hp.frame_size, pool=args.pool)
    fps = 1.0 / (cp.hop_s * cp.pool)
    seg, hop = int(round(vp.audio.segment_s * fps)), max(1, int(round(vp.audio.hop_s * fps)))
    colls = {c: ok_items(paths, (c,)) for c in args.collections}
    tr = ok_items(paths, ("train",))
    tr = tr[tr["source"].isin(vp.train.sources)].reset_index(drop=True)
    if args.quick:
        colls = {c: it.head(12) for c, it in colls.items()}
        tr = tr.head(60)
    t0 = time.perf_counter()
    feats = {c: cached_hpcp(params, it, cache, args.pool) for c, it in colls.items()}
    if args.encoder is None:
        train_feats = cached_hpcp(params, tr, cache, args.pool)
    print(f"[hpcp] {time.perf_counter() - t0:.0f} s", flush=True)
    if args.hpcp_only:
        return 0
    rep = Report("versions_hpcp_input", "Versions: the encoder on HPCP input", args)
    curve, info = [], {}
    if args.encoder:
        model, _ = load_encoder(Path(args.encoder), "cpu")
    else:
        model, curve, info = train_on_features(train_feats, tr, feats, colls, params, cp, seg, hop, args.save)
    rep.refresh_machine()
    attrs = track_attributes(paths)
    rows = []
    for c, it in colls.items():
        res, dist, ids, cliques = score(model, feats[c], it, params, seg, hop, "cpu", vp.evaluate.bootstrap)
        sh = rendering_shares({"cliques": cliques, "dist": dist}, ids, attrs)
        lo, hi = res["ci95"]["MAP"]
        rows.append({"overrides": " ".join(args.set) or "(defaults)", "pool": args.pool, **info, "collection": c,
                     "tracks": len(it), "track MAP": round(res["metrics"]["MAP"], 3), "95% CI": f"[{lo:.3f}, {hi:.3f}]",
                     "MR1": round(res["metrics"]["MR1"], 1),
                     "top-1 same instrument (chance)": f"{sh.get('top1_same_instrument', float('nan')):.3f} "
                                                       f"({sh.get('top1_same_instrument_chance', float('nan')):.3f})"})
        print(rows[-1], flush=True)
    rep.table(rows)
    if curve:
        rep.add("Validation curve (step, MAP): " + ", ".join(f"{s}: {m}" for s, m in curve))
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
