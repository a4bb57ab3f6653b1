"""MLflow tracking for stage runs: one MLflow run per stage execution.

Runs are tagged with the git commit, pipeline, stage and a hash of the stage's inputs as declared
in dvc.yaml, so a run can be traced to the exact data and code that produced it. The store defaults
to `sqlite:///<repo>/mlflow.db` with artefacts in `<repo>/mlruns` (absolute paths, resolved from the
user's repository even in a temporary DVC experiment workspace).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from avmatch.config import CommonParams
from avmatch.paths import origin_repo

log = logging.getLogger(__name__)


def tracking_uri(common: CommonParams, root: Path) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if common.mlflow.tracking_uri:
        return common.mlflow.tracking_uri
    return f"sqlite:///{origin_repo(root) / 'mlflow.db'}"


def artifact_location(common: CommonParams, root: Path) -> str:
    return common.mlflow.artifact_root or (origin_repo(root) / "mlruns").as_uri()


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _md5_path(path: Path) -> str:
    h = hashlib.md5()
    if path.is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(path).as_posix().encode())
                h.update(_md5_path(p).encode())
    else:
        h.update(b"missing")
    return h.hexdigest()


def stage_inputs_hash(root: Path, dvc_stage: str) -> str:
    """md5 over the stage's `deps` in dvc.yaml (files by content, folders by their files' contents)."""
    import yaml

    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.exists():
        return "no-dvc-yaml"
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    deps = (stages.get(dvc_stage) or {}).get("deps", [])
    h = hashlib.md5()
    for dep in deps:
        h.update(dep.encode())
        h.update(_md5_path(root / dep).encode())
    return h.hexdigest()


class StageTracker:
    """What a stage function uses to log; a no-op when tracking is disabled."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        import mlflow

        flat = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and v == v}
        mlflow.log_metrics({k.replace("%", "pct"): v for k, v in flat.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active and Path(path).exists():
            import mlflow

            mlflow.log_artifact(str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        if self.active:
            import mlflow

            mlflow.log_dict(dict(data), name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.active:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})


@contextlib.contextmanager
def stage_run(common: CommonParams, root: Path, pipeline: str, stage: str, params: Mapping[str, Any],
              dvc_stage: str | None = None) -> Iterator[StageTracker]:
    """An MLflow run around one stage execution; failures mark the run FAILED and re-raise."""
    if not common.mlflow.enabled:
        yield StageTracker(None)
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri(common, root)
    mlflow.set_tracking_uri(uri)
    name = f"{common.mlflow.experiment_prefix}-{pipeline}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_location(common, root))
    tags = {
        "git_commit": git_commit(root),
        "pipeline": pipeline,
        "stage": stage,
        "dvc_stage": dvc_stage or "",
        "inputs_md5": stage_inputs_hash(root, dvc_stage) if dvc_stage else "",
        "orchestrator": os.environ.get("AVMATCH_ORCHESTRATOR", "cli"),
    }
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=tags) as run:
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):
            mlflow.log_params({k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in items[i:i + 100]})
        yield StageTracker(run.info.run_id)
