#!/usr/bin/env python
"""What a different training length (or model, batch, null-query count) does to the demo's fingerprint metrics.

A pipeline run per variant would retrain inside DVC and overwrite the project's encoder; this trains with the
train stage's own data and split (`pipelines.fingerprint.train`: the same seed and validation tracks) into
OUT, then scores the encoder with the evaluate stage's in-memory path (`_evaluate_in_memory`: the same
queries, null queries and decision), so a row is what `dvc repro fingerprint_evaluate` would report with
those params. The project's outputs are not touched. Needs the demo's ingest stage (`dvc repro
fingerprint_ingest`).

    python benchmarks/bench_fingerprint_steps.py OUT train.max_steps=3000 train.checkpoint_every=500 \\
        train.validate_every=500
    python benchmarks/bench_fingerprint_steps.py OUT2 encoder=OUT/encoder.pt evaluate.null_queries_per_length=1500

Overrides: `train.*`, `model.*`, `evaluate.*`, `search.*`, `audio.*` (values in JSON), or `encoder=PATH` to
evaluate a trained encoder. OUT keeps the encoder (a rerun evaluates it again), metrics.json and analysis.csv
(what each test query was answered).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from avmatch.core.config import load_params  # noqa: E402
from avmatch.core.device import resolve_device  # noqa: E402
from avmatch.core.manifest import read_manifest  # noqa: E402
from avmatch.fingerprint.model import load_encoder, save_encoder  # noqa: E402
from avmatch.fingerprint.training import train_fingerprinter  # noqa: E402
from pipelines.fingerprint.evaluate import evaluate_in_memory_result  # noqa: E402
from pipelines.fingerprint.evaluation import read_ground_truth  # noqa: E402
from pipelines.fingerprint.paths import FingerprintPaths  # noqa: E402
from pipelines.fingerprint.train import _load_set_audio, split_train_val, track_instruments  # noqa: E402

SECTIONS = ("train", "model", "evaluate", "search", "audio")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the encoder and metrics.json")
    ap.add_argument("overrides", nargs="*", help="section.key=JSON value, or encoder=PATH")
    ap.add_argument("--root", type=Path, default=ROOT, help="the avmatch project (default: this checkout)")
    args = ap.parse_args()
    over = dict(a.split("=", 1) for a in args.overrides)
    unknown = [k for k in over if k != "encoder" and k.split(".")[0] not in SECTIONS]
    if unknown:
        ap.error(f"unknown override(s) {unknown}: use {', '.join(s + '.KEY' for s in SECTIONS)} or encoder=PATH")
    params = load_params(args.root / "params.yaml")
    fp = params.fingerprint
    for sect in SECTIONS:
        up = {k[len(sect) + 1:]: json.loads(v) for k, v in over.items() if k.startswith(sect + ".")}
        if up:
            fp = fp.model_copy(update={sect: getattr(fp, sect).model_copy(update=up)})
    params = params.model_copy(update={"fingerprint": fp})
    paths = FingerprintPaths.from_params(params, args.root)
    device = resolve_device(params.common.device)
    args.out.mkdir(parents=True, exist_ok=True)
    enc = args.out / "encoder.pt"
    if "encoder" in over or enc.exists():
        model = load_encoder(Path(over.get("encoder", enc)), device)
    else:
        items, audio = _load_set_audio(paths, "train")
        _, noise = _load_set_audio(paths, "noise_train")
        train_audio, val_audio = split_train_val(audio, params.common.seed)
        train_groups = None
        if fp.train.same_timbre_fraction > 0:   # as the train stage does
            train_groups, _ = split_train_val(track_instruments(paths, items), params.common.seed)
        t0 = time.perf_counter()
        result = train_fingerprinter(
            train_audio, noise, train_params=fp.train, model_params=fp.model,
            logmel_params=fp.logmel, audio_params=fp.audio, common_params=params.common,
            checkpoint_dir=args.out / "checkpoints",
            log=lambda m, s: print(s, m, file=sys.stderr, flush=True) if "val_top1" in m else None,
            val_audio=val_audio or None, train_groups=train_groups)
        print(f"train_seconds {time.perf_counter() - t0:.0f}", file=sys.stderr)
        model = result.model.eval()
        save_encoder(model, enc, {"model": fp.model.model_dump(), "logmel": fp.logmel.model_dump(),
                                  "audio": fp.audio.model_dump()})
    refs = read_manifest(paths.items("refs"))
    result = evaluate_in_memory_result(params, paths, model, device, read_ground_truth(paths.ground_truth),
                                       dict(zip(refs["id"], refs["path"])), "bench")
    metrics = result.metrics
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    result.analysis.to_csv(args.out / "analysis.csv", index=False)   # per test query: what was answered
    for key in ("track_hit_rate", "speed_changed_hit_rate", "top1_hit_rate_without_threshold"):
        print(key, " / ".join(f"{metrics[key][k]:.3f}" for k in metrics[key]))
    print("out-of-database test queries answered",
          ", ".join(f"{k} {v['answered']}/{v['n']}" for k, v in metrics["false_match_rate_by_length"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
