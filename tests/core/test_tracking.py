import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from avmatch.core.config import CommonParams, MlflowParams
from avmatch.core.paths import origin_repo
from avmatch.core.tracking import stage_run, tracking_uri


def test_stage_run_logs_params_metrics_tags_to_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages:\n  fp_x:\n    cmd: x\n    deps: [in.txt]\n")
    (tmp_path / "in.txt").write_text("hello")
    common = CommonParams()
    with stage_run(common, tmp_path, "fingerprint", "extract", {"fingerprint": {"a": 1, "b": {"c": [1, 2]}}},
                   dvc_stage="fp_x") as t:
        t.log_metrics({"hit": {"1s": 0.5, "2s": 0.75}, "n": 3})
        (tmp_path / "note.txt").write_text("artefact")
        t.log_artifact(tmp_path / "note.txt")
    uri = tracking_uri(common, tmp_path)
    assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("avmatch-fingerprint")
    assert exp.artifact_location.startswith("file://") and str(tmp_path) in exp.artifact_location
    run = client.search_runs([exp.experiment_id])[0]
    assert run.data.params["fingerprint.a"] == "1" and run.data.params["fingerprint.b.c"] == "[1, 2]"
    assert run.data.metrics["hit.1s"] == 0.5 and run.data.metrics["n"] == 3
    assert run.data.tags["pipeline"] == "fingerprint" and run.data.tags["stage"] == "extract"
    assert len(run.data.tags["inputs_md5"]) == 32 and run.data.tags["git_commit"]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]


def test_failed_stage_marks_run_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError):
        with stage_run(CommonParams(), tmp_path, "fingerprint", "train", {}):
            raise RuntimeError("boom")
    client = MlflowClient(tracking_uri(CommonParams(), tmp_path))
    run = client.search_runs([client.get_experiment_by_name("avmatch-fingerprint").experiment_id])[0]
    assert run.info.status == "FAILED"


def test_disabled_tracking_writes_nothing(tmp_path):
    with stage_run(CommonParams(mlflow=MlflowParams(enabled=False)), tmp_path, "p", "s", {}) as t:
        t.log_metrics({"a": 1})
    assert not (tmp_path / "mlflow.db").exists()


def test_temporary_experiment_workspace_logs_to_the_user_repo():
    assert origin_repo(Path("/home/u/proj/.dvc/tmp/exps/tmpab12")) == Path("/home/u/proj")
    assert origin_repo(Path("/home/u/proj")) == Path("/home/u/proj")


def _stage_in_own_process(root: str, k: int) -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with stage_run(CommonParams(), Path(root), "fingerprint", f"stage{k}", {"fingerprint": {"k": k}}) as t:
        for step in range(5):
            t.log_metrics({"loss": 1.0 / (step + 1), "k": k}, step=step)


def test_concurrent_stage_runs_on_a_new_sqlite_store_all_land(tmp_path, monkeypatch):
    """Three stage processes open a store that does not exist yet, at once: one creates it (the others
    wait on the lock beside it), WAL is on, and every run with its params and metrics is recorded. (Three,
    not four: each pays ~7 s of CPU importing MLflow and its SQLAlchemy store, and two waiting on the
    one that creates it are already the race.)"""
    import multiprocessing as mp
    import sqlite3

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = mp.get_context("spawn")   # fresh interpreters, like real stage processes (a fork would copy this
                                    # worker's MLflow and SQLAlchemy state from earlier tests)
    procs = [ctx.Process(target=_stage_in_own_process, args=(str(tmp_path), k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    client = MlflowClient(tracking_uri(CommonParams(), tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("avmatch-fingerprint").experiment_id])
    assert sorted(r.data.params["fingerprint.k"] for r in runs) == ["0", "1", "2"]
    assert all(len(client.get_metric_history(r.info.run_id, "loss")) == 5 for r in runs)
    mode = sqlite3.connect(tmp_path / "mlflow.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_lock_contention_is_retried_and_other_errors_are_not():
    from avmatch.core.sqlite_store import retry_locked

    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "done"

    assert retry_locked(flaky, first_delay_s=0.01) == "done" and len(calls) == 3
    with pytest.raises(ValueError):
        retry_locked(lambda: (_ for _ in ()).throw(ValueError("bad parameter")), first_delay_s=0.01)
