"""Name → stage function, and the one runner both DVC (through the CLI) and Prefect tasks use.

The runner loads and validates params.yaml (plus dotted overrides, as `dvc exp run -S` would set
them), opens the MLflow run for the stage, calls the stage function and logs its summary.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avmatch.config import Params, load_params
from avmatch.paths import project_root
from avmatch.tracking import stage_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineSpec:
    """How the runner finds a pipeline: its stage table, its paths class and the stage order.

    Modules are named, not imported, so listing pipelines stays cheap and a broken pipeline
    does not stop the others from loading.
    """

    stages_module: str  # module with a STAGES dict: name -> fn(params, paths, tracker, **options)
    paths_class: str  # "module:Class" with a classmethod from_params(params, root)
    order: tuple[str, ...]  # pipeline order (what a flow runs, what `dvc repro` chains)

    def stages(self) -> dict[str, Callable]:
        return importlib.import_module(self.stages_module).STAGES

    def paths(self, params: Params, root: Path) -> Any:
        module, _, cls = self.paths_class.partition(":")
        return getattr(importlib.import_module(module), cls).from_params(params, root)


# One entry per pipeline; a new pipeline adds one line here (plus its params section and dvc stages).
SPECS: dict[str, PipelineSpec] = {
    "fingerprint": PipelineSpec("pipelines.fingerprint.stages", "pipelines.fingerprint.paths:FingerprintPaths",
                                ("corpus", "ingest", "features", "train", "extract", "index", "evaluate")),
    "versions": PipelineSpec("pipelines.versions.stages", "pipelines.versions.paths:VersionsPaths",
                             ("corpus", "ingest", "features", "train", "extract", "evaluate", "baseline")),
}
PIPELINES = tuple(SPECS)


def _pipeline_stages(pipeline: str) -> dict[str, Callable]:
    return SPECS[pipeline].stages()


def stage_names(pipeline: str | None = None) -> list[str]:
    names = []
    for p in PIPELINES if pipeline is None else (pipeline,):
        names += [f"{p}.{s}" for s in _pipeline_stages(p)]
    return names


def load_run_params(root: Path, params_file: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> Params:
    return load_params(Path(params_file) if params_file else root / "params.yaml", dict(overrides or {}))


def run_stage(name: str, params: Params | None = None, root: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, **options: Any) -> dict:
    """Run `pipeline.stage` once, tracked in MLflow; returns the stage's summary dict."""
    pipeline, _, stage = name.partition(".")
    try:
        fn = _pipeline_stages(pipeline)[stage]
    except KeyError:
        raise KeyError(f"unknown stage '{name}'; known stages: {', '.join(stage_names())}") from None
    root_p = Path(root).resolve() if root else project_root()
    params = params or load_run_params(root_p, overrides=overrides)
    paths = SPECS[pipeline].paths(params, root_p)
    section = {"common": params.common.model_dump(mode="json"),
               pipeline: getattr(params, pipeline).model_dump(mode="json")}
    from avmatch.device import set_threads

    set_threads(params.common.num_threads)
    t0 = time.perf_counter()
    with stage_run(params.common, root_p, pipeline, stage, section, dvc_stage=f"{pipeline}_{stage}") as tracker:
        summary = fn(params, paths, tracker, **options)
        summary = dict(summary or {})
        summary["stage_seconds"] = time.perf_counter() - t0
        tracker.log_metrics(summary)
    log.info("%s finished in %.1f s", name, summary["stage_seconds"])
    return summary
