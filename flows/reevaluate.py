"""Scheduled re-evaluation of every pipeline's registered encoder (deployment `reevaluate/scheduled`).

    python -m flows.reevaluate                    # once, now
    python -m flows.serve                         # serve it on `orchestration.reevaluate.cron`

A regression (a watched metric worse than the last scheduled run by more than
`orchestration.reevaluate.tolerance`) fails the Prefect run with the metric named.
"""

from __future__ import annotations

import argparse

from prefect import flow, task

from avmatch.core.paths import project_root
from pipelines.reevaluation import reevaluate_pipeline
from pipelines.registry import pipeline_names, pipeline_spec
from pipelines.runner import load_run_params


@task(name="reevaluate", task_run_name="reevaluate {pipeline}")
def reevaluate_task(pipeline: str, overrides: dict, root: str, tolerance: float | None) -> dict:
    root_p = project_root(root)
    return reevaluate_pipeline(pipeline, load_run_params(root_p, overrides=overrides), root_p, tolerance,
                               orchestrator="prefect")


@flow(name="reevaluate", log_prints=True, validate_parameters=True)
def reevaluate_flow(pipelines: list[str] | None = None, tolerance: float | None = None,
                    overrides: dict | None = None, root: str | None = None) -> dict:
    """Evaluate each pipeline's newest registered encoder on its current evaluation set.

    `pipelines`: which (default: `orchestration.reevaluate.pipelines`, else every pipeline that
    has a re-evaluation); `tolerance`: allowed drop (default from params).
    """
    root_s = str(root or project_root())
    params = load_run_params(project_root(root_s), overrides=overrides or {})
    names = pipelines or params.orchestration.reevaluate.pipelines or [p for p in pipeline_names() if pipeline_spec(p).reevaluate]
    unknown = sorted(set(names) - set(pipeline_names()))
    if unknown:
        raise ValueError(f"unknown pipeline(s) {unknown}; known: {pipeline_names()}")
    futures = {p: reevaluate_task.submit(p, overrides or {}, root_s, tolerance) for p in names}
    results, failed = {}, []
    for p, fut in futures.items():
        fut.wait()
        if fut.state.is_completed():
            results[p] = fut.result()
            print(f"{p}: {results[p]}")
        else:
            failed.append(str(fut.state.message or p))
    if failed:  # the task messages carry the cause (RegressionError names the metric)
        raise RuntimeError("re-evaluation failed: " + " | ".join(failed))
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.reevaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipelines", nargs="+", choices=pipeline_names())
    ap.add_argument("--tolerance", type=float)
    args = ap.parse_args(argv)
    reevaluate_flow(pipelines=args.pipelines, tolerance=args.tolerance)


if __name__ == "__main__":
    main()
