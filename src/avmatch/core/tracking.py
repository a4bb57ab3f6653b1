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

from avmatch.core.config import CommonParams, read_yaml
from avmatch.core.paths import origin_repo
from avmatch.core.sqlite_store import retry_locked, store_setup_lock

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


def stage_deps(root: Path, dvc_stage: str) -> list[str] | None:
    """The stage's `deps` as dvc.yaml lists them; None without a dvc.yaml."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.exists():
        return None
    stages = (read_yaml(dvc_yaml.read_text()) or {}).get("stages", {})
    return list((stages.get(dvc_stage) or {}).get("deps", []))


def dvc_lock_entry(root: Path, dvc_stage: str) -> dict | None:
    """The stage's record in dvc.lock (deps/params/outs with DVC's hashes), None if not locked yet."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    return ((read_yaml(lock.read_text()) or {}).get("stages") or {}).get(dvc_stage)


def dvc_lock_records_file(root: Path, entry: dict, file: Path, file_md5: str) -> bool:
    """Whether a dvc.lock stage record lists `file` with content `file_md5` among its outs.

    A file out carries its md5 directly; a folder out carries `<md5>.dir`, whose listing (relpath,
    md5 per file) DVC keeps in its cache.
    """
    import json as _json

    rel = file.resolve().relative_to(root.resolve()).as_posix() if file.is_absolute() else file.as_posix()
    for out in entry.get("outs", []):
        path, md5 = out.get("path", ""), out.get("md5", "")
        if path == rel:
            return md5 == file_md5
        if md5.endswith(".dir") and rel.startswith(path.rstrip("/") + "/"):
            listing = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
            if not listing.exists():
                return False
            inner = rel[len(path.rstrip("/")) + 1:]
            return any(e.get("relpath") == inner and e.get("md5") == file_md5
                       for e in _json.loads(listing.read_text()))
    return False


def stage_inputs_hash(root: Path, dvc_stage: str) -> str:
    """md5 over the stage's `deps` in dvc.yaml (files by content, folders by their files' contents)."""
    deps = stage_deps(root, dvc_stage)
    if deps is None:
        return "no-dvc-yaml"
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
        retry_locked(lambda: mlflow.log_metrics({k.replace("%", "pct"): v for k, v in flat.items()}, step=step))

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

            retry_locked(lambda: mlflow.set_tags({k: str(v) for k, v in tags.items()}))

    def register_model(self, model_file: Path, name: str, tags: Mapping[str, Any],
                       description: str = "") -> str | None:
        """Log `model_file` under `model/` of this run and register it as a new version of `name`.

        The version's source is this run's artefact, so the registry entry carries the run's
        params and metrics; `tags` add what the run cannot (e.g. the dvc.lock hash of the inputs).
        Returns the version number.
        """
        if not self.active:
            return None
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        mlflow.log_artifact(str(model_file), "model")
        client = MlflowClient()
        try:
            client.create_registered_model(name, description="avmatch encoder; versions come from evaluate runs")
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        source = mlflow.get_artifact_uri("model")
        version = client.create_model_version(name, source=source, run_id=self.run_id,
                                              tags={k: str(v) for k, v in tags.items()}, description=description)
        return str(version.version)


def model_name(common: CommonParams, pipeline: str) -> str:
    """Registered-model name of a pipeline's encoder (one name per pipeline and experiment prefix)."""
    return f"{common.mlflow.experiment_prefix}-{pipeline}-encoder"


def latest_model_version(common: CommonParams, root: Path, pipeline: str):
    """The newest registered version of the pipeline's encoder, or None when none is registered."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri(common, root))
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{model_name(common, pipeline)}'")
    except Exception as exc:  # no registry table yet on a fresh store
        log.debug("no model versions: %s", exc)
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def download_model_version(version, dest: Path) -> Path:
    """Fetch a registered version's files into `dest`; returns the folder holding them."""
    import mlflow

    dest.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dest)))


@contextlib.contextmanager
def stage_run(common: CommonParams, root: Path, pipeline: str, stage: str, params: Mapping[str, Any],
              dvc_stage: str | None = None, orchestrator: str | None = None) -> Iterator[StageTracker]:
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
    with store_setup_lock(uri):   # stages of two runs may open a new store at once: one creates it
        client = MlflowClient(uri)
        exp = retry_locked(lambda: client.get_experiment_by_name(name), what=stage)
        exp_id = exp.experiment_id if exp else retry_locked(
            lambda: client.create_experiment(name, artifact_location=artifact_location(common, root)), what=stage)
    tags = {
        "git_commit": git_commit(root),
        "pipeline": pipeline,
        "stage": stage,
        "dvc_stage": dvc_stage or "",
        "inputs_md5": stage_inputs_hash(root, dvc_stage) if dvc_stage else "",
        "orchestrator": orchestrator or os.environ.get("AVMATCH_ORCHESTRATOR", "cli"),
        # `dvc exp run` names the experiment in the stage's environment: the run is found by that name
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", ""),
    }
    run = retry_locked(lambda: mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=tags), what=stage)
    with run:
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):
            chunk = {k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in items[i:i + 100]}
            retry_locked(lambda chunk=chunk: mlflow.log_params(chunk), what=stage)
        yield StageTracker(run.info.run_id)
