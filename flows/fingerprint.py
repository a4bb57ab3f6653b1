"""Prefect flow for the fingerprint pipeline: the same stage functions `dvc repro` runs, in order.

    python -m flows.fingerprint                      # whole pipeline with params.yaml
    python -m flows.fingerprint -S fingerprint.train.max_steps=200 --stages extract index evaluate

Overrides are validated before any stage starts (an unknown key or bad value fails the flow at
once, naming the key). Stages whose inputs did not change are NOT skipped here (use `dvc repro` for
that); each stage's own caches (metadata, decoded audio, shards, checkpoints) still make reruns cheap.
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml
from prefect import flow

from avmatch.paths import project_root
from pipelines.registry import load_run_params
from tasks.stages import run_stage_task

STAGE_ORDER = ["corpus", "ingest", "features", "train", "extract", "index", "evaluate"]


@flow(name="fingerprint", log_prints=True)
def fingerprint_flow(overrides: dict[str, Any] | None = None, stages: list[str] | None = None,
                     root: str | None = None) -> dict:
    """Run the fingerprint stages (all, or the named ones in pipeline order); returns each stage's summary."""
    root_s = str(root or project_root())
    load_run_params(project_root(root_s), overrides=overrides or {})  # fail fast on bad parameters
    wanted = stages or STAGE_ORDER
    unknown = sorted(set(wanted) - set(STAGE_ORDER))
    if unknown:
        raise ValueError(f"unknown fingerprint stage(s) {unknown}; known: {STAGE_ORDER}")
    results: dict[str, dict] = {}
    for stage in [s for s in STAGE_ORDER if s in wanted]:
        results[stage] = run_stage_task(f"fingerprint.{stage}", overrides or {}, None, root_s)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.fingerprint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. fingerprint.train.max_steps=200 (repeatable)")
    ap.add_argument("--stages", nargs="+", choices=STAGE_ORDER, help="run only these stages")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        if "=" not in item:
            ap.error(f"override '{item}' must look like key.path=value")
        k, v = item.split("=", 1)
        overrides[k] = yaml.safe_load(v)
    fingerprint_flow(overrides=overrides, stages=args.stages)


if __name__ == "__main__":
    main()
