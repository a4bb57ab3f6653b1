"""`avmatch metrics voiceface` on generated files: one JSON line equal to the library's numbers, a table,
and errors that name the bad file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _vf_cohort import cohort, embeddings
from typer.testing import CliRunner

from avmatch.cli import app
from avmatch.voiceface.evals import (
    EvalSizes,
    make_eval_lists,
    read_eval_lists,
    write_eval_lists,
)
from avmatch.voiceface.metrics import evaluate

runner = CliRunner()


def write_emb(path, emb: dict) -> None:
    pd.DataFrame({"track": list(emb), "vector": [v.tolist() for v in emb.values()]}).to_parquet(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vfcli")
    identities, tracks = cohort(seed=2)
    sizes = EvalSizes(verification=100, valid_verification=50, matching=80, retrieval_groups=2,
                      retrieval_group_size=8, matching_1n=20, gallery=6)
    write_eval_lists(make_eval_lists(identities, tracks, "test", 1, sizes), d / "evals")
    voice, face = embeddings(tracks, seed=9)
    write_emb(d / "voice.parquet", voice)
    write_emb(d / "face.parquet", face)
    return d, voice, face


def run(*args):
    return runner.invoke(app, ["metrics", "voiceface", *map(str, args)])


def test_json_line_equals_the_library(files):
    d, voice, face = files
    res = run("--evals", d / "evals", "--voice", d / "voice.parquet", "--face", d / "face.parquet", "--json")
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    got = json.loads(lines[0])
    want = evaluate(voice, face, read_eval_lists(d / "evals"))
    assert got["auc"] == pytest.approx(want["auc"]) and got["map_f2v"] == pytest.approx(want["map_f2v"])
    assert {int(k): v for k, v in got["1N_v2f"].items()} == pytest.approx(want["1N_v2f"])
    table = run("--evals", d / "evals", "--voice", d / "voice.parquet", "--face", d / "face.parquet",
                "--bootstrap", 20)
    assert table.exit_code == 0, table.output
    assert "auc_gn" in table.stdout and "1N_f2v N=6" in table.stdout and "[" in table.stdout


def test_errors_name_the_file(files, tmp_path):
    d, voice, _ = files
    base = ["--evals", d / "evals", "--voice", d / "voice.parquet"]
    res = run(*base, "--face", tmp_path / "nope.parquet")
    assert res.exit_code == 2 and "nope.parquet" in res.output and "does not exist" in res.output
    pd.DataFrame({"id": ["a"], "emb": [[1.0]]}).to_parquet(tmp_path / "cols.parquet")
    res = run(*base, "--face", tmp_path / "cols.parquet")
    assert res.exit_code == 2 and "cols.parquet" in res.output and "track, vector" in res.output
    pd.DataFrame({"track": ["a", "b"], "vector": [[1.0, 2.0], [1.0]]}).to_parquet(tmp_path / "dims.parquet")
    res = run(*base, "--face", tmp_path / "dims.parquet")
    assert res.exit_code == 2 and "dims.parquet" in res.output and "inconsistent" in res.output
    few = dict(list(voice.items())[:3])
    write_emb(tmp_path / "few.parquet", few)
    res = run("--evals", d / "evals", "--voice", tmp_path / "few.parquet", "--face", d / "face.parquet")
    assert res.exit_code == 2 and "has no embedding" in res.output and "test_verification" in res.output
    res = run("--evals", tmp_path / "noevals", "--voice", d / "voice.parquet", "--face", d / "face.parquet")
    assert res.exit_code == 2 and "noevals" in res.output


def test_vectors_keep_float32(files):
    from avmatch.voiceface.metrics_cli import read_embeddings

    d, voice, _ = files
    back = read_embeddings(d / "voice.parquet")
    k = next(iter(voice))
    assert back[k].dtype == np.float32 and np.array_equal(back[k], voice[k])


def test_eft_pickled_lists_need_allow_pickle(files, tmp_path):
    from _vf_cohort import eft_pickles

    d, voice, face = files
    lists = read_eval_lists(d / "evals")
    eft_pickles(tmp_path, lists)
    args = ["--evals", tmp_path, "--voice", d / "voice.parquet", "--face", d / "face.parquet", "--json"]
    refused = run(*args)
    assert refused.exit_code == 2 and "--allow-pickle" in refused.output
    res = run(*args, "--allow-pickle")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip())["auc"] == pytest.approx(evaluate(voice, face, lists)["auc"])
