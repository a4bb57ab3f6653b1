"""`avmatch corpus import voiceface` on a tiny folder written in EFT's released layout (dataset/info,
dataset/features/<Name>/<video>/<clip>/compact.pkl, dataset/evals)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from avmatch.cli import app
from avmatch.voiceface.eft_import import (
    EftLayoutError,
    features_dir,
    import_eft,
    voice_of,
)
from avmatch.voiceface.evals import read_eval_lists
from avmatch.voiceface.metrics import evaluate

SPLITS = {"train": ["Ann_A", "Bob_B", "Cat_C"], "valid": ["Dan_D", "Eve_E"],
          "test": ["Fay_F", "Gus_G", "Hal_H", "Ivy_I"]}
GENDER = {"Ann_A": "f", "Bob_B": "m", "Cat_C": "f", "Dan_D": "m", "Eve_E": "f", "Fay_F": "f", "Gus_G": "m",
          "Hal_H": "m", "Ivy_I": "f"}
EXPERTS = {"v_ecapa_192": 3, "v_resemble_256": 5, "f_swin_512": 3, "f_mobile_512": 4}


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def face_tracks(name):
    return [f"{name}/1.6/yt{name[0]}1/1", f"{name}/1.6/yt{name[0]}1/2", f"{name}/1.6/yt{name[0]}2/13"]


@pytest.fixture
def eft(tmp_path):
    ds = tmp_path / "EFT" / "dataset"
    dump(ds / "info" / "train_valid_test_names.pkl", SPLITS)
    names = [n for v in SPLITS.values() for n in v]
    dump(ds / "info" / "name2tracks.pkl", {n: face_tracks(n) for n in names})
    dump(ds / "info" / "name2movies.pkl", {n: [f"yt{n[0]}1", f"yt{n[0]}2"] for n in names})
    rng = np.random.default_rng(0)
    feats = {}
    for n in names:
        for t in face_tracks(n):
            d = {e: rng.normal(size=k).astype(np.float32) for e, k in EXPERTS.items()}
            feats[t] = d
            if t == "Cat_C/1.6/ytC1/2":
                del d["f_mobile_512"]                  # one expert absent for one clip
            if t == "Bob_B/1.6/ytB2/13":
                continue                              # no features file at all
            path = ds / "features" / t.replace("/1.6/", "/") / "compact.pkl"
            if t == "Ann_A/1.6/ytA1/1":
                path.parent.mkdir(parents=True)
                path.write_bytes(b"not a pickle")     # corrupted, as EFT's Moon_Bloodgood clip
            else:
                dump(path, d)
    meta = pd.DataFrame({"VoxCeleb1 ID": [f"id{i}" for i in range(len(names))], "VGGFace1 ID": names,
                         "Gender": [GENDER[n] for n in names], "Nationality": ["UK", "USA"] * 4 + ["UK"],
                         "Set": "dev"})
    (ds / "evals").mkdir()
    meta.to_csv(ds / "evals" / "vox1_meta.csv", sep="\t", index=False)
    test = SPLITS["test"]
    ver = [(voice_of(face_tracks(a)[0]), face_tracks(b)[1], int(a == b)) for a in test for b in test]
    dump(ds / "evals" / "test_verification.pkl",
         {"list": ver, "wav_set": {v for v, _, _ in ver}, "jpg_set": {f for _, f, _ in ver}})
    one_n = [([voice_of(face_tracks(n)[2]) for n in order], [face_tracks(n)[0] for n in order])
             for order in (test, test[::-1])]
    dump(ds / "evals" / "test_matching_1N.pkl", {"match_list": one_n, "wav_set": set(), "jpg_set": set()})
    return tmp_path / "EFT", feats


def vectors(path) -> dict[str, np.ndarray]:
    df = pd.read_parquet(path)
    return {t: np.asarray(v, np.float32) for t, v in zip(df["track"], df["vector"])}


def test_import_converts_the_layout_and_records_what_is_missing(eft, tmp_path):
    src, feats = eft
    out = tmp_path / "corpus"
    res = CliRunner().invoke(app, ["corpus", "import", "voiceface", str(src), "--root", str(out)])
    assert res.exit_code == 0, res.output
    ids = pd.read_parquet(out / "identities.parquet")
    assert dict(zip(ids["identity"], ids["split"])) == {n: s for s, ns in SPLITS.items() for n in ns}
    assert dict(zip(ids["identity"], ids["gender"])) == GENDER
    tracks = pd.read_parquet(out / "tracks.parquet")
    assert (tracks["modality"].value_counts() == 27).all()
    assert "Fay_F/ytF2/00013.wav" in set(tracks["track"])
    assert set(tracks.columns) == {"track", "modality", "identity", "video", "path", "noisy"}

    for expert, dim in EXPERTS.items():
        df = pd.read_parquet(out / "experts" / f"{expert}.parquet")
        vec = dict(zip(df["track"], df["vector"]))
        face = "Gus_G/1.6/ytG2/13"
        track = face if expert.startswith("f_") else voice_of(face)
        assert np.array_equal(np.asarray(vec[track], np.float32), feats[face][expert])
        assert all(len(v) == dim for v in vec.values())
        assert set(vec) <= set(tracks.loc[tracks["modality"] == ("face" if expert[0] == "f" else "voice"), "track"])
    missing = pd.read_parquet(out / "experts" / "missing.parquet")
    reasons = {(r.track, r.expert): r.reason for r in missing.itertuples()}
    assert "no features file" in reasons[("Bob_B/ytB2/00013.wav", "v_ecapa_192")]
    assert "unreadable" in reasons[("Ann_A/1.6/ytA1/1", "f_swin_512")]
    assert ("Cat_C/1.6/ytC1/2", "f_mobile_512") in reasons and ("Cat_C/1.6/ytC1/2", "f_swin_512") not in reasons
    assert len(missing) == 2 * 2 * 2 + 1   # two clips x two modalities x two experts, plus one absent expert

    lists = read_eval_lists(out / "evals")
    assert lists.names() == ["test_verification", "test_matching_1N"]
    assert lists["test_matching_1N"].query("item == 1")["voice"].iloc[0] == voice_of(face_tracks("Ivy_I")[2])
    m = evaluate(vectors(out / "experts" / "v_ecapa_192.parquet"), vectors(out / "experts" / "f_swin_512.parquet"),
                 lists)
    assert set(m) == {"auc", "1N_v2f", "1N_f2v"} and 0 <= m["auc"] <= 100


def test_not_an_eft_folder_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["corpus", "import", "voiceface", str(tmp_path), "--root", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no EFT dataset" in res.output
    with pytest.raises(EftLayoutError, match="Name/1.6"):
        voice_of("Ann_A/ytA1/00001.wav")
    assert features_dir("Ann_A/ytA1/00013.wav") == features_dir("Ann_A/1.6/ytA1/13")


def test_unreadable_features_everywhere_stop_the_import(eft, tmp_path):
    src, _ = eft
    for p in (src / "dataset" / "features").rglob("compact.pkl"):
        p.write_bytes(b"junk")
    with pytest.raises(EftLayoutError, match="no expert vector could be read"):
        import_eft(src, tmp_path / "out")
