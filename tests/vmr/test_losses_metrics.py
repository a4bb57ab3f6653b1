"""Losses of the shared space and the retrieval metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def _pairs(n: int = 16, d: int = 8, noise: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, d, generator=g), dim=1)
    m = F.normalize(v + noise * torch.randn(n, d, generator=g), dim=1)
    return v, m


def test_infonce_prefers_aligned_pairs():
    from avmatch.vmr.losses import infonce

    v, m = _pairs()
    assert infonce(v, m, 0.1) < infonce(v, m.roll(1, 0), 0.1)


def test_vmnet_hinge_zero_when_positives_win_by_the_margin():
    from avmatch.vmr.losses import vmnet_hinge

    v = torch.eye(6)
    assert vmnet_hinge(v, v.clone(), margin=0.5, top_k=3) == 0.0
    assert vmnet_hinge(v, v.roll(1, 0), margin=0.5, top_k=3) > 0.0


def test_vmnet_hinge_top_k_averages_the_worst_violations():
    from avmatch.vmr.losses import vmnet_hinge

    v, m = _pairs(noise=2.0)
    assert vmnet_hinge(v, m, 0.2, top_k=1) >= vmnet_hinge(v, m, 0.2, top_k=10)


def test_soft_intra_structure_zero_when_embedding_keeps_the_input_geometry():
    from avmatch.vmr.losses import soft_intra_structure

    x = torch.tensor([[0.0], [1.0], [5.0], [6.0], [20.0]])
    z = F.normalize(torch.cat([x, torch.ones_like(x) * 0.0 + 3.0], 1), dim=1)
    kept = soft_intra_structure(F.normalize(torch.cat([x / 20, torch.zeros_like(x)], 1) + torch.tensor([0.0, 1.0]), dim=1), x, 0.0)
    assert kept == pytest.approx(0.0, abs=1e-6)
    shuffled = soft_intra_structure(z[[2, 4, 0, 1, 3]], x, 0.2)
    assert shuffled > 0


def test_losses_reject_mismatched_shapes():
    from avmatch.vmr.losses import infonce, vmnet_hinge

    with pytest.raises(ValueError):
        infonce(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError):
        vmnet_hinge(torch.zeros(4, 3), torch.zeros(4, 2))


def test_ranks_recalls_and_median():
    from avmatch.vmr.metrics import summarise, true_ranks

    s = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.3, 0.4, 0.2]])
    r = true_ranks(s)
    assert r.tolist() == [1, 2, 3]
    out = summarise(r, (1, 2))
    assert out == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "median_rank": 2.0}
    assert true_ranks(np.zeros((4, 4))).tolist() == [4, 4, 4, 4]   # ties count against the query


def test_random_ranking_recall_is_k_over_n_and_intervals_cover_it():
    from avmatch.vmr.metrics import evaluate_scores, random_scores

    n = 400
    res = evaluate_scores(random_scores(n, 3), (10, 50), bootstrap=300, seed=1)
    for d in ("v2m", "m2v"):
        assert res[d]["R@10"] == pytest.approx(10 / n, abs=0.03)
        lo, hi = res[d]["ci"]["R@50"]
        assert lo <= res[d]["R@50"] <= hi and lo <= 50 / n + 0.05


def test_perfect_scores_rank_first_both_ways():
    from avmatch.vmr.metrics import evaluate_scores

    res = evaluate_scores(np.eye(30), (1,), bootstrap=0)
    assert res["v2m"]["R@1"] == 1.0 and res["m2v"]["median_rank"] == 1.0 and res["v2m"]["ci"] == {}


def test_peer_matches_activity_to_onsets_and_cut_rate_to_tempo():
    from avmatch.vmr.metrics import peer_scores, true_ranks

    rng = np.random.default_rng(0)
    video, music = [], []
    for i in range(12):
        act = rng.random(10)
        cuts = np.zeros((10, 5), np.float32)
        cuts[::2, 0] = 1      # a cut every 2 s
        motion = np.zeros((10, 5), np.float32)
        motion[:, 0] = act
        video.append({"motion": motion, "cuts": cuts})
        rhythm = np.zeros((10, 8), np.float32)
        rhythm[:, 0] = act + cuts[:, 0] + 0.1 * rng.random(10)   # onsets where the picture moves and cuts
        rhythm[:, 3] = 120 / 120   # 2 beats/s: 4 beats per cut
        music.append({"rhythm": rhythm})
    assert np.mean(true_ranks(peer_scores(video, music)) == 1) > 0.8


def test_recording_folds_keep_recordings_whole_and_balance_the_folds():
    from avmatch.vmr.selection import recording_folds

    pieces = ["a"] * 10 + ["b"] * 8 + ["c"] * 5 + ["d"] * 4 + ["e"] * 3
    folds = recording_folds(pieces, 3)
    for p in set(pieces):
        assert len({int(f) for f, q in zip(folds, pieces) if q == p}) == 1
    sizes = np.bincount(folds)
    assert sizes.sum() == 30 and sizes.max() - sizes.min() <= 3   # within the smallest recording
    assert (recording_folds(pieces, 3) == folds).all()
    with pytest.raises(ValueError):
        recording_folds(["a", "b"], 3)
