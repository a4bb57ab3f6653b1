#!/usr/bin/env python
"""Versions: a trained encoder on renderings training never heard, with test-time invariance options.

For each collection (default: `val` and `test_unseen`, rendered with soundfonts and General MIDI programs no
training track uses; `test`, the demo test set, rendered as training was) every track queries all others:
track MAP with its 95 % bootstrap CI, MR1, and how often the top-1 track shares the query's instrument /
soundfont (with the chance level). Each `--variant` embeds the same CQT segments differently:

* `plain`      the encoder as the pipeline runs it;
* `key2`       the mean of the embeddings of a segment and of it moved up one pitch class. The chroma encoder
               is exactly invariant to even transpositions (circular convolutions, one 2x pooling along the
               12 pitch classes, global pooling), so this mean is invariant to every transposition;
* `key12`      the mean over all 12 transpositions (the same invariance, 6x the cost of key2: a check);
* `tempo`      segments also cut from the CQT stretched in time by 0.8 and 1.25, all pooled per track
               (a test-time answer to tempo differences; the distance is bpwr over all segments).

Each encoder cuts tracks into the segments it was trained on (the segment length and hop saved in its file,
as the CLI does), not params.yaml's: an encoder trained with `-S versions.audio.segment_s=10` is scored on 10 s
segments, and the `--paired-with` encoder on its own. `-S key=value` overrides params.yaml (e.g.
`-S versions.evaluate.reduction=bpwr-6`).

Needs the versions pipeline's features and a trained encoder (`dvc repro versions_train`), in the project
folder (default: the current one's repository root).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads

VARIANTS = ("plain", "key2", "key12", "tempo")


def _stretch(feat, rate: float):
    import numpy as np

    n = feat.shape[0]
    m = max(2, int(round(n / rate)))
    pos = np.linspace(0, n - 1, m)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[:, None]
    return (feat[lo] * (1 - w) + feat[hi] * w).astype(np.float32)


def embed_variant(model, items, params, device, variant: str):
    """(segment rows, vectors) of every item, embedded as `variant` says."""
    import numpy as np
    import pandas as pd
    import torch

    from avmatch.core.progress import progress
    from avmatch.versions.cqt import segment_frames
    from avmatch.versions.training import embed_windows
    from pipelines.versions.shared import segment_sizes

    seg, hop = segment_sizes(params)
    bpo = params.versions.cqt.bins_per_octave
    bs = params.versions.extract.batch_size
    metas, vecs = [], []
    for row in progress(items.itertuples(), desc=variant, total=len(items), unit="track"):
        feat = np.load(row.cqt_file).astype(np.float32)
        feats = [feat] + ([_stretch(feat, 0.8), _stretch(feat, 1.25)] if variant == "tempo" else [])
        out = []
        for f in feats:
            if f.shape[0] < seg:
                f = np.concatenate([f, np.zeros((seg - f.shape[0], f.shape[1]), f.dtype)])
            win, _ = segment_frames(f, seg, hop)
            shifts = {"key2": [0, 1], "key12": list(range(12))}.get(variant, [0])
            v = 0
            for k in shifts:
                w = win if k == 0 else np.ascontiguousarray(
                    np.roll(win.reshape(len(win), -1, bpo, win.shape[-1]), k, 2).reshape(win.shape))
                v = v + embed_windows(model, w, device, bs)
            v = torch.nn.functional.normalize(torch.from_numpy(np.asarray(v, np.float32)), dim=-1).numpy()
            out.append(v)
        v = np.concatenate(out)
        metas.append(pd.DataFrame({"item_id": row.id, "segment": np.arange(len(v)),
                                   "start_s": np.zeros(len(v)), "end_s": np.zeros(len(v))}))
        vecs.append(v)
    return pd.concat(metas, ignore_index=True), np.concatenate(vecs)


def params_for_encoder(params, cfg: dict):
    """`params` with `versions.audio` (segment length, hop) as saved in the encoder file's config `cfg`."""
    from avmatch.versions.params import VerAudioParams

    if "audio" not in cfg:
        return params
    vp = params.versions.model_copy(update={"audio": VerAudioParams(**cfg["audio"])})
    return params.model_copy(update={"versions": vp})


