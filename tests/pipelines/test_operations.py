"""Operations pieces that need no trained model: typed deployment parameters, retry policy,
error messages, regression rule, run comparison, parameter validation of the orchestration section."""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path

import pytest

from avmatch.core.config import (
    ConfigError,
    RetryParams,
    load_params,
    overrides_from_model,
    partial_model,
)
from avmatch.core.failures import StageError, failing_input, is_transient
from avmatch.fingerprint.params import FingerprintParams
from pipelines.reevaluation import regressions

ROOT = Path(__file__).resolve().parents[2]


def test_partial_model_turns_filled_fields_into_dotted_overrides():
    form = partial_model(FingerprintParams, "Form")
    filled = form.model_validate({"train": {"max_steps": 5}, "search": {"score": "similarity"}})
    assert overrides_from_model(filled, "fingerprint") == {"fingerprint.train.max_steps": 5,
                                                           "fingerprint.search.score": "similarity"}
    assert overrides_from_model(form(), "fingerprint") == {}
    with pytest.raises(ValueError, match="max_stepz"):
        form.model_validate({"train": {"max_stepz": 5}})
    with pytest.raises(ValueError, match="max_steps"):
        form.model_validate({"train": {"max_steps": "many"}})


def test_flow_parameter_schema_is_the_params_section():
    from flows.fingerprint import fingerprint_flow

    schema = fingerprint_flow.parameters.model_dump()
    assert {"fingerprint", "overrides", "stages", "root"} <= set(schema["properties"])
    train = schema["definitions"]["FingerprintOverrides_train"]["properties"]
    assert {"max_steps", "max_minutes", "lr"} <= set(train)


@pytest.mark.parametrize("exc,transient", [
    (OSError(errno.EIO, "Input/output error"), True),
    (TimeoutError("read timed out"), True),
    (ConnectionResetError(), True),
    (RuntimeError("(sqlite3.OperationalError) database is locked"), True),
    (FileNotFoundError(errno.ENOENT, "No such file", "x.wav"), False),
    (ValueError("bad value"), False),
    (KeyError("stage"), False),
])
def test_transient_failures_are_told_apart(exc, transient):
    assert is_transient(exc) is transient
    wrapped = StageError("fingerprint.extract", "x.wav", exc)
    assert is_transient(wrapped) is transient
    assert wrapped.stage == "fingerprint.extract" and "x.wav" in str(wrapped)


def test_failing_input_prefers_the_file_the_error_names():
    assert failing_input(FileNotFoundError(2, "No such file", "/d/a.wav"), "deps") == "/d/a.wav"
    assert failing_input(ValueError("x"), "data/fingerprint/corpus") == "data/fingerprint/corpus"


def test_regression_rule_uses_direction_and_tolerance():
    watch = (("hit", "max"), ("fmr", "min"))
    assert regressions({"hit": 0.90, "fmr": 0.05}, {"hit": 0.91, "fmr": 0.05}, watch, 0.02) == []
    found = regressions({"hit": 0.80, "fmr": 0.10}, {"hit": 0.91, "fmr": 0.05}, watch, 0.02)
    assert len(found) == 2 and found[0].startswith("hit 0.9100 -> 0.8000") and found[1].startswith("fmr")
    assert regressions({"hit": 0.5}, {}, watch, 0.02) == []   # nothing to compare with: no regression


