"""The copy detection pipeline on the tiny corpus, through real DVC, MLflow and Prefect.

One temporary git+DVC copy of the project is shared by the tests of this module, which run in order:
`dvc repro copydetect_evaluate` from scratch, the metric commands on its outputs, the MLflow runs, the
Prefect flow for the recall stage and the user add / query commands.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from _e2e import BIN, _run, make_repo

pytestmark = pytest.mark.slow

TINY = {
    "copydetect.corpus.size": "tiny",
    # 100 steps already clear the untrained encoder (descriptor + matching µAP, the better of normalised/raw:
    # 1.413 at 100 steps, 1.293 at 200, untrained 1.177; measured 2026-12-02)
    "copydetect.train.max_steps": 100,
    "copydetect.train.checkpoint_every": 50,
    # the query crop views run in the localise stage, the user query and the re-evaluation (their numbers must
    # agree); 2 x 2 crops instead of the default 3 x 3 keep that check and halve its cost
    "copydetect.verify.views_grid": 2,
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("cd_e2e") / "proj", TINY)


def test_dvc_repro_runs_the_pipeline_and_training_helps(repo):
    _run([str(BIN / "dvc"), "repro", "copydetect_evaluate"], repo, timeout=600)
    m = json.loads((repo / "metrics/copydetect.json").read_text())
    # the tiny corpus has a noise set and β > 0: normalisation ran, and the metrics say so
    assert m.pop("score_normalisation").startswith("on: beta"), m
    assert m.pop("noise_videos") > 0 and m.pop("noise_frames") >= 1
    # the default descriptor: the encoder's 128 dimensions + DCT/colour's 135, and the normalisation's extra
    # dimension is part of the export
    assert m.pop("descriptor") == "trained_dct (dct_weight 0.5, mirror-averaged, whitened (power 0.5, shrink 0.1))"
    # the whitening was fitted by the extract stage on the references + noise set, and the database keeps it
    assert (repo / "data/copydetect/descriptors/whitening.npz").exists()
    assert m.pop("descriptor_dim") == 128 + 135 + 1
    # params.yaml's copydetect.verify: the stored matches are verified or not, and the metrics say which
    assert m.pop("verification") == "on (min_inliers 5, bonus 1, refine on)"
    # the pipeline's database records its reference files, so `copydetect query` can verify against them
    from avmatch.copydetect.database import CopyDB

    db = CopyDB.load(repo / "data/copydetect/db").settings
    refs = sorted(p.stem for p in (repo / "data/copydetect/corpus/reference").glob("*.mp4"))
    assert sorted(db["ref_sources"]) == refs and all(Path(v["path"]).is_file() for v in db["ref_sources"].values())
    assert set(m) == {"descriptor_uap", "matching_uap", "pairwise_uap"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    cmp = json.loads((repo / "metrics/copydetect_compare.json").read_text())
    # the pipeline's descriptor, the trained encoder alone, the training-free baselines, the untrained encoder
    assert set(cmp) == {"trained_dct", "trained", "phash", "dct_colour", "untrained"}
    assert {k: cmp["trained_dct"]["main"][k] for k in ("descriptor_uap", "matching_uap", "pairwise_uap")} == m

    def quality(variant: str) -> float:
        # the better of the normalised / raw runs, both tracks: what the variant can do on this corpus
        return max(v["descriptor_uap"] + v["matching_uap"] for v in (cmp[variant]["normalised"], cmp[variant]["raw"]))

    assert quality("trained") > quality("untrained"), cmp
    # β of the normalisation chosen on half of the queries, judged on the other half (both with and without)
    val = cmp["trained_dct"]["beta_by_validation"]
    assert val["chosen_beta"] > 0 and val["val_descriptor_uap"][f"beta_{val['chosen_beta']:g}"] == max(
        v for k, v in val["val_descriptor_uap"].items() if k != "beta_0")
    for label in ("test_raw", "test_normalised"):
        assert set(val[label]) == set(m) and all(0.0 <= v <= 1.0 for v in val[label].values()), val
    assert json.loads((repo / "metrics/copydetect_baseline.json").read_text()) == cmp["phash"]["main"]
    header = (repo / "results/copydetect/matches.csv").read_text().splitlines()[0]
    assert header == "query_id,ref_id,query_start,query_end,ref_start,ref_end,score"
    for png in ("pr_matching.png", "pr_descriptor.png"):
        assert (repo / "results/copydetect" / png).stat().st_size > 0
    # bad inputs were reported with a reason and did not stop the run
    bad = list(csv.DictReader(open(repo / "data/copydetect/frames/bad_files.csv")))
    reasons = {Path(r["path"]).name: r["reason"] for r in bad}
    assert "empty" in reasons["Q900001.mp4"] and "no video stream" in reasons["Q900003.mp4"]
    assert "not a readable media file" in reasons["Q900002.mp4"]


def test_metric_commands_reproduce_the_pipeline_numbers(repo):
    gt = repo / "data/copydetect/corpus/matching_ground_truth.csv"
    out = _run([str(BIN / "avmatch"), "metrics", "vsc-matching", "--gt", str(gt), "--pred",
                str(repo / "results/copydetect/matches.csv"), "--json"], repo).stdout
    m = json.loads((repo / "metrics/copydetect.json").read_text())
    got = json.loads(out)
    assert got["segment_uap"] == pytest.approx(m["matching_uap"])
    assert got["pairwise_uap"] == pytest.approx(m["pairwise_uap"])
    out = _run([str(BIN / "avmatch"), "metrics", "vsc-descriptor", "--gt", str(gt), "--query",
                str(repo / "data/copydetect/export/queries.npz"), "--ref", str(repo / "data/copydetect/export/refs.npz"),
                "--json"], repo).stdout
    # the exported npz are exactly the descriptors the reported descriptor µAP was computed on
    assert json.loads(out)["descriptor_uap"] == pytest.approx(m["descriptor_uap"], abs=1e-9)
    from avmatch.copydetect.vsc_npz import read_vsc_npz

    assert read_vsc_npz(repo / "data/copydetect/export/queries.npz")[0].features.shape[1] == m["descriptor_dim"]


def test_every_stage_logged_to_mlflow(repo):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("avmatch-copydetect")
    runs = client.search_runs([exp.experiment_id])
    assert {"corpus", "ingest", "frames", "train", "extract", "candidates", "localise", "evaluate"} <= {
        r.data.tags["stage"] for r in runs}
    ev = [r for r in runs if r.data.tags["stage"] == "evaluate"][0]
    assert "matching_uap" in ev.data.metrics and "phash_normalised_matching_uap" in ev.data.metrics
    assert ev.data.params["copydetect.corpus.size"] == "tiny"
    train = [r for r in runs if r.data.tags["stage"] == "train"][0]
    assert len(client.get_metric_history(train.info.run_id, "loss")) >= 2


def test_prefect_flow_runs_the_recall_stage(repo, monkeypatch, prefect_api):
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sys.path.insert(0, str(repo))
    try:
        from flows.copydetect import copydetect_flow

        results = copydetect_flow(overrides={"copydetect.candidates.k": 5}, stages=["candidates"], root=str(repo))
    finally:
        sys.path.remove(str(repo))
    assert results["candidates"]["ran"] and results["candidates"]["pairs"] > 0
    # a DVC experiment: what does not read candidates.k is restored (extract reads it: the database it writes
    # keeps the recall settings), so training and everything before it did not run again
    assert {s for s, r in results.items() if r["ran"]} == {"extract", "candidates"}, results
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("avmatch-copydetect")
    runs = client.search_runs([exp.experiment_id], "tags.orchestrator = 'prefect'")
    assert sorted(r.data.tags["stage"] for r in runs) == ["candidates", "extract"]   # the two stages that ran
    assert {r.data.params["copydetect.candidates.k"] for r in runs} == {"5"}


def test_add_and_query_commands_on_videos_outside_the_project_from_another_folder(repo, tmp_path):
    """A user's database of the reference videos copied elsewhere, built with the project's trained encoder
    (found through AVMATCH_ROOT) and queried from a third folder with every query video, reproduces the
    pipeline's matching µAPs: same encoder, so the pipeline database's settings and noise set are used."""
    import shutil
    import subprocess

    from _e2e import _env

    from avmatch.copydetect.metrics import matching_metrics, read_matches

    mine = tmp_path / "my footage"
    shutil.copytree(repo / "data/copydetect/corpus/reference", mine)
    work = tmp_path / "work"
    work.mkdir()
    env = {**_env(repo), "AVMATCH_ROOT": str(repo)}

    def avmatch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "avmatch"), "copydetect", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)

    p = avmatch("add", str(mine), "--db", "db")
    assert p.returncode == 0, p.stderr
    assert "data/copydetect/db" in p.stderr and "OFF" not in p.stderr
    # the whole query folder, bad files included: each is named with its reason, the rest answered, exit 1
    p = avmatch("query", str(repo / "data/copydetect/corpus/query"), "--db", "db", "--out", "matches.csv")
    assert p.returncode == 1 and "Q900003.mp4" in p.stderr and "no video stream" in p.stderr, p.stderr
    assert "copydetect query" in p.stderr
    header = (work / "matches.csv").read_text().splitlines()[0]
    assert header == "query_id,ref_id,query_start,query_end,ref_start,ref_end,score"
    got = matching_metrics(read_matches(repo / "data/copydetect/corpus/matching_ground_truth.csv", is_gt=True),
                           read_matches(work / "matches.csv"))
    m = json.loads((repo / "metrics/copydetect.json").read_text())
    assert got["segment"].ap == pytest.approx(m["matching_uap"], abs=1e-9)
    assert got["pairwise"].ap == pytest.approx(m["pairwise_uap"], abs=1e-9)


def test_encoder_registered_and_reevaluated_with_the_same_numbers(repo, monkeypatch):
    """The evaluate stage registers the descriptor; re-evaluating that version on the same corpus gives
    the pipeline's own numbers (same model, data, recall and localisation)."""
    from mlflow.tracking import MlflowClient

    from avmatch.core.config import load_params
    from pipelines.reevaluation import reevaluate_pipeline

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    versions = client.search_model_versions("name='avmatch-copydetect-encoder'")
    assert versions and versions[0].tags["dvc_lock_matches"] == "True"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = reevaluate_pipeline("copydetect", load_params(repo / "params.yaml"), repo)
    pipeline = json.loads((repo / "metrics/copydetect.json").read_text())
    for k in ("descriptor_uap", "matching_uap", "pairwise_uap"):
        assert result["metrics"][k] == pytest.approx(pipeline[k], abs=1e-4), k
