"""Plain pipeline runs go through DVC: one Prefect task per dvc.yaml stage, each reproduced by DVC.

Why: DVC is the one authority on the pipeline graph and on what is up to date. A Prefect run that
called the stage functions itself re-ran every stage (11 minutes for an up-to-date fingerprint
project, where `dvc repro` takes seconds), left `dvc.lock` behind (so `dvc status` lied afterwards
and the registered encoder was tagged `dvc_lock_matches=False`). Here each task asks DVC to reproduce
its one stage (`single_item`): DVC skips it when its deps, params and outs match `dvc.lock` (the task
ends in the state named "Cached"), or runs the stage's own command and writes its `dvc.lock` entry,
exactly as `dvc repro` does. The stage order and dependencies come from DVC's graph of dvc.yaml, so
no second list of stages exists.

Runs in one workspace are serialised by a file lock: DVC allows one writer per repository, and a
second plain run waits for the first instead of failing on DVC's lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from prefect import task
from prefect.states import Completed

from avmatch.core.config import RetryParams
from tasks.stages import retry_only_transient, with_retries

log = logging.getLogger(__name__)

RUN_LOCK = ".dvc/tmp/avmatch-run.lock"


def stage_graph(pipeline: str, root: str | Path) -> dict[str, list[str]]:
    """Every dvc.yaml stage a plain run of `pipeline` needs, in an order DVC could run them, each with the
    stages it depends on (DVC's graph: another pipeline's stage that produces an input is included).

    Ties are broken by dvc.yaml order, so the Prefect UI shows the stages as dvc.yaml lists them."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph            # an edge goes from a stage to a stage it depends on
        file_order = {s.addressing: i for i, s in enumerate(repo.index.stages)}
        mine = [s for s in graph if getattr(s, "name", "").startswith(f"{pipeline}_")]
        if not mine:
            raise ValueError(f"dvc.yaml has no stage of pipeline '{pipeline}' (stages are named {pipeline}_<stage>)")
        needed = set(mine).union(*(nx.descendants(graph, s) for s in mine))
        sub = graph.subgraph(needed).reverse()   # edges now go from a dependency to its dependents
        order = nx.lexicographical_topological_sort(sub, key=lambda s: file_order.get(s.addressing, 0))
        return {s.addressing: sorted((d.addressing for d in graph.successors(s)), key=file_order.get)
                for s in order}


@task(name="dvc stage", task_run_name="{stage}", log_prints=True, retry_condition_fn=retry_only_transient)
def reproduce_stage_task(stage: str, root: str) -> Any:
    """DVC reproduces `stage` alone when it is stale; an up-to-date stage ends as "Cached"."""
    from dvc.repo import Repo

    os.environ["AVMATCH_ORCHESTRATOR"] = "prefect"   # the stage's MLflow run says who started it
    t0 = time.perf_counter()
    with Repo(root) as repo:
        done = repo.reproduce(targets=[stage], single_item=True)
    seconds = round(time.perf_counter() - t0, 2)
    if not done:
        return Completed(name="Cached", message=f"{stage}: up to date in dvc.lock, skipped",
                         data={"stage": stage, "ran": False, "seconds": seconds})
    return {"stage": stage, "ran": True, "seconds": seconds}


def is_stale(stage: str, root: str) -> bool:
    """Whether DVC would run `stage` (its deps, params or outs differ from dvc.lock)."""
    from dvc.repo import Repo

    with Repo(root) as repo:
        return bool(repo.status(targets=[stage]))


def run_through_dvc(pipeline: str, root: str, stages: list[str] | None = None,
                    before: dict[str, Callable[[], Any]] | None = None,
                    retries: RetryParams | None = None) -> dict[str, dict]:
    """Reproduce the pipeline's stages (or the named `stages` of it) through DVC, one task each.

    `before`: per pipeline stage, work to do first when DVC finds the stage stale (the Dask partitions
    of extraction: they fill the stage's persistent shards, and the stage's own command then only
    finds them done and finishes). Returns, per stage name (without the pipeline prefix for the
    pipeline's own stages), whether it ran and how long DVC took (`ran: False`: skipped, up to date).
    `retries`: the project's policy for transient failures (DVC's repository lock held a moment too long
    included), as runs with overrides have it."""
    graph = stage_graph(pipeline, root)
    prefix = f"{pipeline}_"
    if stages:
        known = [s[len(prefix):] for s in graph if s.startswith(prefix)]
        unknown = sorted(set(stages) - set(known))
        if unknown:
            raise ValueError(f"unknown {pipeline} stage(s) {unknown}; known: {known}")
        graph = {s: [d for d in deps if s.startswith(prefix) and d[len(prefix):] in stages]
                 for s, deps in graph.items() if s.startswith(prefix) and s[len(prefix):] in stages}
    lock = Path(root) / RUN_LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    states: dict[str, Any] = {}
    task_ = with_retries(reproduce_stage_task, retries) if retries else reproduce_stage_task
    with FileLock(str(lock)):
        # one stage at a time (DVC allows one writer per repository); wait_for records the graph's edges
        for stage, deps in graph.items():
            short = stage[len(prefix):] if stage.startswith(prefix) else stage
            extra = {}
            if before and short in before and is_stale(stage, root):
                extra = {"before": before[short]()}
            state = task_(stage, root, wait_for=[states[d] for d in deps if d in states],
                                         return_state=True)
            states[stage] = state
            out = state.result()           # raises the stage's error: later stages do not start
            results[short] = {**dict(out or {}), **extra}
    return results
