#!/usr/bin/env python
"""Versions: compare training choices by validation MAP on renderings training never heard.

Trains the version encoder as the `versions_train` stage does (same material, sampler, loss, model
selection on the `val` split, which the corpus renders with soundfonts and General MIDI programs no
training track uses), with `-S key=value` overrides of params.yaml, for `--steps` steps, and reports the
best validation MAP and its step. Unlike the stage it skips the train-tracks MAP (two passes over ~1000
training tracks), so a 1000-step comparison costs only its training. `--save` keeps the selected weights
(for bench_versions_unseen.py).

    python benchmarks/bench_versions_unseen_train.py --steps 1000 -S versions.train.augment.time_stretch=[0.6,1.6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, Report, add_common_args, quiet_env, set_threads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--project", default=str(ROOT), help="project folder (features inside)")
    p.add_argument("--steps", type=int, default=1000, help="training steps (versions.train.max_steps)")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params.yaml value, as `dvc exp run -S` does (repeatable)")
    p.add_argument("--save", default=None, help="write the selected encoder here")
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    import numpy as np
    import yaml

    from avmatch.core.config import load_params
    from avmatch.versions.model import save_encoder
    from avmatch.versions.training import train_version_encoder
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.qmax_collections import training_teacher
    from pipelines.versions.shared import ok_items, segment_sizes
    from pipelines.versions.train import _validation_map

    root = Path(args.project).resolve()
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)}
    params = load_params(root / "params.yaml", {"versions.train.threads": args.threads, **overrides,
                                                  "versions.train.max_steps": args.steps})
    vp = params.versions
    paths = VersionsPaths.from_params(params, root)
    tr = ok_items(paths, ("train",))
    tr = tr[tr["source"].isin(vp.train.sources)].reset_index(drop=True)
    val = ok_items(paths, ("val",))
    if args.quick:
        val = val.head(8)
    seg, _ = segment_sizes(params)
    # versions.train.distill_weight > 0: the coarse Qmax teacher between the training tracks (cached)
    teacher = training_teacher(params, paths, tr) if vp.train.distill_weight > 0 else None
    res = train_version_encoder([np.load(f) for f in tr["cqt_file"]], list(tr["label"]), _validation_map(params, val),
                                vp.train, vp.model, vp.cqt, seg, params.common.seed, "cpu", None, list(tr["source"]),
                                teacher=teacher)
    if args.save:
        save_encoder(res.model, Path(args.save), {"model": vp.model.model_dump(), "cqt": vp.cqt.model_dump(),
                                                  "audio": vp.audio.model_dump()})
    curve = [(h["step"], round(h["val_map"], 3)) for h in res.history if "val_map" in h]
    rep = Report("versions_unseen_train", "Versions: training choices on unseen renderings", args)
    rep.refresh_machine()
    rep.table([{"overrides": " ".join(args.set) or "(defaults)", "steps": res.steps,
                "val MAP at step 0": curve[0][1], "best val MAP": round(res.best_val_map, 3),
                "best step": res.best_step, "minutes": round(res.seconds / 60, 1)}])
    rep.add("Validation curve (step, MAP): " + ", ".join(f"{s}: {m}" for s, m in curve))
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
