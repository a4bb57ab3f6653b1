#!/usr/bin/env python
"""Video-to-music: compare training settings by cross-validation with whole recordings held out.

Pools the built `train` and `val` pairs of the vmr corpus (data/vmr/features, after `dvc repro
vmr_features`), deals their recordings into `--folds` folds (`avmatch.vmr.selection.recording_folds`),
and for each variant trains the encoder as the `vmr_train` stage does on all folds but one and scores
video->music and music->video Recall@10 on the held-out fold's clips (a pool of its size, one video per
music clip), a pair scored by its best pair of windows as the evaluate stage does (and, for comparison, by
one averaged vector per item). The test split is never read. Each `--variant` is a space-separated list of params.yaml
overrides; the empty variant is the committed params.

    python benchmarks/bench_vmr_select.py --variant "" --variant "vmr.model.kind=sequence vmr.train.splice=0.5"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (data/vmr/features inside)")
    p.add_argument("--variant", action="append", default=None, metavar="'KEY=VALUE ...'",
                   help="params.yaml overrides of one variant (repeatable; '' = the committed params)")
    p.add_argument("--folds", type=int, default=4, help="folds of recordings (default 4)")
    p.add_argument("--seeds", default="1234", help="comma-separated training seeds, each run on every fold")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import numpy as np
    import pandas as pd
    import yaml

    from avmatch.core.config import load_params
    from avmatch.vmr.metrics import true_ranks
    from avmatch.vmr.model import best_window_scores, embed_item_windows, embed_items
    from avmatch.vmr.selection import recording_folds
    from avmatch.vmr.training import train_encoder
    from pipelines.vmr.paths import VmrPaths
    from pipelines.vmr.shared import aligned_pairs, used_families

    root = Path(args.project).resolve()
    rows = []
    for variant in args.variant or [""]:
        overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in variant.split())}
        if args.quick:
            overrides["vmr.train.max_steps"] = 5
        params = load_params(root / "params.yaml", overrides)
        vp, paths, families = params.vmr, VmrPaths.from_params(params, root), used_families(params)
        parts = [aligned_pairs(paths, s, families) for s in ("train", "val")]
        pairs = pd.concat([x[0] for x in parts], ignore_index=True)
        videos, music = parts[0][1] + parts[1][1], parts[0][2] + parts[1][2]
        folds = recording_folds(list(pairs["piece"]), args.folds)
        first_edit = ~pairs["music_id"].duplicated()
        t0, recalls = time.time(), []
        for seed in (int(s) for s in args.seeds.split(",")):
            for f in range(args.folds):
                tr, te = np.flatnonzero(folds != f), np.flatnonzero((folds == f) & first_edit.values)
                with tempfile.TemporaryDirectory() as ckpt:
                    res = train_encoder([videos[i] for i in tr], [music[i] for i in tr], train_params=vp.train,
                                        model_params=vp.model, window=vp.features.window_s, families=families,
                                        seed=seed, checkpoint_dir=ckpt)
                w, n = vp.features.window_s, len(te)
                vw, vi, _ = embed_item_windows(res.model.video, [videos[i] for i in te], w)
                mw, mi, _ = embed_item_windows(res.model.music, [music[i] for i in te], w)
                best = best_window_scores(vw @ mw.T, vi, mi, n, n)      # the evaluate stage's scores
                mean = embed_items(res.model.video, [videos[i] for i in te], w) @ \
                    embed_items(res.model.music, [music[i] for i in te], w).T   # one averaged vector per item
                recalls.append((n, *(float(np.mean(true_ranks(x) <= 10)) for x in (best, best.T, mean, mean.T))))
        r = np.array(recalls)
        rows.append({"variant": variant or "(committed params)", "folds x seeds": len(r),
                     "held-out pool": f"{int(r[:, 0].min())}-{int(r[:, 0].max())}",
                     "v2m R@10": float(np.average(r[:, 1], weights=r[:, 0])),
                     "m2v R@10": float(np.average(r[:, 2], weights=r[:, 0])),
                     "v2m R@10, averaged windows": float(np.average(r[:, 3], weights=r[:, 0])),
                     "m2v R@10, averaged windows": float(np.average(r[:, 4], weights=r[:, 0])),
                     "v2m R@10 per fold": " ".join(f"{x:.2f}" for x in r[:, 1]), "minutes": (time.time() - t0) / 60})
        print(rows[-1], flush=True)
    rep = Report("vmr_select", "Video-to-music: settings by cross-validation over held-out recordings", args)
    rep.refresh_machine()
    rep.table(rows)
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
