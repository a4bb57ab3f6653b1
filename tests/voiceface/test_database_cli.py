"""`avmatch voiceface enrol / match` on real packaged photos and speech: bad files named with a reason
while the others are enrolled (exit 1), both directions, JSON output, and the refusals: a model trained
on simulated expert embeddings, or on experts this database does not compute.

The model here is an untrained fusion model over the real experts (the pipeline trains the real one):
these tests check the database and the command, not the quality of the ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avmatch.cli import app
from avmatch.voiceface.model import VoiceFacePair, save_pair
from tests.voiceface._vf_material import face_photos, speech

REAL = {"voice_experts": [("v_resemblyzer", 256), ("v_mfcc", 160)],
        "face_experts": [("f_dlib", 128), ("f_landmarks", 136)], "d": 32, "feedforward": 32}


def _model(path, meta, config=REAL):
    torch.manual_seed(0)
    save_pair(path, VoiceFacePair({"kind": "fusion", **config}, meta))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    photos, voices = face_photos(), speech(per_speaker=1, speakers=("allison", "june"))
    d = tmp_path_factory.mktemp("media")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    return photos, voices, d


def test_enrol_faces_match_a_voice_and_the_reverse(tmp_path, media):
    photos, voices, d = media
    model = _model(tmp_path / "model.pt", {"simulated": False})
    db = tmp_path / "db"
    run = CliRunner().invoke
    r = run(app, ["voiceface", "enrol", str(photos["obama"]), str(photos["astronaut"]), str(photos["coffee"]),
                  str(d / "broken.jpg"), "--db", str(db), "--model", str(model)])
    assert r.exit_code == 1, r.output
    assert "coffee.png: f_dlib: no face found in 1 frame" in r.stderr
    assert "broken.jpg" in r.stderr and "not a readable image" in r.stderr
    assert "2 face(s) enrolled, 2 failed" in r.stdout

    r = run(app, ["voiceface", "match", str(voices["allison"][0]), "--db", str(db), "--top", "5"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "query,rank,item,score,path" and len(lines) == 3
    assert {ln.split(",")[2].rsplit("/", 1)[-1] for ln in lines[1:]} == {"obama", "astronaut"}
    scores = [float(ln.split(",")[3]) for ln in lines[1:]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)

    r = run(app, ["voiceface", "enrol", "--modality", "voice", str(voices["allison"][0]), str(voices["june"][0]),
                  "--db", str(db)])
    assert r.exit_code == 0, r.output
    r = run(app, ["voiceface", "match", "--modality", "face", str(photos["obama"]), str(d / "broken.jpg"),
                  "--db", str(db), "--json"])
    assert r.exit_code == 1 and "broken.jpg" in r.stderr
    out = json.loads(r.stdout.strip().splitlines()[0])
    assert out["modality"] == "face" and len(out["matches"]) == 2
    assert len({m["item"] for m in out["matches"]}) == 2   # equal file names in two folders: two items

    # the database keeps each item's expert vectors and its fused embedding
    from avmatch.voiceface.database import VoiceFaceDB

    items = VoiceFaceDB.load(db).items
    faces = items[items.modality == "face"]
    assert set(faces["experts"].iloc[0]) >= {"f_dlib", "f_landmarks"}
    v = np.asarray(faces["vector"].iloc[0])
    assert v.shape == (32,) and abs(np.linalg.norm(v) - 1) < 1e-4


def test_models_it_cannot_use_are_refused_with_the_reason(tmp_path, media):
    photos, _, _ = media
    run = CliRunner().invoke
    sim = _model(tmp_path / "sim.pt", {"simulated": True})
    r = run(app, ["voiceface", "enrol", str(photos["obama"]), "--db", str(tmp_path / "a"), "--model", str(sim)])
    assert r.exit_code == 2 and "trained on simulated expert embeddings" in r.stderr
    assert "avmatch corpus import voiceface" in r.stderr
    fake = _model(tmp_path / "fake.pt", {"simulated": False},
                  {"voice_experts": [("v_sim_a", 8)], "face_experts": [("f_sim_a", 8)], "d": 16, "feedforward": 16})
    r = run(app, ["voiceface", "enrol", str(photos["obama"]), "--db", str(tmp_path / "b"), "--model", str(fake)])
    assert r.exit_code == 2 and "v_sim_a" in r.stderr
    r = run(app, ["voiceface", "match", str(photos["obama"]), "--db", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no voiceface database" in r.stderr
    r = run(app, ["voiceface", "--help"])
    assert r.exit_code == 0 and "enrol" in r.stdout and "match" in r.stdout
