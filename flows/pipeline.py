"""What every pipeline flow shares: validate parameters, run the chosen stages through DVC, parse `-S`.

A plain run (no overrides) goes through DVC in the workspace (`flows.dvc_run`): stale stages run and
`dvc.lock` is updated, up-to-date ones are skipped. A run with overrides is a DVC experiment in a
temporary workspace (`flows.dvc_exp`): `dvc exp run --temp -n <name> -S key=value ...`, isolated from the
workspace's params.yaml, models, metrics and dvc.lock, listed by `dvc exp show`, promoted with
`dvc exp apply <name>`.

Each pipeline has a thin flow module (`flows/<pipeline>.py`) so it gets its own Prefect flow
name, deployment and UI form; the work itself is here and in `pipelines.runner`. A stage that
the pipeline can split (extraction) runs its partitions as tasks on a Dask task runner when
`<pipeline>.extract.num_partitions` > 1 in params.yaml (a plain run): a local cluster, or
`orchestration.dask.address`. Inside an experiment the extraction stage runs as its dvc.yaml command
(DVC's checkout of the experiment's outputs would delete shards written before it starts). Overrides of
`orchestration.*` only (a Dask address, retries) change no stage, so such a run is a plain one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from prefect import flow

from avmatch.core.config import (
    ConfigError,
    DaskParams,
    Params,
    RetryParams,
    overrides_from_model,
    parse_overrides,
)
from avmatch.core.paths import project_root
from avmatch.core.tracking import tracking_uri
from flows.dvc_exp import experiment_name, experiment_task
from flows.dvc_run import run_through_dvc
from pipelines.registry import stage_order
from pipelines.runner import load_run_params
from tasks.stages import stage_task, with_retries

PARTITIONED_STAGE = "extract"
ORCHESTRATION = "orchestration"   # the params section no stage reads (dvc.yaml lists none of it)


def merge_overrides(pipeline: str, section: Any, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Overrides from the deployment's typed form (`section`) plus explicit dotted ones (these win)."""
    return {**overrides_from_model(section, pipeline), **(overrides or {})}


def run_pipeline(pipeline: str, overrides: dict[str, Any] | None = None, stages: list[str] | None = None,
                 root: str | None = None, experiment: str | None = None) -> dict[str, dict]:
    """Run the pipeline's stages (all, or the named ones) through DVC; returns each stage's summary.

    Parameters are validated before DVC starts, so a bad key fails the run at once. With overrides the
    run is the DVC experiment `experiment` (default: a name made from the pipeline, the overrides and the
    time); each stage's summary then says whether it ran in the experiment or was restored (`ran`).
    """
    root_s = str(root or project_root())
    overrides = dict(overrides or {})
    params = load_run_params(project_root(root_s), overrides=overrides, systems=[pipeline])
    if not any(k.partition(".")[0] != ORCHESTRATION for k in overrides):
        # no stage reads `orchestration` (how runs are scheduled, not what they compute): DVC tracks none of
        # these keys, so the run is a plain one of the workspace with them applied (e.g. a Dask address)
        return _plain_run(pipeline, params, root_s, stages)
    if _num_partitions(params, pipeline, PARTITIONED_STAGE) > 1:
        print(f"{pipeline}: inside a DVC experiment extraction runs as its dvc.yaml command, not in Dask "
              "partitions (set extract.num_partitions in params.yaml and run without overrides for that)")
    name = experiment or experiment_name(pipeline, overrides)
    tracking = tracking_uri(params.common, project_root(root_s)) if params.common.mlflow.enabled else None
    task_ = with_retries(experiment_task, params.orchestration.retries)
    return task_(pipeline, overrides, stages, root_s, name, tracking,
                 f"{params.common.mlflow.experiment_prefix}-{pipeline}")


def _plain_run(pipeline: str, params: Params, root: str, stages: list[str] | None) -> dict[str, dict]:
    """No overrides: the workspace's params.yaml as it is, so DVC runs what is stale and updates dvc.lock."""
    before = {}
    n = _num_partitions(params, pipeline, PARTITIONED_STAGE)
    if n > 1:
        before[PARTITIONED_STAGE] = lambda: run_partitions(f"{pipeline}.{PARTITIONED_STAGE}", {}, n, root,
                                                           params.orchestration.dask, params.orchestration.retries)
    return run_through_dvc(pipeline, root, stages, before, params.orchestration.retries)


def _num_partitions(params: Params, pipeline: str, stage: str) -> int:
    if stage != PARTITIONED_STAGE:
        return 1
    extract = getattr(getattr(params, pipeline), "extract", None)
    return int(getattr(extract, "num_partitions", 1) or 1)


def dask_task_runner(dask: DaskParams):
    """An existing cluster when `address` is set, else a local one of `n_workers` processes."""
    from prefect_dask import DaskTaskRunner

    if dask.address:
        return DaskTaskRunner(address=dask.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": dask.n_workers, "threads_per_worker": dask.threads_per_worker,
                                          "processes": True, "dashboard_address": None})


@flow(name="partitions", log_prints=True)
def partitions_flow(name: str, overrides: dict[str, Any], num_partitions: int, root: str,
                    retries: RetryParams) -> list[dict]:
    """Every partition of one stage as its own task; each writes its own shards (tasks pass paths, not arrays)."""
    run = stage_task(retries)
    futures = [run.submit(name, overrides, {"partition": i, "num_partitions": num_partitions}, root)
               for i in range(num_partitions)]
    return [f.result() for f in futures]


def run_partitions(name: str, overrides: dict[str, Any], num_partitions: int, root: str, dask: DaskParams,
                   retries: RetryParams) -> list[dict]:
    return partitions_flow.with_options(name=f"{name} partitions", task_runner=dask_task_runner(dask))(
        name, overrides, num_partitions, root, retries)


def cli_main(pipeline: str, flow_fn: Callable[..., Any], doc: str | None, argv: list[str] | None = None) -> None:
    order = stage_order(pipeline)
    ap = argparse.ArgumentParser(prog=f"python -m flows.{pipeline}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a parameter, e.g. {pipeline}.train.max_steps=200 (repeatable)")
    ap.add_argument("--stages", nargs="+", choices=order, help="run only these stages")
    ap.add_argument("-n", "--name", help="the DVC experiment's name (runs with -S; default: "
                    f"{pipeline}-<hash of the overrides>-<UTC time>)")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
    except ConfigError as exc:
        ap.error(str(exc))
    flow_fn(overrides=overrides, stages=args.stages, experiment=args.name)