def test_orchestration_params_are_validated(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    with pytest.raises(ConfigError, match="orchestration.reevaluate.cron"):
        load_params(p, {"orchestration.reevaluate.cron": "every monday"})
    with pytest.raises(ConfigError, match="orchestration.dask.n_workers"):
        load_params(p, {"orchestration.dask.n_workers": 0})
    with pytest.raises(ConfigError, match="unknown key 'orchestration.retries.attemps'"):
        load_params(p, {"orchestration.retries.attemps": 3})


@pytest.fixture
def flaky_project(tmp_path, monkeypatch):
    """A project whose fingerprint pipeline has the two test stages above (real runner, real Prefect)."""
    import flaky_pipeline

    from pipelines import registry

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    spec = dataclasses.replace(registry.pipeline_spec("fingerprint"), package="flaky_pipeline", model_attr=None)
    monkeypatch.setitem(registry.SPECS, "fingerprint", spec)
    flaky_pipeline.CALLS.clear()
    return tmp_path


def test_transient_failure_is_retried_and_permanent_one_is_not(prefect_api, flaky_project):
    import flaky_pipeline
    from prefect import flow

    from tasks.stages import stage_task

    run = stage_task(RetryParams(attempts=2, backoff_s=0.1))
    off = {"common.mlflow.enabled": False}

    @flow
    def one(name: str):
        return run(name, off, None, str(flaky_project))

    assert one("fingerprint.flaky") == {"attempt": 2, "stage_seconds": pytest.approx(0, abs=5)}
    state = one("fingerprint.broken", return_state=True)
    assert state.is_failed()
    assert flaky_pipeline.CALLS["broken"] == 1, "a missing input is not retried"
    with pytest.raises(StageError, match=r"stage fingerprint.broken failed on input .*missing.parquet"):
        state.result()


def test_runs_compare_lines_up_params_and_metrics(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from avmatch.core.runs_compare import compare_runs, find_runs, plot_comparison

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("avmatch-x", artifact_location=(tmp_path / "mlruns").as_uri())
    ids = []
    for top_k, hit in ((50, 0.9), (5, 0.7)):
        with mlflow.start_run(experiment_id=exp, tags={"stage": "evaluate", "orchestrator": "cli"}) as r:
            mlflow.log_params({"x.search.top_k": top_k, "x.seed": 1})
            mlflow.log_metrics({"track_hit_rate.3s": hit, "n_queries": 10})
            ids.append(r.info.run_id)
    client = MlflowClient(uri)
    assert find_runs(client, "avmatch-x", "evaluate", 5) == ids[::-1]
    cmp = compare_runs(client, ids)
    assert list(cmp.params.index) == ["x.search.top_k"]          # the same seed is not a difference
    assert cmp.metrics.loc["track_hit_rate.3s"].tolist() == [0.9, 0.7]
    text = cmp.to_text()
    assert "x.search.top_k" in text and "0.9000" in text and "0.7000" in text
    assert plot_comparison(cmp, tmp_path / "cmp.png").stat().st_size > 1000
    with pytest.raises(LookupError, match="no MLflow experiment"):
        find_runs(client, "avmatch-none", None, 2)


def test_overrides_reach_params_yaml_through_dvcs_set_param_as_given(tmp_path):
    """A run with overrides is `dvc exp run -S key=value`: every kind of value the UI form sends must come back
    out of DVC's (Hydra's) parser as the value the form held, and as our own loader applies it."""
    from dvc.utils.hydra import apply_overrides

    from avmatch.core.config import load_params
    from flows.dvc_exp import experiment_name, set_params

    overrides = {"fingerprint.search.top_k": 7, "fingerprint.search.score": "similarity",
                 "fingerprint.evaluate.compare_untrained": False, "fingerprint.evaluate.target_false_match_rate": 0.1,
                 "fingerprint.corpus.degradations": ["noise", "phone_codec", "clean"],
                 "fingerprint.corpus.query_lengths_s": [1, 2.5, 10], "common.device": "cpu"}
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    apply_overrides(p, set_params(overrides))
    through_dvc = load_params(p)
    direct = load_params(ROOT / "params.yaml", overrides)
    assert through_dvc.model_dump() == direct.model_dump()
    assert through_dvc.fingerprint.corpus.degradations == ["noise", "phone_codec", "clean"]
    name = experiment_name("fingerprint", overrides)
    assert name.startswith("fingerprint-") and name.split("-")[1] == experiment_name("fingerprint", dict(overrides)).split("-")[1]
    assert experiment_name("fingerprint", {"fingerprint.search.top_k": 8}).split("-")[1] != name.split("-")[1]
