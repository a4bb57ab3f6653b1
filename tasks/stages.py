"""One Prefect task that runs any pipeline stage through the same runner `dvc repro` uses."""

from __future__ import annotations

import os
from typing import Any

from prefect import task

from pipelines.registry import run_stage


@task(name="stage", task_run_name="{name}", log_prints=True)
def run_stage_task(name: str, overrides: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                   root: str | None = None) -> dict:
    """Run `pipeline.stage`; the MLflow run is tagged orchestrator=prefect."""
    os.environ["AVMATCH_ORCHESTRATOR"] = "prefect"
    return run_stage(name, root=root, overrides=overrides or {}, **(options or {}))
