"""The video-to-music pipeline on the tiny corpus, through real DVC and MLflow, then the user commands.

One temporary git+DVC copy of the project is shared by the tests of this module, which run in order:
`dvc repro vmr_evaluate` from scratch, a second `dvc repro` that must do nothing, the MLflow runs, and
`avmatch vmr add` / `avmatch vmr suggest` on the corpus's own files (with a bad file of each kind).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _e2e import BIN, _env, _run, make_repo

pytestmark = pytest.mark.slow

TINY = {
    "vmr.corpus.size": "tiny",
    # nothing here asserts that training helps (test_model_training.py does, in-process): on the tiny
    # corpus even 150 steps left the trained encoder at R@1 0.0 vs 0.17 random (12 test pairs), so the
    # run only has to train, checkpoint (twice) and hand on an encoder. 150 -> 40 steps: 21.6 -> 16.5 s CPU
    "vmr.train.max_steps": 40,
    "vmr.train.checkpoint_every": 20,
    # one process: each spawned worker pays librosa's start-up again (its beat tracker is compiled by
    # numba at import, uncached), and the other pytest worker has the second core anyway. 37 -> 26 s CPU.
    # The corpus stage keeps its two spawned workers, so the process-pool path is still run.
    "vmr.features.workers": 1,
    "vmr.evaluate.bootstrap": 200,
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("vmr_e2e") / "proj", TINY)


def test_dvc_repro_runs_the_pipeline(repo):
    _run([str(BIN / "dvc"), "repro", "vmr_evaluate"], repo, timeout=900)
    m = json.loads((repo / "metrics/vmr.json").read_text())
    assert set(m) == {"pool_size", "trained", "peer", "random"}
    assert m["pool_size"] >= 8
    for variant in ("trained", "peer", "random"):
        for d in ("v2m", "m2v"):
            vals = m[variant][d]
            assert set(vals) == {"R@1", "R@5", "R@10", "R@25", "R@50", "median_rank"}
            assert all(0.0 <= vals[f"R@{k}"] <= 1.0 for k in (1, 5, 10, 25, 50))
            assert vals["R@1"] <= vals["R@10"] <= vals["R@50"] == 1.0   # the pool is smaller than 50
    ci = json.loads((repo / "metrics/vmr_compare.json").read_text())["trained"]["v2m"]["ci"]["R@10"]
    assert ci[0] <= m["trained"]["v2m"]["R@10"] <= ci[1]
    assert (repo / "plots/vmr/recall_at_k.csv").read_text().startswith("variant,direction,k,recall")
    bad = (repo / "data/vmr/frames/bad_files.csv").read_text()
    assert "V900001.mp4" in bad and "V900002.mp4" in bad and "V900003.mp4" in bad


def test_second_repro_is_a_no_op(repo):
    out = _run([str(BIN / "dvc"), "repro", "vmr_evaluate"], repo).stdout
    assert "Running stage" not in out, out


def test_every_stage_logged_to_mlflow(repo):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("avmatch-vmr").experiment_id])
    assert {"corpus", "ingest", "frames", "audio", "features", "train", "extract", "index", "evaluate"} <= {
        r.data.tags["stage"] for r in runs}
    ev = [r for r in runs if r.data.tags["stage"] == "evaluate"][0]
    assert "v2m_R_at_10" in ev.data.metrics and "peer_m2v_R_at_10" in ev.data.metrics


def test_add_and_suggest_commands(repo):
    corpus = repo / "data/vmr/corpus"
    music = corpus / "music/test"
    (music / "broken.flac").write_bytes(b"not audio at all" * 100)
    db = repo / "data/vmr/user_db"
    p = subprocess.run([str(BIN / "avmatch"), "vmr", "add", str(music), "--db", str(db), "--encoder",
                        str(repo / "models/vmr/encoder.pt")], cwd=repo, env=_env(repo), capture_output=True, text=True)
    assert p.returncode == 1 and "broken.flac" in p.stderr, p.stderr[-2000:]
    tracks = len(list(music.glob("M*.flac")))
    assert f"{tracks} track(s) added, 1 failed" in p.stdout
    pairs = [line.split(",") for line in (corpus / "pairs.csv").read_text().splitlines()[1:]]
    test_pairs = [r for r in pairs if r[2] == "test"][:3]
    videos = [str(corpus / "videos/test" / f"{r[0]}.mp4") for r in test_pairs]
    p = subprocess.run([str(BIN / "avmatch"), "vmr", "suggest", *videos, str(corpus / "videos/test/V900002.mp4"),
                        "--db", str(db), "--top", "5"], cwd=repo, env=_env(repo), capture_output=True, text=True)
    assert p.returncode == 1 and "V900002.mp4" in p.stderr, p.stderr[-2000:]
    rows = [line.split(",") for line in p.stdout.splitlines()[1:]]
    assert p.stdout.splitlines()[0] == "video,rank,track_id,score,offset_s,path"
    assert len(rows) == 5 * len(videos)
    scores = [float(r[3]) for r in rows[:5]]
    assert scores == sorted(scores, reverse=True)


def test_encoder_registered_and_reevaluated_with_the_same_numbers(repo, monkeypatch):
    """The evaluate stage registers the encoder; re-evaluating that version on the same test pairs gives the
    pipeline's own recalls (same model, same features)."""
    from mlflow.tracking import MlflowClient

    from avmatch.core.config import load_params
    from pipelines.reevaluation import reevaluate_pipeline

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    assert client.search_model_versions("name='avmatch-vmr-encoder'")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = reevaluate_pipeline("vmr", load_params(repo / "params.yaml"), repo)
    trained = json.loads((repo / "metrics/vmr.json").read_text())["trained"]
    for d in ("v2m", "m2v"):
        for k in ("R@1", "R@10", "median_rank"):
            assert result["metrics"][f"{d}_{k}".replace("@", "_at_")] == pytest.approx(trained[d][k], abs=1e-6)
