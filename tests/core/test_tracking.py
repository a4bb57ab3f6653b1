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
