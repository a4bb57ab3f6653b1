"""Evaluation lists: the protocol's properties (splits, constraints, galleries), determinism, and reading our
Parquet files and EFT's released pickles (only when allowed)."""

from __future__ import annotations

import logging
import os
import pickle

import pandas as pd
import pytest
from _vf_cohort import cohort, eft_pickles, embeddings

from avmatch.voiceface.evals import (
    COLUMNS,
    EvalListError,
    EvalSizes,
    make_eval_lists,
    read_eval_lists,
    write_eval_lists,
)
from avmatch.voiceface.metrics import evaluate

SIZES = EvalSizes(verification=200, valid_verification=100, matching=150, retrieval_groups=3,
                  retrieval_group_size=8, retrieval_per_identity=2, matching_1n=40, gallery=10)


@pytest.fixture(scope="module")
def data():
    identities, tracks = cohort(seed=11)
    test = make_eval_lists(identities, tracks, "test", 5, SIZES)
    valid = make_eval_lists(identities, tracks, "valid", 5, SIZES)
    return identities, tracks, test, valid


def owner(tracks: pd.DataFrame) -> dict[str, str]:
    return dict(zip(tracks["track"], tracks["identity"]))


def test_lists_use_only_their_split_and_have_the_agreed_columns(data):
    identities, tracks, test, valid = data
    split = dict(zip(identities["identity"], identities["split"]))
    own = owner(tracks)
    assert test.names() == ["test_verification", "test_verification_g", "test_verification_n",
                            "test_verification_gn", "test_matching", "test_matching_g", "test_retrieval",
                            "test_matching_1N"]
    assert valid.names() == ["valid_verification"]
    for lists, want in ((test, "test"), (valid, "valid")):
        for name in lists.names():
            assert tuple(lists[name].columns) == COLUMNS[name]
        for modality in ("voice", "face"):
            ts = lists.tracks(modality)
            assert ts and {split[own[t]] for t in ts} == {want}
            assert set(tracks.loc[tracks["track"].isin(ts), "modality"]) == {modality}


def test_verification_labels_and_constraints(data):
    identities, tracks, test, _ = data
    own = owner(tracks)
    attr = identities.set_index("identity")
    for name, same in (("test_verification", ()), ("test_verification_g", ("gender",)),
                       ("test_verification_n", ("nationality",)), ("test_verification_gn", ("gender", "nationality"))):
        df = test[name]
        assert len(df) == SIZES.verification and df["label"].sum() == SIZES.verification // 2
        a = df["voice"].map(own)
        b = df["face"].map(own)
        assert ((a == b) == (df["label"] == 1)).all()
        neg = df["label"] == 0
        for col in same:
            assert (attr.loc[a[neg], col].to_numpy() == attr.loc[b[neg], col].to_numpy()).all(), (name, col)
    # the unconstrained list does mix genders (so the G list is a real constraint)
    df = test["test_verification"]
    neg = df[df["label"] == 0]
    assert (attr.loc[neg["voice"].map(own), "gender"].to_numpy()
            != attr.loc[neg["face"].map(own), "gender"].to_numpy()).any()


def test_matching_triplets(data):
    identities, tracks, test, _ = data
    own = owner(tracks)
    gender = dict(zip(identities["identity"], identities["gender"]))
    for name in ("test_matching", "test_matching_g"):
        df = test[name]
        assert len(df) == SIZES.matching and (df["name1"] != df["name2"]).all()
        for k in ("1", "2"):
            assert (df["voice" + k].map(own) == df["name" + k]).all()
            assert (df["face" + k].map(own) == df["name" + k]).all()
    g = test["test_matching_g"]
    assert (g["name1"].map(gender) == g["name2"].map(gender)).all()
    u = test["test_matching"]
    assert (u["name1"].map(gender) != u["name2"].map(gender)).any()


def test_retrieval_groups_and_one_to_n_galleries(data):
    _, tracks, test, _ = data
    own = owner(tracks)
    r = test["test_retrieval"]
    assert sorted(r["group"].unique()) == list(range(SIZES.retrieval_groups))
    assert (r["voice"].map(own) == r["name"]).all() and (r["face"].map(own) == r["name"]).all()
    for _, g in r.groupby("group"):
        assert len(g) == SIZES.retrieval_group_size * SIZES.retrieval_per_identity
        assert g["name"].nunique() == SIZES.retrieval_group_size
    m = test["test_matching_1N"]
    assert m["item"].nunique() == SIZES.matching_1n
    for _, g in m.groupby("item"):
        assert list(g["position"]) == list(range(SIZES.gallery))
        ids = g["voice"].map(own)
        assert (ids == g["face"].map(own)).all() and ids.nunique() == SIZES.gallery


