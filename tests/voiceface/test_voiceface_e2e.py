"""The voice-face pipeline on the tiny SIMULATED cohort, through real DVC and MLflow, then the Prefect flow.

One temporary git+DVC copy of the project is shared by the tests of this module, which run in order:
`dvc repro voiceface_evaluate` from scratch, a second `dvc repro` that must do nothing, the MLflow runs, and
the flow module with its parameter form.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _e2e import BIN, _env, _run, make_repo

pytestmark = pytest.mark.slow

TINY = {
    "voiceface.corpus.size": "tiny",
    "voiceface.model.d": 64,
    "voiceface.train.max_steps": 40,
    "voiceface.train.batch_size": 16,
    "voiceface.train.big_batch": 32,
    "voiceface.train.eval_every": 20,
    "voiceface.train.checkpoint_every": 20,
    "voiceface.experts.voice": ["v_sim_ecapa", "v_sim_resemblyzer"],
    "voiceface.experts.face": ["f_sim_r2plus1d", "f_sim_swin"],
    "voiceface.evaluate.bootstrap": 50,
    "voiceface.evaluate.sizes": {"verification": 300, "valid_verification": 200, "matching": 200,
                                 "matching_1n": 200, "retrieval_groups": 3, "retrieval_group_size": 10},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("vf_e2e") / "proj", TINY)


def test_dvc_repro_runs_the_pipeline(repo):
    _run([str(BIN / "dvc"), "repro", "voiceface_evaluate"], repo, timeout=600)
    m = json.loads((repo / "metrics/voiceface.json").read_text())
    assert m["corpus"] == "simulated expert embeddings (not real data)"
    assert m["model"] == "fusion" and m["sbc"] == "sbc"
    assert set(m["variants"]) == {"fusion", "fusion_sbc_off", "concat", "single"}
    for name, res in m["variants"].items():
        for k in ("auc", "auc_g", "auc_n", "auc_gn", "ms_v2f", "ms_f2v", "map_v2f", "map_f2v"):
            assert 0 <= res[k] <= 100, (name, k)
        assert set(res["1N_v2f"]) == {str(n) for n in range(2, 11)}
    assert m["auc"] > 55   # trained 40 steps on 40 identities: well above chance, far from perfect
    lo, hi = m["ci"]["auc"]
    assert lo <= m["auc"] <= hi
    assert set(m["sbc_comparison"]) >= {"on", "off", "noisy_tracks"} and m["sbc_comparison"]["noisy_tracks"] > 0
    assert m["best_single"].count("+") == 1
    diffs = m["paired_differences"]
    assert set(diffs) == {"fusion_sbc_off", "concat", "single"}
    for rows in diffs.values():
        lo, hi = rows["auc"]["ci"]
        assert lo <= rows["auc"]["diff"] <= hi and rows["auc"]["a"] == pytest.approx(m["auc"])
    assert (repo / "plots/voiceface/roc.csv").read_text().startswith("model,list,fpr,tpr")
    assert (repo / "plots/voiceface/roc.png").stat().st_size > 1000
    assert (repo / "plots/voiceface/one_to_n.png").stat().st_size > 1000
    shards = list((repo / "data/voiceface/embeddings/main/voice").glob("part-*.parquet"))
    assert shards
    train = json.loads((repo / "metrics/voiceface_train.json").read_text())
    assert train["simulated"] == 1 and train["models"]["main"]["steps"] == 40


def test_second_repro_is_a_no_op(repo):
    out = _run([str(BIN / "dvc"), "repro", "voiceface_evaluate"], repo).stdout
    assert "Running stage" not in out, out


def test_every_stage_logged_to_mlflow(repo):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("avmatch-voiceface").experiment_id])
    assert {"corpus", "ingest", "experts", "train", "extract", "evaluate"} <= {r.data.tags["stage"] for r in runs}
    ev = [r for r in runs if r.data.tags["stage"] == "evaluate"][0]
    assert {"auc", "auc_g", "concat_auc", "single_auc", "fusion_sbc_off_auc"} <= set(ev.data.metrics)
    assert ev.data.tags["corpus"] == "simulated expert embeddings (not real data)"


def test_flow_is_reachable(repo):
    code = ("import flows.voiceface as f; from avmatch.voiceface.params import VoicefaceParams; "
            "print(f.voiceface_flow.name); print(sorted(f.VoicefaceOverrides.model_fields))")
    p = subprocess.run([sys.executable, "-c", code], cwd=repo, env={**_env(repo), "PYTHONPATH": f"{repo}/src:{repo}"},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.splitlines()[0] == "voiceface"
    assert "train" in p.stdout and "corpus" in p.stdout


def test_prefect_plain_run_goes_through_dvc(repo, prefect_api, monkeypatch):
    """A Prefect run without overrides is DVC's: up-to-date stages are skipped (Cached), a changed param
    re-runs only the stages that read it, dvc.lock is updated, and the encoder it registers says so."""
    import time

    import yaml
    from mlflow.tracking import MlflowClient

    from flows.voiceface import voiceface_flow

    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", _env(repo)["PATH"])     # DVC runs each stage's `python -m pipelines ...`
    for key in ("MLFLOW_TRACKING_URI", "AVMATCH_ROOT", "AVMATCH_ORCHESTRATOR"):
        monkeypatch.delenv(key, raising=False)
    t0 = time.monotonic()
    skipped = voiceface_flow(root=str(repo))
    took = time.monotonic() - t0
    assert {"corpus", "ingest", "experts", "train", "extract", "evaluate"} <= set(skipped), skipped
    assert not [s for s, r in skipped.items() if r["ran"]], skipped
    assert took < 60, f"an up-to-date plain run took {took:.0f} s"

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["voiceface"]["evaluate"]["bootstrap"] = 40            # read by the evaluate stage only
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = voiceface_flow(root=str(repo))
    assert [s for s, r in rerun.items() if r["ran"]] == ["evaluate"], rerun
    status = _run([str(BIN / "dvc"), "status", "voiceface_evaluate"], repo).stdout
    assert "up to date" in status.lower(), status             # dvc.lock was updated as `dvc repro` would
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["voiceface_evaluate"]
    assert lock["params"]["params.yaml"]["voiceface.evaluate.bootstrap"] == 40

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("avmatch-voiceface")
    ev = client.search_runs([exp.experiment_id], "tags.stage = 'evaluate'", order_by=["attributes.start_time DESC"])[0]
    assert ev.data.tags["orchestrator"] == "prefect" and ev.data.params["voiceface.evaluate.bootstrap"] == "40"
    versions = client.search_model_versions("name='avmatch-voiceface-encoder'")
    newest = max(versions, key=lambda v: int(v.version))
    assert newest.run_id == ev.info.run_id and newest.tags["dvc_lock_matches"] == "True", newest.tags
