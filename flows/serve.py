"""Serve every pipeline's deployment plus the scheduled re-evaluation (needs a Prefect server).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve     (make ui does this for you)

Deployments: `<pipeline>/avmatch` for each pipeline flow (UI form = that pipeline's params.yaml
section; only filled-in values become overrides) and `reevaluate/scheduled` on
`orchestration.reevaluate.cron` (or `interval_s`). Runs start from this process's workspace, with the
same code and stores `dvc repro` uses: a plain run reproduces the workspace through DVC (one at a time,
flows/dvc_run.py), a run with values in the form is a DVC experiment in a temporary workspace
(flows/dvc_exp.py), so `CONCURRENT_RUNS` runs go at once. Stop with Ctrl-C; schedules pause until it
serves again.
"""

from __future__ import annotations

import importlib
from datetime import timedelta

from prefect import serve
from prefect.schedules import Cron, Interval

from avmatch.core.config import Params
from avmatch.core.paths import project_root
from pipelines.registry import pipeline_names
from pipelines.runner import load_run_params

DEPLOYMENT = "avmatch"
SCHEDULED = "scheduled"
# runs served at once: experiments run side by side in their own temporary workspaces (plain runs of the
# workspace still take turns on its run lock); two suit the 2-core machines the project targets
CONCURRENT_RUNS = 2


def pipeline_flow(pipeline: str):
    """`flows.<pipeline>.<pipeline>_flow`: every pipeline's flow module follows that name."""
    return getattr(importlib.import_module(f"flows.{pipeline}"), f"{pipeline}_flow")


def deployments(params: Params, root: str) -> list:
    from flows.reevaluate import reevaluate_flow

    out = [pipeline_flow(p).to_deployment(
        name=DEPLOYMENT, parameters={"root": root}, tags=["avmatch", p],
        description=f"The {p} pipeline; the form holds its params.yaml section (fill in what to change).")
        for p in pipeline_names()]
    rv = params.orchestration.reevaluate
    schedule = (Interval(timedelta(seconds=rv.interval_s), timezone=rv.timezone) if rv.interval_s
                else Cron(rv.cron, timezone=rv.timezone))
    out.append(reevaluate_flow.to_deployment(
        name=SCHEDULED, schedules=[schedule], parameters={"root": root}, tags=["avmatch", "scheduled"],
        description="Registered encoders on the current evaluation sets; fails on a regression."))
    return out


def main() -> None:
    root = project_root()
    serve(*deployments(load_run_params(root), str(root)), limit=CONCURRENT_RUNS)


if __name__ == "__main__":
    main()
