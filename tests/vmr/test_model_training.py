"""The two-branch encoder and its step-driven, seeded training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avmatch.vmr.params import VmrModelParams, VmrTrainParams


def _data(n: int = 24, t: int = 10, seed: int = 0):
    """Video features are a noisy linear image of the music's: a learnable pairing."""
    rng = np.random.default_rng(seed)
    music = [rng.normal(size=(t, 6)).astype(np.float32) for _ in range(n)]
    w = rng.normal(size=(6, 4))
    videos = [(m @ w + 0.1 * rng.normal(size=(t, 4))).astype(np.float32) for m in music]
    return videos, music


@pytest.mark.parametrize("kind", ["stats", "sequence", "both"])
def test_embeddings_are_unit_norm_and_windows_cover_the_clip(kind):
    from avmatch.vmr.model import VmrEncoder, embed_items, embed_windows

    mp = VmrModelParams(kind=kind, dim=16, hidden=32, d_model=16, layers=1, heads=2)
    model = VmrEncoder(4, 6, 5, mp, ["colour"], ["rhythm"]).eval()
    x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    e, starts = embed_windows(model.video, x, 5, stride=3)
    assert starts == [0, 3, 6, 7]
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    short = embed_items(model.video, [x[:3]], 5)   # shorter than the window: padded
    assert short.shape == (1, model.out_dim) and np.isclose(np.linalg.norm(short), 1.0, atol=1e-5)


def _train(tmp_path, loss: str, steps: int, sub: str):
    from avmatch.vmr.training import train_encoder

    videos, music = _data()
    tp = VmrTrainParams(loss=loss, batch_size=8, max_steps=steps, checkpoint_every=10, crop_jitter_s=2, lr=3e-3)
    mp = VmrModelParams(kind="both", dim=16, hidden=32, d_model=16, layers=1, heads=2, dropout=0.0)
    return train_encoder(videos, music, train_params=tp, model_params=mp, window=8, families=(["a"], ["b"]),
                         seed=5, checkpoint_dir=tmp_path / sub, val=(videos[:8], music[:8]))


def test_training_is_deterministic_and_stops_at_max_steps(tmp_path):
    a = _train(tmp_path, "infonce", 20, "a")
    b = _train(tmp_path, "infonce", 20, "b")
    assert a.steps == b.steps == 20
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k


def test_resume_continues_the_same_run(tmp_path):
    full = _train(tmp_path, "hinge", 20, "full")
    _train(tmp_path, "hinge", 20, "part")   # same config: the checkpoint at step 20 is simply reused
    resumed = _train(tmp_path, "hinge", 20, "part")
    assert resumed.resumed_from_step == 20
    for (k, x), (_, y) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), k


@pytest.mark.parametrize("loss", ["infonce", "hinge"])
def test_training_learns_the_pairing(tmp_path, loss):
    from avmatch.vmr.model import embed_items
    from avmatch.vmr.training import recall_at

    result = _train(tmp_path, loss, 150, loss)
    videos, music = _data()
    v = embed_items(result.model.video, videos, 8)
    m = embed_items(result.model.music, music, 8)
    assert recall_at(v, m, 1) > 0.5   # random: 1/24


def test_encoder_round_trip(tmp_path):
    from avmatch.vmr.model import VmrEncoder, load_encoder, save_encoder

    mp = VmrModelParams(kind="stats", dim=8, hidden=16)
    model = VmrEncoder(4, 6, 5, mp, ["colour"], ["rhythm"])
    save_encoder(model, tmp_path / "e.pt", {"hop": 256})
    back = load_encoder(tmp_path / "e.pt")
    x = torch.randn(2, 5, 4)
    assert torch.allclose(model.eval().video(x), back.video(x))
    assert back.video_families == ["colour"]


def test_rhythm_curves_keep_the_time_course_not_the_level():
    from avmatch.vmr.model import RhythmCurves

    curves = RhythmCurves(6, 3)
    h = torch.randn(2, 8, 6)
    shifted = h + torch.randn(2, 1, 6)          # the same time course at another level
    assert torch.allclose(curves(h), curves(shifted), atol=1e-4)
    c = curves(h).view(2, 8, 3)
    assert torch.allclose(c.mean(1), torch.zeros(2, 3), atol=1e-5)   # standardised over the seconds


def test_sub_second_rhythm_curves_have_substeps_points_per_second():
    from avmatch.vmr.model import VmrEncoder

    mp = VmrModelParams(kind="sequence", dim=16, d_model=16, layers=1, heads=2, curve_channels=3, curve_substeps=4)
    model = VmrEncoder(4, 6, 5, mp, ["colour"], ["rhythm"]).eval()
    x = torch.randn(2, 5, 4)
    z = model.video(x)
    assert z.shape == (2, model.out_dim) and model.out_dim == 16 + 3 * 4 * 5
    c = model.video.curves(model.video.seq.tokens(x), x).view(2, 5 * 4, 3)
    assert torch.allclose(c.mean(1), torch.zeros(2, 3), atol=1e-5)   # standardised over all 20 points


def test_splicing_keeps_each_pair_aligned_and_takes_partners_outside_the_batch():
    from avmatch.vmr.training import _batch, splice_pairs

    n, t, w = 12, 10, 8
    # every second of pair i holds (i, second) in both modalities: a spliced row must show the same pair
    # and the same second on both sides, at every position
    videos = [np.stack([np.full(t, i), np.arange(t)], 1).astype(np.float32) for i in range(n)]
    music = [np.stack([np.full(t, i), np.arange(t), np.zeros(t)], 1).astype(np.float32) for i in range(n)]
    idx, starts = np.array([0, 1, 2, 3]), np.zeros(4, int)
    xv, xm = _batch(videos, idx, starts, w), _batch(music, idx, starts, w)
    sv, sm = splice_pairs(xv, xm, videos, music, idx, np.full(n, t), w, 0.5, 2, np.random.default_rng(0))
    assert torch.equal(sv[..., :2], sm[..., :2])
    changed = (sv[:, :, 0] != xv[:, :, 0]).any(1)
    assert int(changed.sum()) == 2                                   # half of the batch
    for r in np.flatnonzero(changed.numpy()):
        owners = sv[r, :, 0]
        c = int(np.argmax(owners.numpy() != idx[r]))
        assert c >= 2 and (owners[:c] == idx[r]).all() and int(owners[c]) not in idx   # partner from outside
        assert (owners[c:] == owners[c]).all()
    assert torch.equal(sv[~changed], xv[~changed])


def test_a_pair_scores_its_best_pair_of_windows():
    from avmatch.vmr.model import best_window_scores

    sims = np.array([[0.1, 0.9, 0.2],     # video 0, window 0
                     [0.5, 0.0, 0.3],     # video 0, window 1
                     [0.4, 0.1, 0.8]])    # video 1, window 0
    q_item, t_item = np.array([0, 0, 1]), np.array([0, 0, 1])   # music 0 has two windows, music 1 one
    out = best_window_scores(sims, q_item, t_item, 2, 3)
    assert np.allclose(out[:, :2], [[0.9, 0.3], [0.4, 0.8]])
    assert np.isneginf(out[:, 2]).all()          # a music item with no window is never a match
