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
from avmatch.failures import StageError, failing_input
from avmatch.tracking import dvc_lock_entry, dvc_lock_records_file, model_name, stage_deps, stage_run

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
    # model registry: after `register_after` succeeds, paths.<model_attr> becomes a new version of
    # the pipeline's registered encoder, with that stage's metrics and the train stage's dvc.lock hash
    model_attr: str | None = None
    register_after: str | None = None
    train_stage: str = "train"
    # scheduled re-evaluation: "module:function" (params, paths, tracker, model_file) -> flat metrics,
    # and the metrics it watches for regressions with their better direction ("max" or "min")
    reevaluate: str | None = None
    watch: tuple[tuple[str, str], ...] = ()

    def stages(self) -> dict[str, Callable]:
        return importlib.import_module(self.stages_module).STAGES

    def paths(self, params: Params, root: Path) -> Any:
        return _resolve(self.paths_class).from_params(params, root)

    def reevaluate_fn(self) -> Callable | None:
        return _resolve(self.reevaluate) if self.reevaluate else None


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# One entry per pipeline; a new pipeline adds one line here (plus its params section and dvc stages).
SPECS: dict[str, PipelineSpec] = {
    "fingerprint": PipelineSpec(
        "pipelines.fingerprint.stages", "pipelines.fingerprint.paths:FingerprintPaths",
        ("corpus", "ingest", "features", "train", "extract", "index", "evaluate"),
        model_attr="encoder", register_after="evaluate",
        reevaluate="pipelines.fingerprint.stages:reevaluate",
        watch=(("track_hit_rate_3s", "max"), ("track_hit_rate_5s", "max"), ("segment_exact_3s", "max"),
               ("false_match_rate", "min"))),
    "copydetect": PipelineSpec(
        "pipelines.copydetect.stages", "pipelines.copydetect.paths:CopydetectPaths",
        ("corpus", "ingest", "frames", "train", "extract", "candidates", "localise", "evaluate"),
        model_attr="encoder", register_after="evaluate",
        reevaluate="pipelines.copydetect.stages:reevaluate",
        watch=(("descriptor_uap", "max"), ("matching_uap", "max"), ("pairwise_uap", "max"))),
    "versions": PipelineSpec(
        "pipelines.versions.stages", "pipelines.versions.paths:VersionsPaths",
        ("corpus", "ingest", "features", "train", "extract", "evaluate", "baseline"),
        model_attr="encoder", register_after="evaluate",
        reevaluate="pipelines.versions.stages:reevaluate",
        watch=(("track_MAP", "max"), ("segment_MAP", "max"), ("track_MR1", "min"))),
}


def stage_names(pipeline: str | None = None) -> list[str]:
    names = []
    for p in SPECS if pipeline is None else (pipeline,):
        names += [f"{p}.{s}" for s in SPECS[p].stages()]
    return names


def load_run_params(root: Path, params_file: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> Params:
    return load_params(Path(params_file) if params_file else root / "params.yaml", dict(overrides or {}))


def run_stage(name: str, params: Params | None = None, root: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, orchestrator: str | None = None, **options: Any) -> dict:
    """Run `pipeline.stage` once, tracked in MLflow; returns the stage's summary dict."""
    pipeline, _, stage = name.partition(".")
    try:
        fn = SPECS[pipeline].stages()[stage]
    except KeyError:
        raise KeyError(f"unknown stage '{name}'; known stages: {', '.join(stage_names())}") from None
    root_p = Path(root).resolve() if root else project_root()
    params = params or load_run_params(root_p, overrides=overrides)
    paths = SPECS[pipeline].paths(params, root_p)
    section = {"common": params.common.model_dump(mode="json"),
               pipeline: getattr(params, pipeline).model_dump(mode="json")}
    from avmatch.device import set_threads

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
        spec = SPECS[pipeline]
        if stage == spec.register_after and spec.model_attr and not options:
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
    import hashlib
    import json

    model_file = Path(getattr(paths, spec.model_attr))
    if not model_file.exists():
        log.warning("no %s to register (%s)", spec.model_attr, model_file)
        return None
    entry = dvc_lock_entry(root, f"{pipeline}_{spec.train_stage}")
    file_md5 = hashlib.md5(model_file.read_bytes()).hexdigest()
    tags: dict[str, Any] = {"pipeline": pipeline, "file_md5": file_md5}
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