def _paired(dist, other_embedded, clique_of: dict, track_ids: list, ev, seed: int, reduction: str | None = None
            ) -> dict:
    """Paired per-query AP difference (dist's minus the other encoder's) with a percentile bootstrap CI."""
    import numpy as np

    from avmatch.versions.metrics import confidence_interval, per_query
    from avmatch.versions.retrieval import Collection, track_distance_matrix

    coll = Collection.from_rows(*other_embedded)
    if list(coll.track_ids) != list(track_ids):
        raise RuntimeError("the two encoders embedded different tracks")
    d2 = track_distance_matrix(coll, reduction or ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates)
    c = np.asarray([clique_of[t] for t in track_ids], dtype=object)
    valid = ~np.eye(len(c), dtype=bool)
    relevant = (c[:, None] == c[None]) & valid
    ap_other = per_query(d2, relevant, valid)["AP"]
    diff = per_query(dist, relevant, valid)["AP"] - ap_other
    lo, hi = confidence_interval(diff, ev.bootstrap, seed)
    return {"other MAP": round(float(ap_other.mean()), 3),
            "paired MAP difference [95% CI]": f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (features and encoder inside)")
    p.add_argument("--encoder", default=None, help="encoder file (default: models/versions/encoder.pt)")
    p.add_argument("--collections", nargs="+", default=["val", "test_unseen"])
    p.add_argument("--variant", nargs="+", default=["plain", "key2"], choices=VARIANTS)
    p.add_argument("--label", default="", help="what the encoder is (a column of the table)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params.yaml value (repeatable); the segment length / hop come from each encoder")
    p.add_argument("--paired-with", default=None, metavar="ENCODER",
                   help="also score this encoder (plain) and report the paired per-query AP difference (this "
                        "encoder's minus that one's) with its 95%% bootstrap CI over the queries")
    p.add_argument("--paired-reduction", default=None, metavar="REDUCTION",
                   help="the --paired-with encoder's track reduction (default: versions.evaluate.reduction, as this one)")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import yaml

    from avmatch.core.config import load_params
    from avmatch.core.device import resolve_device
    from avmatch.versions.model import load_encoder
    from avmatch.versions.retrieval import Collection, track_distance_matrix
    from pipelines.versions.evaluation import evaluate_track_distances
    from pipelines.versions.renderings import rendering_shares, track_attributes
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.shared import ok_items

    root = Path(args.project).resolve()
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)}
    base = load_params(root / "params.yaml", overrides)
    paths = VersionsPaths.from_params(base, root)
    device = resolve_device("cpu")
    model, cfg = load_encoder(Path(args.encoder) if args.encoder else paths.encoder, device)
    params = params_for_encoder(base, cfg)
    other, other_params = None, None
    if args.paired_with:
        other, other_cfg = load_encoder(Path(args.paired_with), device)
        other_params = params_for_encoder(base, other_cfg)
    attrs = track_attributes(paths)
    ev = params.versions.evaluate
    rep = Report("versions_unseen", "Versions: unseen renderings", args)
    rep.refresh_machine()
    rows = []
    for name in args.collections:
        items = ok_items(paths, (name,))
        if args.quick:
            items = items.head(12)
        for variant in args.variant:
            t0 = time.perf_counter()
            meta, vecs = embed_variant(model, items, params, device, variant)
            t1 = time.perf_counter()
            coll = Collection.from_rows(meta, vecs)
            dist = track_distance_matrix(coll, ev.reduction, ev.faiss_above_tracks, ev.faiss_candidates)
            t2 = time.perf_counter()
            cl = dict(zip(items["id"], items["label"]))
            res = evaluate_track_distances(dist, [cl[t] for t in coll.track_ids], ev.bootstrap, params.common.seed)
            sh = rendering_shares({"cliques": [cl[t] for t in coll.track_ids], "dist": dist}, coll.track_ids, attrs)
            lo, hi = res["ci95"]["MAP"]
            paired = {}
            if other is not None:
                paired = _paired(dist, embed_variant(other, items, other_params, device, "plain"), cl, coll.track_ids,
                                 ev, params.common.seed, args.paired_reduction)
            rows.append({"encoder": args.label or "-", "collection": name, "variant": variant,
                         "tracks": len(items), "queries": res["n_queries"], "track MAP": res["metrics"]["MAP"],
                         "95% CI": f"[{lo:.3f}, {hi:.3f}]", "MR1": res["metrics"]["MR1"],
                         "top-1 same instrument (chance)": f"{sh.get('top1_same_instrument', float('nan')):.3f} "
                                                           f"({sh.get('top1_same_instrument_chance', float('nan')):.3f})",
                         "top-1 same soundfont (chance)": f"{sh.get('top1_same_soundfont', float('nan')):.3f} "
                                                          f"({sh.get('top1_same_soundfont_chance', float('nan')):.3f})",
                         "segment s / hop s": f"{params.versions.audio.segment_s:g} / {params.versions.audio.hop_s:g}",
                         "segments per track": round(len(meta) / max(1, len(items)), 2),
                         "embed ms per track": round(1000 * (t1 - t0) / max(1, len(items)), 1),
                         "distances ms per query": round(1000 * (t2 - t1) / max(1, len(items)), 2),
                         "reduction": ev.reduction, **paired, "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    rep.table(rows)
    print(rep.finish())
    return 0


if __name__ == "__main__":
    sys.exit(main())
