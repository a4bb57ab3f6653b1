"""The voice-face encoders and their training: shapes, masking of missing experts, loss, SBC, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from avmatch.voiceface.cohort import build_cohort
from avmatch.voiceface.model import VoiceFacePair, fill_unembedded, load_pair, save_pair
from avmatch.voiceface.params import VfCorpusParams, VfModelParams, VfTrainParams
from avmatch.voiceface.training import (
    drop_experts,
    label_select,
    load_split,
    model_configs,
    roc_auc,
    sbc_select,
    symmetric_infonce,
    train_pair,
)

DIMS = {"v_a": 12, "v_b": 20, "f_a": 16, "f_b": 24, "f_c": 8}


def _config(kind: str = "fusion") -> dict:
    voice = [(k, v) for k, v in DIMS.items() if k.startswith("v_")]
    face = [(k, v) for k, v in DIMS.items() if k.startswith("f_")]
    if kind == "single":
        voice, face = voice[:1], face[:1]
    return {"kind": kind, "d": 32, "heads": 4, "layers": 1, "feedforward": 16, "dropout": 0.1, "hidden": 32,
            "voice_experts": voice, "face_experts": face}


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(n, d)).astype(np.float32) for k, d in DIMS.items()}


@pytest.mark.parametrize("kind", ["fusion", "single", "concat"])
def test_shapes_unit_rows_and_round_trip(kind, tmp_path):
    torch.manual_seed(0)
    pair = VoiceFacePair(_config(kind), {"simulated": True})
    x = _inputs(7)
    for m in ("voice", "face"):
        e = pair.embed(m, x)
        assert e.shape == (7, 32) and e.dtype == np.float32
        assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    save_pair(tmp_path / "m.pt", pair)
    back = load_pair(tmp_path / "m.pt")
    assert back.simulated and back.kind == kind and back.voice_experts == pair.voice_experts
    assert np.allclose(back.embed("face", x), pair.embed("face", x))


def test_missing_expert_is_masked_not_zero_filled():
    torch.manual_seed(0)
    pair = VoiceFacePair(_config("fusion"))
    x = _inputs(6)
    present = {k: np.ones(6, bool) for k in DIMS}
    present["f_b"][:3] = False
    base = pair.embed("face", x, present)
    changed = {k: v.copy() for k, v in x.items()}
    changed["f_b"][:3] = 1e3   # garbage where the expert is missing: must not matter
    assert np.allclose(pair.embed("face", changed, present), base, atol=1e-6)
    # the same rows without the mask do change: the expert is really used when present
    assert not np.allclose(pair.embed("face", changed)[:3], base[:3], atol=1e-3)
    # equal to a model given only the other experts' tokens? the masked token drops out of attention and mean
    none = {k: np.zeros(6, bool) for k in DIMS}
    assert np.allclose(pair.embed("face", x, none), 0)
    filled, n = fill_unembedded([f"t{i}" for i in range(6)], pair.embed("face", x, none))
    assert n == 6 and np.allclose(np.linalg.norm(filled, axis=1), 1)
    assert np.allclose(fill_unembedded([f"t{i}" for i in range(6)], pair.embed("face", x, none))[0], filled)


def test_expert_dropout_hides_experts_but_never_all_of_a_track():
    rng = np.random.default_rng(0)
    present = {"f_a": np.ones(2000, bool), "f_b": np.ones(2000, bool), "f_c": rng.random(2000) < 0.5}
    present["f_a"][:5] = present["f_b"][:5] = False          # rows 0-4 have at most f_c
    out = drop_experts(present, 0.4, np.random.default_rng(1))
    kept = np.stack([out[k] for k in present], 1)
    had = np.stack([present[k] for k in present], 1)
    assert not (kept & ~had).any()                              # nothing missing comes back
    assert (kept.any(1) == had.any(1)).all()                    # a track that had an expert keeps one
    hidden = (had & ~kept).sum() / had.sum()
    assert 0.3 < hidden < 0.4                                   # about p, less the rescued last experts
    assert drop_experts(present, 0.0, np.random.default_rng(1)) is present
    single = {"f_a": present["f_a"]}
    assert drop_experts(single, 0.9, np.random.default_rng(1)) is single   # a single expert is never hidden


def test_symmetric_infonce_prefers_aligned_pairs():
    torch.manual_seed(0)
    v = torch.randn(16, 8)
    assert symmetric_infonce(v, v.clone(), 0.07) < symmetric_infonce(v, torch.randn(16, 8), 0.07)


def test_sbc_drops_near_duplicate_pairs_of_an_identity_already_in_the_batch():
    rng = np.random.default_rng(0)
    n = 40
    ident = np.arange(n)
    ident[10] = 3            # same identity as row 3 and nearly the same vectors: dropped
    ident[20] = 5            # same identity as row 5 but dissimilar: kept
    f = rng.normal(size=(n, 256))
    v = rng.normal(size=(n, 256))
    f[10], v[10] = f[3] + 0.01, v[3] + 0.01
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    kept = sbc_select(ident, unit(f), unit(v), batch_size=n, k=3.0)
    assert 10 not in kept and 20 in kept and len(kept) == n - 1
    assert sbc_select(ident, unit(f), unit(v), batch_size=5, k=2.0).tolist() == [0, 1, 2, 3, 4]
    assert 20 not in label_select(ident, n) and 10 not in label_select(ident, n)


def test_roc_auc_by_hand():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    build_cohort(VfCorpusParams(size="tiny", seed=5), root)
    ids, tracks = pd.read_parquet(root / "identities.parquet"), pd.read_parquet(root / "tracks.parquet")
    voice, face = ["v_sim_ecapa", "v_sim_resemblyzer"], ["f_sim_r2plus1d", "f_sim_swin"]
    train = load_split(root, tracks, ids, "train", voice, face)
    valid = load_split(root, tracks, ids, "valid", voice, face)
    rng = np.random.default_rng(0)
    vt = pd.Series(valid.voice_tracks)
    who_v = vt.str.split("/").str[0]
    who_f = pd.Series(valid.face_tracks).str.split("/").str[0]
    rows = []
    for i in rng.choice(len(vt), min(len(vt), 100), replace=False):
        same = np.flatnonzero(who_f == who_v[i])
        other = np.flatnonzero(who_f != who_v[i])
        rows += [(vt[i], valid.face_tracks[rng.choice(same)], 1), (vt[i], valid.face_tracks[rng.choice(other)], 0)]
    return train, valid, pd.DataFrame(rows, columns=["voice", "face", "label"]), voice, face


def _tp(**kw) -> VfTrainParams:
    return VfTrainParams(**{"max_steps": 40, "batch_size": 16, "big_batch": 32, "eval_every": 20,
                            "checkpoint_every": 20, "lr": 1e-3, **kw})


def test_training_lowers_the_loss_and_beats_chance(tiny_data):
    train, valid, lst, voice, face = tiny_data
    cfg = model_configs(voice, face, train.dims(), VfModelParams(d=32, feedforward=32), "fusion")
    torch.set_num_threads(1)
    res = train_pair(cfg, train, _tp(), valid=(valid, lst))
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    assert res.best_valid_auc > 60
    assert res.steps == 40 and res.best_step in (20, 40)


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tiny_data, tmp_path):
    train, valid, lst, voice, face = tiny_data
    cfg = model_configs(voice, face, train.dims(), VfModelParams(d=32, feedforward=32), "fusion")
    a = train_pair(cfg, train, _tp(max_steps=20), valid=(valid, lst))
    b = train_pair(cfg, train, _tp(max_steps=20), valid=(valid, lst))
    for k, v in a.pair.state_dict().items():
        assert torch.equal(v, b.pair.state_dict()[k]), k
    # killed after every step (the safety time limit) and rerun until done: the weights of one uninterrupted run
    from avmatch.core.training import TimeLimitReached

    ck = tmp_path / "ck.pt"
    stop_each_step = _tp(max_steps=12, checkpoint_every=5, eval_every=4, max_minutes=1e-9)
    runs = 0
    while True:
        runs += 1
        try:
            resumed = train_pair(cfg, train, stop_each_step, valid=(valid, lst), checkpoint=ck)
            break
        except TimeLimitReached as exc:
            assert exc.checkpoint == ck
    assert runs == 12 and resumed.resumed_from_step == 11
    whole = train_pair(cfg, train, _tp(max_steps=12, checkpoint_every=5, eval_every=4), valid=(valid, lst))
    assert resumed.best_step == whole.best_step
    for k, v in whole.pair.state_dict().items():
        assert torch.equal(v, resumed.pair.state_dict()[k]), k


def test_sbc_modes_change_the_batches(tiny_data):
    train, valid, lst, voice, face = tiny_data
    cfg = model_configs(voice, face, train.dims(), VfModelParams(d=32, feedforward=32), "concat")
    off = train_pair(cfg, train, _tp(max_steps=5), sbc_mode="off")
    label = train_pair(cfg, train, _tp(max_steps=5), sbc_mode="label")
    sbc = train_pair(cfg, train, _tp(max_steps=5, sbc={"mode": "sbc", "k": 0.0}), sbc_mode="sbc")
    assert off.batch_stats["dup_rate_after"] > 0          # 40 identities, 16 pairs: duplicates happen
    assert label.batch_stats["dup_rate_after"] == 0
    assert sbc.batch_stats["dup_rate_after"] < off.batch_stats["dup_rate_after"]
