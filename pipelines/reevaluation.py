"""Scheduled re-evaluation: the registered encoder of a pipeline on the current evaluation set.

The point is to notice when the data moved under a model (new references, new queries) or a
registered version got worse: each run is an MLflow run (stage `reevaluate`, tagged with the model
version), and a watched metric that is worse than in the last successful re-evaluation by more
than the tolerance is a regression: the MLflow run is marked FAILED and `RegressionError` names
the metrics, which fails the Prefect run that called it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from avmatch.core.config import Params
from avmatch.core.tracking import (
    download_model_version,
    latest_model_version,
    model_name,
    stage_run,
    tracking_uri,
)
from pipelines.registry import pipeline_spec

log = logging.getLogger(__name__)


class RegressionError(RuntimeError):
    """A watched metric got worse than the last scheduled evaluation by more than the tolerance."""


def regressions(current: dict[str, float], previous: dict[str, float], watch: tuple[tuple[str, str], ...],
                tolerance: float) -> list[str]:
    """Human-readable lines for each watched metric that dropped by more than `tolerance`."""
    found = []
    for key, better in watch:
        if key not in current or key not in previous:
            continue
        drop = previous[key] - current[key] if better == "max" else current[key] - previous[key]
        if drop > tolerance:
            found.append(f"{key} {previous[key]:.4f} -> {current[key]:.4f} (worse by {drop:.4f} > {tolerance})")
    return found


def last_reevaluation(params: Params, root: Path, pipeline: str, exclude_run: str | None) -> dict[str, float]:
    """Metrics of the newest finished `reevaluate` run of the pipeline (empty if there is none)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(params.common, root))
    exp = client.get_experiment_by_name(f"{params.common.mlflow.experiment_prefix}-{pipeline}")
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'reevaluate' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5)
    for run in runs:
        if run.info.run_id != exclude_run:
            return dict(run.data.metrics)
    return {}


def reevaluate_pipeline(pipeline: str, params: Params, root: Path, tolerance: float | None = None,
                        orchestrator: str | None = None) -> dict[str, Any]:
    """Evaluate the newest registered version; raise RegressionError on a regression."""
    spec = pipeline_spec(pipeline)
    fn = spec.reevaluate_fn()
    if fn is None:
        return {"pipeline": pipeline, "skipped": "the pipeline has no re-evaluation"}
    tol = params.orchestration.reevaluate.tolerance if tolerance is None else tolerance
    version = latest_model_version(params.common, root, pipeline)
    if version is None:
        log.warning("%s: no registered model %s yet (run the pipeline once)", pipeline,
                    model_name(params.common, pipeline))
        return {"pipeline": pipeline, "skipped": f"no registered model {model_name(params.common, pipeline)}"}
    paths = spec.paths(params, root)
    section = {"common": params.common.model_dump(mode="json"),
               pipeline: getattr(params, pipeline).model_dump(mode="json"),
               "reevaluate": {"tolerance": tol, "model_version": int(version.version)}}
    with tempfile.TemporaryDirectory(prefix="avmatch-model-") as tmp:
        folder = download_model_version(version, Path(tmp))
        files = [p for p in folder.rglob("*") if p.is_file()]
        if len(files) != 1:
            raise FileNotFoundError(f"registered {version.name} v{version.version} at {version.source} "
                                    f"holds {len(files)} files, expected one encoder file")
        with stage_run(params.common, root, pipeline, "reevaluate", section, orchestrator=orchestrator) as tracker:
            tracker.set_tags({"model_name": version.name, "model_version": version.version, "scheduled": "true"})
            metrics = fn(params, paths, tracker, files[0])
            tracker.log_metrics(metrics)
            previous = last_reevaluation(params, root, pipeline, tracker.run_id)
            found = regressions(metrics, previous, spec.watch, tol)
            tracker.set_tags({"regression": "; ".join(found) if found else "none"})
            if found:
                raise RegressionError(f"{pipeline}: registered {version.name} v{version.version} regressed: "
                                      + "; ".join(found))
    return {"pipeline": pipeline, "model_version": int(version.version), "metrics": metrics,
            "previous": previous}