def test_same_seed_same_lists_whatever_the_row_order(data):
    identities, tracks, test, _ = data
    again = make_eval_lists(identities.sample(frac=1, random_state=1), tracks.sample(frac=1, random_state=2),
                            "test", 5, SIZES)
    for name in test.names():
        pd.testing.assert_frame_equal(test[name], again[name])
    other = make_eval_lists(identities, tracks, "test", 6, SIZES)
    assert not test["test_verification"].equals(other["test_verification"])
    # one list's size does not move another list's draws
    bigger = make_eval_lists(identities, tracks, "test", 5, EvalSizes(**{**SIZES.__dict__, "matching": 10}))
    pd.testing.assert_frame_equal(test["test_verification"], bigger["test_verification"])


def test_usable_sets_leave_out_tracks_without_vectors(data):
    identities, tracks, _, _ = data
    voices = sorted(tracks.loc[tracks["modality"] == "voice", "track"])
    faces = sorted(tracks.loc[tracks["modality"] == "face", "track"])
    usable_v, usable_f = set(voices[::2]), set(faces[1::3])
    lists = make_eval_lists(identities, tracks, "test", 5, SIZES, usable_voice=usable_v, usable_face=usable_f)
    assert lists.tracks("voice") <= usable_v and lists.tracks("face") <= usable_f
    # the noisy-labelled tracks stay in (label noise is part of the data)
    noisy = set(tracks.loc[tracks["noisy"], "track"])
    assert noisy & make_eval_lists(identities, tracks, "test", 5, SIZES).tracks("face")


def test_bad_requests_are_refused(data):
    identities, tracks, _, _ = data
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        make_eval_lists(identities, tracks, "train", 0, SIZES)
    with pytest.raises(ValueError, match="2..10"):
        EvalSizes(gallery=11)
    one_nation = identities.assign(nationality=[f"n{i}" for i in range(len(identities))])
    with pytest.raises(ValueError, match="nationality"):
        make_eval_lists(one_nation, tracks, "test", 0, SIZES)


def test_parquet_round_trip_gives_the_same_metrics(tmp_path, data):
    _, tracks, test, valid = data
    lists = test.merged(valid)
    write_eval_lists(lists, tmp_path)
    back = read_eval_lists(tmp_path)
    assert back.names() == lists.names()
    for name in lists.names():
        pd.testing.assert_frame_equal(back[name], lists[name], check_dtype=False)
        assert back.source(name) == str(tmp_path / f"{name}.parquet")
    voice, face = embeddings(tracks)
    assert evaluate(voice, face, back) == evaluate(voice, face, lists)


def test_malformed_parquet_lists_name_the_file(tmp_path):
    pd.DataFrame({"voice": ["a"], "face": ["b"]}).to_parquet(tmp_path / "test_verification.parquet")
    with pytest.raises(EvalListError, match=r"test_verification.parquet.*label"):
        read_eval_lists(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_eval_lists(tmp_path / "nope")


def test_eft_pickles_are_read_only_when_allowed(tmp_path, data, caplog):
    _, tracks, test, valid = data
    lists = test.merged(valid)
    eft_pickles(tmp_path, lists)
    with pytest.raises(EvalListError, match="allow_pickle"):
        read_eval_lists(tmp_path)
    with caplog.at_level(logging.WARNING):
        back = read_eval_lists(tmp_path, allow_pickle=True)
    assert "execute code" in caplog.text
    assert back.names() == lists.names()
    for name in lists.names():
        pd.testing.assert_frame_equal(back[name], lists[name], check_dtype=False)
    voice, face = embeddings(tracks)
    assert evaluate(voice, face, back) == evaluate(voice, face, lists)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_with_code_is_refused_even_when_allowed(tmp_path):
    with open(tmp_path / "test_verification.pkl", "wb") as fh:
        pickle.dump({"list": [_Evil()]}, fh)
    with pytest.raises(EvalListError, match="refusing to load"):
        read_eval_lists(tmp_path, allow_pickle=True)


def test_usable_tracks_drop_only_tracks_missing_every_expert_of_their_modality(data):
    from avmatch.voiceface.evals import usable_tracks

    _, tracks, test, _ = data
    v = sorted(tracks.loc[tracks["modality"] == "voice", "track"])
    f = sorted(tracks.loc[tracks["modality"] == "face", "track"])
    missing = pd.DataFrame([(v[0], "v_a", "x"), (v[0], "v_b", "x"),      # no voice vector at all
                            (v[1], "v_a", "x"),                           # still has v_b
                            (f[0], "f_a", "x"), (f[0], "f_other", "x")],  # f_other is not used
                           columns=["track", "expert", "reason"])
    uv, uf = usable_tracks(tracks, missing, ["v_a", "v_b", "f_a"])
    assert uv == set(v) - {v[0]} and uf == set(f) - {f[0]}
    assert test.counts()["test_retrieval"] == SIZES.retrieval_groups
    assert test.counts()["test_matching_1N"] == SIZES.matching_1n
