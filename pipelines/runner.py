"""The one runner both doors use: `python -m pipelines NAME` (what dvc.yaml calls) and the Prefect task.

It loads and validates params.yaml (plus dotted overrides, as `dvc exp run -S` would set them) for the
stage's own system only, opens the MLflow run for the stage, calls the stage function, logs its
summary and, after the stage that evaluates the encoder, registers that encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avmatch.core.config import Params, load_params
from avmatch.core.device import set_threads
from avmatch.core.failures import StageError, failing_input
from avmatch.core.paths import origin_repo, project_root
from avmatch.core.tracking import (
    dvc_lock_entry,
    dvc_lock_records_file,
    model_name,
    stage_deps,
    stage_run,
)
from pipelines.registry import PipelineSpec, pipeline_spec

log = logging.getLogger(__name__)


def load_run_params(root: Path, params_file: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None, systems: list[str] | None = None) -> Params:
    """params.yaml of the project at `root` (every system's section unless `systems` names some)."""
    return load_params(Path(params_file) if params_file else root / "params.yaml", dict(overrides or {}), systems)


def run_stage(name: str, params: Params | None = None, root: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, orchestrator: str | None = None, **options: Any) -> dict:
    """Run `pipeline.stage` once, tracked in MLflow; returns the stage's summary dict."""
    pipeline, _, stage = name.partition(".")
    spec = pipeline_spec(pipeline)
    fn = spec.stage_function(stage)
    root_p = Path(root).resolve() if root else project_root()
    params = params or load_run_params(root_p, overrides=overrides, systems=[pipeline])
    paths = spec.paths(params, root_p)
    section = {"common": params.common.model_dump(mode="json"),
               pipeline: getattr(params, pipeline).model_dump(mode="json")}
    set_threads(params.common.num_threads)
    with stage_run(params.common, root_p, pipeline, stage, section, dvc_stage=f"{pipeline}_{stage}",
                   orchestrator=orchestrator) as tracker:
        t0 = time.perf_counter()   # stage_seconds: the stage function alone (tracking is overhead)
        try:
            summary = fn(params, paths, tracker, **options)
        except Exception as exc:
            inputs = stage_deps(root_p, f"{pipeline}_{stage}") or [str(root_p)]
            raise StageError(name, failing_input(exc, ", ".join(inputs)), exc) from exc
        summary = dict(summary or {})
        summary["stage_seconds"] = time.perf_counter() - t0
        tracker.log_metrics(summary)
        if stage == spec.register_after and spec.model_attr and not options:
            if origin_repo(root_p) != root_p:
                # a `dvc exp run --temp` workspace: the encoder is this experiment's, not the project's model
                # (the scheduled re-evaluation takes the newest registered version); `dvc exp apply` + `dvc
                # repro` promote it, and that repro's evaluate registers it
                tracker.set_tags({"registered": "no (temporary DVC experiment "
                                                f"{os.environ.get('DVC_EXP_NAME', '?')})"})
            else:
                version = register_encoder(spec, pipeline, params, paths, root_p, tracker, summary)
                if version:
                    summary["registered_version"] = int(version)
    log.info("%s finished in %.1f s", name, summary["stage_seconds"])
    return summary


def register_encoder(spec: PipelineSpec, pipeline: str, params: Params, paths: Any, root: Path, tracker: Any,
                     metrics: Mapping[str, Any]) -> str | None:
    """Register the encoder just evaluated, tagged with how it was made.

    `dvc_lock_md5` is the md5 of the train stage's dvc.lock record (its deps', params' and outs'
    hashes); `dvc_lock_matches` says whether that record's output hash is this very file, i.e.
    whether `dvc repro` produced it (a Prefect or CLI run outside DVC leaves the lock behind).
    """
    model_file = Path(getattr(paths, spec.model_attr))
    if not model_file.exists():
        log.warning("no %s to register (%s)", spec.model_attr, model_file)
        return None
    entry = dvc_lock_entry(root, f"{pipeline}_{spec.train_stage}")
    file_md5 = hashlib.md5(model_file.read_bytes()).hexdigest()
    tags: dict[str, Any] = {"pipeline": pipeline, "file_md5": file_md5}
    if os.environ.get("DVC_EXP_NAME"):   # a workspace `dvc exp run`: the version says which experiment
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    if entry:
        tags["dvc_lock_md5"] = hashlib.md5(json.dumps(entry, sort_keys=True).encode()).hexdigest()
        tags["dvc_lock_matches"] = dvc_lock_records_file(root, entry, model_file, file_md5)
        for dep in entry.get("deps", []):
            tags[f"dep:{dep.get('path')}"] = dep.get("md5", "")
    else:
        tags["dvc_lock_md5"] = "not-locked"
    tags.update({f"metric:{k}": v for k, v in metrics.items() if isinstance(v, (int, float))
                 and k in {w for w, _ in spec.watch}})
    version = tracker.register_model(model_file, model_name(params.common, pipeline), tags,
                                     description=f"{pipeline} encoder evaluated in run {tracker.run_id}")
    if version:
        log.info("registered %s version %s", model_name(params.common, pipeline), version)
    return version
