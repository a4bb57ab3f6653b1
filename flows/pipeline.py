"""What every pipeline flow shares: validate overrides, run the chosen stages in order, parse `-S`.

Each pipeline has a thin flow module (`flows/<pipeline>.py`) so it gets its own Prefect flow
name, deployment and UI form; the work itself is here and in `pipelines.registry`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import yaml

from avmatch.paths import project_root
from pipelines.registry import SPECS, load_run_params
from tasks.stages import run_stage_task


def run_pipeline(pipeline: str, overrides: dict[str, Any] | None = None, stages: list[str] | None = None,
                 root: str | None = None) -> dict[str, dict]:
    """Run the pipeline's stages (all, or the named ones in pipeline order); returns each stage's summary.

    Overrides are validated before any stage starts, so a bad key fails the run at once.
    """
    order = SPECS[pipeline].order
    root_s = str(root or project_root())
    load_run_params(project_root(root_s), overrides=overrides or {})
    wanted = stages or list(order)
    unknown = sorted(set(wanted) - set(order))
    if unknown:
        raise ValueError(f"unknown {pipeline} stage(s) {unknown}; known: {list(order)}")
    results: dict[str, dict] = {}
    for stage in [s for s in order if s in wanted]:
        results[stage] = run_stage_task(f"{pipeline}.{stage}", overrides or {}, None, root_s)
    return results


def parse_overrides(items: list[str], error: Callable[[str], Any]) -> dict[str, Any]:
    """`key.path=value` strings → dict, values parsed as YAML (as `dvc exp run -S` does)."""
    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            error(f"override '{item}' must look like key.path=value")
        k, v = item.split("=", 1)
        overrides[k] = yaml.safe_load(v)
    return overrides


def cli_main(pipeline: str, flow_fn: Callable[..., Any], doc: str | None, argv: list[str] | None = None) -> None:
    order = SPECS[pipeline].order
    ap = argparse.ArgumentParser(prog=f"python -m flows.{pipeline}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a parameter, e.g. {pipeline}.train.max_steps=200 (repeatable)")
    ap.add_argument("--stages", nargs="+", choices=order, help="run only these stages")
    args = ap.parse_args(argv)
    flow_fn(overrides=parse_overrides(args.set, ap.error), stages=args.stages)
