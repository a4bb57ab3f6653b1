"""Which pipelines exist, where each one's stages live, and in which order dvc.yaml runs them.

A pipeline is a package `pipelines/<name>/` with a `spec.py` (its `SPEC`) and one module per stage,
`pipelines/<name>/<stage>.py` defining the function `<stage>(params, paths, tracker, **options)`.
One module per stage is what lets dvc.yaml list exactly the code a stage runs: editing the evaluate
stage never makes the train stage stale. Only the named pipeline's modules are imported, so a stage
of one system never loads (or depends on) another system's code. The stage order is read from
dvc.yaml (the stages named `<pipeline>_<stage>`, in file order): dvc.yaml is the one map.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from avmatch.core.config import Params, read_yaml
from avmatch.core.paths import project_root


@dataclass(frozen=True)
class PipelineSpec:
    """How the runner finds and finishes a pipeline's stages."""

    package: str  # "pipelines.fingerprint": stage S is the function S of module <package>.S
    paths_class: type  # with a classmethod from_params(params, root): every file the stages read or write
    # model registry: after `register_after` succeeds, paths.<model_attr> becomes a new version of
    # the pipeline's registered encoder, with that stage's metrics and the train stage's dvc.lock hash
    model_attr: str | None = None
    register_after: str | None = None
    train_stage: str = "train"
    # scheduled re-evaluation: "stage:function" of this package, (params, paths, tracker, model_file) ->
    # flat metrics, and the metrics it watches for regressions with their better direction ("max" or "min")
    reevaluate: str | None = None
    watch: tuple[tuple[str, str], ...] = ()

    def stage_function(self, stage: str) -> Callable[..., dict]:
        try:
            module = importlib.import_module(f"{self.package}.{stage}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{self.package}.{stage}":
                raise
            raise KeyError(f"no stage '{stage}' in {self.package} (no module {self.package}.{stage})") from None
        return getattr(module, stage)

    def paths(self, params: Params, root: Path) -> Any:
        return self.paths_class.from_params(params, root)

    def reevaluate_fn(self) -> Callable | None:
        if not self.reevaluate:
            return None
        stage, _, fn = self.reevaluate.partition(":")
        return getattr(importlib.import_module(f"{self.package}.{stage}"), fn)


# Specs loaded so far, by pipeline name (tests may put their own here).
SPECS: dict[str, PipelineSpec] = {}


def pipeline_names() -> list[str]:
    """Every pipeline package (a folder of `pipelines/` with a spec.py), without importing any."""
    return sorted(p.parent.name for p in Path(__file__).parent.glob("*/spec.py"))


def pipeline_spec(pipeline: str) -> PipelineSpec:
    if pipeline not in SPECS:
        if pipeline not in pipeline_names():
            raise KeyError(f"unknown pipeline '{pipeline}'; known pipelines: {', '.join(pipeline_names())}")
        SPECS[pipeline] = importlib.import_module(f"pipelines.{pipeline}.spec").SPEC
    return SPECS[pipeline]


def dvc_stages(root: Path | None = None) -> dict[str, dict]:
    """The `stages` mapping of the project's dvc.yaml."""
    path = (root or project_root()) / "dvc.yaml"
    return (read_yaml(path.read_text()) or {}).get("stages", {})


def stage_order(pipeline: str, root: Path | None = None) -> list[str]:
    """The pipeline's stages in dvc.yaml order (dvc.yaml names them `<pipeline>_<stage>`)."""
    prefix = f"{pipeline}_"
    return [name[len(prefix):] for name in dvc_stages(root) if name.startswith(prefix)]


def stage_names(pipeline: str | None = None, root: Path | None = None) -> list[str]:
    """`pipeline.stage` names of every stage in dvc.yaml (of one pipeline, or of all)."""
    return [f"{p}.{s}" for p in ([pipeline] if pipeline else pipeline_names()) for s in stage_order(p, root)]
