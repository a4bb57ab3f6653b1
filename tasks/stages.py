"""One Prefect task that runs any pipeline stage through the same runner `dvc repro` uses (the Dask
partitions of extraction; whole stages go through DVC: flows/dvc_run.py, flows/dvc_exp.py).

Transient failures (I/O, timeouts, a locked tracking database) are retried with exponential
backoff as `orchestration.retries` says; anything else fails at once with the stage and input named.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.tasks import exponential_backoff

from avmatch.core.config import RetryParams
from avmatch.core.failures import is_transient
from pipelines.runner import run_stage


def retry_only_transient(task: Task, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry I/O-like failures, not bad parameters, missing inputs or bugs."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


@task(name="stage", task_run_name="{name}", log_prints=True, retry_condition_fn=retry_only_transient)
def run_stage_task(name: str, overrides: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                   root: str | None = None) -> dict:
    """Run `pipeline.stage`; the MLflow run is tagged orchestrator=prefect."""
    return run_stage(name, root=root, overrides=overrides or {}, orchestrator="prefect", **(options or {}))


def with_retries(stage_task_: Task, retries: RetryParams) -> Task:
    """A stage task with the project's retry policy (transient failures only, exponential backoff)."""
    if retries.attempts == 0:
        return stage_task_.with_options(retries=0)
    return stage_task_.with_options(retries=retries.attempts, retry_condition_fn=retry_only_transient,
                                    retry_delay_seconds=exponential_backoff(backoff_factor=retries.backoff_s))


def stage_task(retries: RetryParams) -> Task:
    """`run_stage_task` with the project's retry policy."""
    return with_retries(run_stage_task, retries)
