#!/usr/bin/env python
"""Does EFT fusion beat concatenation and the best single expert pair? Paired test differences at a chosen
training budget, without touching the project's models.

Trains the voiceface train stage's models in memory (`avmatch.voiceface.training.train_pair`: the same data,
validation list, seed, SBC and model selection by the best validation AUC), embeds the test tracks as the
extract stage does (`fill_unembedded`) and scores them with the evaluate stage's paired bootstrap
(`paired_auc_differences`): each fusion model minus each other model, AUC U/G/N/GN in points, 95 % interval.
Needs a project whose voiceface corpus, ingest and experts stages have run (`dvc repro voiceface_experts`, or
`python -m pipelines voiceface.experts -S voiceface.corpus.size=full` in a copy for the VoxCeleb-sized cohort).

    python benchmarks/bench_voiceface_fusion.py OUT.json train.max_steps=1000 train.eval_every=50
    python benchmarks/bench_voiceface_fusion.py OUT.json --models fusion,fusion@d=512,concat \\
        --single v_sim_ecapa+f_sim_inception --root /tmp/copy train.batch_size=256 train.big_batch=512

Overrides: `train.*` and `model.*` (JSON values) for every model; a model `KIND@key=value;key=value` changes
`model.*` for that model only. `--single search` trains the train stage's coordinate search of expert pairs and
keeps the best on validation; `--single V+F` trains that pair only. The test list is never used to choose.
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
from avmatch.core.device import set_threads  # noqa: E402
from avmatch.voiceface.evals import read_eval_lists  # noqa: E402
from avmatch.voiceface.metrics import paired_auc_differences  # noqa: E402
from avmatch.voiceface.model import fill_unembedded  # noqa: E402
from avmatch.voiceface.training import model_configs, train_pair  # noqa: E402
from pipelines.voiceface.evaluate import test_lists  # noqa: E402
from pipelines.voiceface.paths import VoicefacePaths  # noqa: E402
from pipelines.voiceface.shared import split_data  # noqa: E402
from pipelines.voiceface.train import single_pairs  # noqa: E402


def _model_spec(spec: str) -> tuple[str, str, dict]:
    kind, _, rest = spec.partition("@")
    upd = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in rest.split(";") if kv)}
    return spec, kind, upd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="JSON file for the results")
    ap.add_argument("overrides", nargs="*", help="train.KEY=JSON or model.KEY=JSON")
    ap.add_argument("--root", type=Path, default=ROOT, help="the avmatch project with the built voiceface data")
    ap.add_argument("--models", default="fusion,concat",
                    help="comma list; each fusion model is compared with each other one")
    ap.add_argument("--single", default="search", help="'search', 'none' or VOICE+FACE")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_intermixed_args()
    params = load_params(args.root / "params.yaml")
    vp = params.voiceface
    for sect in ("train", "model"):
        up = {k[len(sect) + 1:]: json.loads(v) for k, v in (o.split("=", 1) for o in args.overrides)
              if k.startswith(sect + ".")}
        if up:
            vp = vp.model_copy(update={sect: getattr(vp, sect).model_copy(update=up)})
    bad = [o for o in args.overrides if o.split(".")[0] not in ("train", "model")]
    if bad:
        ap.error(f"unknown override(s) {bad}")
    tp = vp.train
    set_threads(tp.threads or params.common.num_threads)  # as the train stage
    paths = VoicefacePaths.from_params(params, args.root)
    voice, face = list(vp.experts.voice), list(vp.experts.face)
    train_data = split_data(paths, "train", voice, face)
    valid = (split_data(paths, "valid", voice, face), read_eval_lists(paths.evals)["valid_verification"])
    test = split_data(paths, "test", voice, face)
    lists = test_lists(paths)
    dims = train_data.dims()

    def run(name: str, kind: str, v: list[str], f: list[str], upd: dict) -> dict:
        cfg = {**model_configs(v, f, dims, vp.model, kind), **upd}
        res = train_pair(cfg, train_data, tp, valid=valid, name=name)
        emb = []
        for m, tracks in (("voice", test.voice_tracks), ("face", test.face_tracks)):
            x, present = test.modality(m)
            e, _ = fill_unembedded(tracks, res.pair.embed(m, x, present))
            emb.append(dict(zip(tracks, e)))
        print(f"{name}: valid AUC {res.best_valid_auc:.2f} at step {res.best_step}/{res.steps} "
              f"({res.seconds:.0f} s)", flush=True)
        return {"name": name, "kind": kind, "config_update": upd, "voice": v, "face": f,
                "valid_auc": res.best_valid_auc, "best_step": res.best_step, "steps": res.steps,
                "seconds": round(res.seconds, 1), "valid_curve": [h for h in res.history if "valid_auc" in h],
                "emb": tuple(emb)}

    t0 = time.monotonic()
    rows = [run(spec, kind, voice, face, upd) for spec, kind, upd in map(_model_spec, args.models.split(","))]
    singles: dict[tuple[str, str], float] = {}
    best = None
    if args.single != "none":
        todo = (single_pairs(voice, face, singles) if args.single == "search"
                else [tuple(args.single.split("+", 1))])
        while todo:
            for sv, sf in todo:
                r = run(f"single:{sv}+{sf}", "single", [sv], [sf], {})
                singles[(sv, sf)] = r["valid_auc"]
                if best is None or r["valid_auc"] > best["valid_auc"]:
                    best = r
            todo = single_pairs(voice, face, singles) if args.single == "search" else []
        rows.append(best)
    fusions = [r for r in rows if r["kind"] == "fusion"] or rows[:1]
    others = [r for r in rows if r not in fusions]
    out = {"root": str(args.root), "train": tp.model_dump(mode="json"), "model": vp.model.model_dump(mode="json"),
           "singles_valid_auc": {f"{a}+{b}": x for (a, b), x in singles.items()},
           "models": [{k: v for k, v in r.items() if k != "emb"} for r in rows],
           "paired": {f"{a['name']} minus {b['name']}": paired_auc_differences(a["emb"], b["emb"], lists,
                                                                              bootstrap=args.bootstrap)
                      for a in fusions for b in others},
           "seconds": round(time.monotonic() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    for name, d in out["paired"].items():
        cells = [f"{m} {r['diff']:+.1f}" + (f" [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]" if "ci" in r else "")
                 for m, r in d.items()]
        print(f"{name}: " + "  ".join(cells))
        print(f"  {name.split(' minus ')[0]}: " + " ".join(f"{m} {r['a']:.1f}" for m, r in d.items())
              + f" | {name.split(' minus ')[1]}: " + " ".join(f"{m} {r['b']:.1f}" for m, r in d.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
