"""Segment-pair reductions, version metrics, CQT, losses and the corpus grouping on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avmatch.core.config import ConfigError, validate_params
from avmatch.versions.metrics import (
    confidence_interval,
    per_query,
    precision_recall,
    summarize,
)
from avmatch.versions.params import CQTParams
from avmatch.versions.segment_pairs import (
    pad_tracks,
    parse_reduction,
    reduce_pairs,
    track_distances,
)


def test_parse_reduction():
    assert parse_reduction("min") == ("min", 1)
    assert parse_reduction("mean") == ("mean", 0)
    assert parse_reduction("bpwr-3") == ("bpwr", 3)
    for bad in ("max", "bpwr-0", "bpwr", "bpwr-x"):
        with pytest.raises(ValueError):
            parse_reduction(bad)


def test_reductions_on_a_hand_worked_matrix():
    d = torch.tensor([[0.1, 0.5, 0.9],
                      [0.2, 0.3, 0.8],
                      [0.7, 0.6, 0.4]])
    assert reduce_pairs(d, "min").item() == pytest.approx(0.1)
    assert reduce_pairs(d, "mean").item() == pytest.approx(d.mean().item())
    # bpwr: 0.1 (row 0, col 0) -> remove row 0/col 0 -> 0.3 (1,1) -> remove -> 0.4 (2,2)
    assert reduce_pairs(d, "bpwr-1").item() == pytest.approx(0.1)
    assert reduce_pairs(d, "bpwr-2").item() == pytest.approx((0.1 + 0.3) / 2)
    assert reduce_pairs(d, "bpwr-3").item() == pytest.approx((0.1 + 0.3 + 0.4) / 3)
    # more pairs asked than exist: uses min(k, rows, cols)
    assert reduce_pairs(d[:2], "bpwr-5").item() == pytest.approx((0.1 + 0.3) / 2)
    # without replacement: a greedy min over rows (0.1, 0.2) would reuse column 0
    d2 = torch.tensor([[0.1, 0.9], [0.2, 0.8]])
    assert reduce_pairs(d2, "bpwr-2").item() == pytest.approx((0.1 + 0.8) / 2)


def test_reductions_respect_masks_and_batch_and_gradients():
    d = torch.tensor([[[0.1, 5.0], [5.0, 5.0]], [[0.3, 0.2], [0.6, 0.5]]], requires_grad=True)
    mask = torch.tensor([[[True, False], [False, False]], [[True, True], [True, True]]])
    out = reduce_pairs(d, "bpwr-2", mask)
    assert out[0].item() == pytest.approx(0.1)          # only one valid pair
    assert out[1].item() == pytest.approx((0.2 + 0.6) / 2)
    assert reduce_pairs(d, "mean", mask)[0].item() == pytest.approx(0.1)
    out.sum().backward()
    assert d.grad[1, 0, 1] == pytest.approx(0.5) and d.grad[1, 1, 0] == pytest.approx(0.5)
    assert torch.isinf(reduce_pairs(d, "min", torch.zeros_like(mask))).all()


def test_track_distances_and_best_pair():
    v = np.eye(4, dtype=np.float32)
    vecs = np.stack([v[0], v[1], v[1], v[2], v[3]])      # track 0: e0,e1; track 1: e1,e2; track 2: e3
    padded, mask = pad_tracks(vecs, np.array([0, 0, 1, 1, 2]), 3)
    assert padded.shape == (3, 2, 4) and mask.tolist() == [[True, True], [True, True], [True, False]]
    dist, best = track_distances(padded, mask, padded, mask, "min")
    assert dist[0, 1] == pytest.approx(0.0, abs=1e-3)    # they share e1
    assert best[0, 1].tolist() == [1, 0]                  # query segment 1 matches track segment 0
    assert dist[0, 2] == pytest.approx(np.sqrt(2), abs=1e-3)


def test_metrics_hand_worked():
    # query 0: relevant items at ranks 1 and 3 of 4 candidates (itself excluded)
    dist = np.array([[np.inf, 0.1, 0.5, 0.3, 0.9]])
    rel = np.array([[False, True, True, False, False]])
    valid = np.array([[False, True, True, True, True]])
    pq = per_query(dist, rel, valid)
    assert pq["AP"][0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert pq["R1"][0] == 1
    assert pq["NAR"][0] == pytest.approx(100 * ((1 + 3) - 3) / (2 * 4))
    point, ci = summarize(pq, bootstrap=0)
    assert point["MAP"] == pytest.approx(pq["AP"][0]) and ci["MAP"][0] == pytest.approx(point["MAP"])
    # a query without relevant items is skipped
    assert len(per_query(dist, np.zeros_like(rel), valid)["AP"]) == 0
    # ties count against the query
    assert per_query(np.array([[0.2, 0.2]]), np.array([[True, False]]))["R1"][0] == 2
    recall, precision = precision_recall(dist, rel, valid)
    assert precision[0] == pytest.approx(1.0) and precision[-1] == pytest.approx(2 / 3)


def test_confidence_interval_contains_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small, large = rng.uniform(size=20), rng.uniform(size=2000)
    for bootstrap in (0, 500):
        lo, hi = confidence_interval(small, bootstrap)
        assert lo < small.mean() < hi
        lo2, hi2 = confidence_interval(large, bootstrap)
        assert hi2 - lo2 < hi - lo


def test_cqt_puts_a_tone_in_its_semitone_bin():
    from avmatch.versions.cqt import bin_frequencies, cqt, segment_frames

    p = CQTParams()
    sr = 16000
    t = np.arange(sr * 3) / sr
    for midi in (45, 69, 81):           # A2, A4, A5
        f = 440 * 2 ** ((midi - 69) / 12)
        c = cqt(np.sin(2 * np.pi * f * t).astype(np.float32), sr, p)
        assert c.shape[1] == 84 and abs(c.shape[0] - 30) <= 1      # 10 frames per second
        b = int(np.argmax(c[5:-5].mean(0)))
        assert abs(bin_frequencies(p)[b] / f - 1) < 0.03
    win, starts = segment_frames(np.zeros((230, 84), np.float32), 200, 50)
    assert win.shape == (2, 84, 200) and starts.tolist() == [0, 30]
    assert len(segment_frames(np.zeros((150, 84), np.float32), 200, 50)[0]) == 0


def test_losses_prefer_separated_versions():
    from avmatch.versions.losses import version_loss

    torch.manual_seed(0)
    cliques = torch.tensor([0, 0, 1, 1, 2, 2])
    base = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    good = base[cliques][:, None].repeat(1, 3, 1) + 0.01 * torch.randn(6, 3, 16)
    good = torch.nn.functional.normalize(good, dim=-1)
    bad = torch.nn.functional.normalize(torch.randn(6, 3, 16), dim=-1)
    for kind in ("clews", "triplet", "supcon"):
        lg, _ = version_loss(good, cliques, kind)
        lb, _ = version_loss(bad, cliques, kind)
        assert lg < lb, kind
    with pytest.raises(ValueError):
        version_loss(good, torch.arange(6), "clews")


def test_encoder_shapes_and_unit_norm():
    from avmatch.versions.model import VersionEncoder

    m = VersionEncoder(84, [8, 16], 32).eval()
    y = m(torch.rand(3, 84, 200))
    assert y.shape == (3, 32)
    assert torch.allclose(y.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_chroma_input_is_exactly_transposition_invariant():
    """With pitch_input=chroma a transposition (a circular shift of the pitch classes) must not move the
    embedding (the octave-channel input is only nearly invariant: notes cross octave channels)."""
    from avmatch.versions.model import VersionEncoder

    torch.manual_seed(0)
    x = torch.rand(2, 84, 200)
    shifted = x.view(2, 7, 12, 200).roll(5, 2).reshape(2, 84, 200)
    unrelated = torch.rand(2, 84, 200) ** 4  # other content: the embedding must move
    for options in ({}, {"frame_norm": True, "temporal_layers": 2}):
        m = VersionEncoder(84, [8, 16], 32, pitch_input="chroma", **options).eval()
        assert torch.allclose(m(x), m(shifted), atol=1e-5)
        assert not torch.allclose(m(x), m(unrelated), atol=1e-3)


def test_crp_chroma_ignores_a_smooth_spectral_envelope():
    """crp_coeffs whitens the input against the instrument: the same notes under another smooth EQ across the 7
    octaves (an instrument's envelope, in the log CQT an added slow curve along the bins) give the same whitened
    chroma, while the plain chroma changes; other notes still change it."""
    from avmatch.versions.model import VersionEncoder

    torch.manual_seed(0)
    notes = (torch.rand(1, 84, 200) > 0.9).float() * 0.5
    bins = torch.arange(84.0)[None, :, None]
    eq = 0.3 * torch.cos(torch.pi * bins / 84) + 0.2 * torch.cos(2 * torch.pi * bins / 84 + 1.0)  # 1-2 cycles
    x, y = notes + 0.5, notes + 0.5 + eq
    whitened, plain = (VersionEncoder(84, [8, 16], 32, pitch_input="chroma", crp_coeffs=k).eval() for k in (38, 0))

    def chroma(m, v):  # what the first layer sees
        seen = {}
        m.body[0].register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
        m(v)
        return seen["x"]

    other = (torch.rand(1, 84, 200) > 0.9).float() * 0.5 + 0.5
    cw, cp = (chroma(whitened, x), chroma(whitened, y)), (chroma(plain, x), chroma(plain, y))
    gap = lambda a, b: float((a - b).abs().max())
    assert gap(*cw) < 0.05 < gap(*cp)
    assert gap(cw[0], chroma(whitened, other)) > 0.2
    with pytest.raises(ValueError, match="crp_coeffs"):
        from avmatch.versions.params import VerModelParams
        VerModelParams(pitch_input="octaves", crp_coeffs=38)


def test_temporal_layers_widen_the_receptive_field_to_the_whole_segment():
    """Without them the last pooled position sees ~7 s of a 20 s segment, so the pooled features are a bag of
    local patterns; with 3 dilated layers it depends on the segment's first frames too (the order of events
    across the segment can count)."""
    from avmatch.versions.model import VersionEncoder

    reach = {}
    for layers in (0, 3):
        m = VersionEncoder(84, [8, 16, 32, 64], 32, pitch_input="chroma", temporal_layers=layers).eval()
        z = torch.rand(1, 2, 12, 200, requires_grad=True)   # chroma input: [batch, mean/max, pitch classes, frames]
        m.body(z)[..., -1].sum().backward()
        reach[layers] = float(z.grad[..., :40].abs().sum())
        y = m(torch.rand(3, 84, 200))
        assert y.shape == (3, 32) and torch.allclose(y.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert reach[0] == 0.0 and reach[3] > 0.0


def test_timbre_change_keeps_the_notes_and_changes_the_sound():
    """Another instrument playing the same note: the note's bin stays the strongest, harmonics appear only an
    octave, an octave + fifth and two octaves up, and a sustained version holds the note after it stopped."""
    from avmatch.versions.training import HARMONIC_BINS, change_timbre

    note, on = 30, slice(10, 40)
    lin = np.zeros((84, 100), np.float32)
    lin[note, on] = 50.0
    crop = np.log1p(lin)
    sustained = 0
    for seed in range(20):
        out = change_timbre(crop, 1.0, np.random.default_rng(seed))
        assert out.shape == crop.shape and out.dtype == np.float32 and np.isfinite(out).all() and out.min() >= 0
        assert (out[:, 20].argmax() == note) and not np.allclose(out, crop)
        lit = set(np.flatnonzero(out[:, 20] > 1e-6))
        assert lit <= {note} | {note + h for h in HARMONIC_BINS}
        sustained += bool(out[note, 45] > 1e-3)         # 0.5 s after the note ended
        assert out[note, 99] < out[note, 20]            # ...but it does not ring for ever
    assert 0 < sustained < 20                           # on some crops only
    for seed in range(4):  # strength 0: no EQ, no harmonics; at most a short sustain after the note
        plain = change_timbre(crop, 0.0, np.random.default_rng(seed))
        assert np.allclose(plain[:, :40], crop[:, :40], atol=1e-5) and (plain >= crop - 1e-6).all()


def test_augment_crop_shapes():
    from avmatch.versions.params import VerAugmentParams
    from avmatch.versions.training import augment_crop

    rng = np.random.default_rng(0)
    feat = np.random.default_rng(1).uniform(size=(300, 84)).astype(np.float16)
    for a in (None, VerAugmentParams(), VerAugmentParams(timbre=1.0)):
        c = augment_crop(feat, 200, rng, a)
        assert c.shape == (84, 200) and c.dtype == np.float32


def test_clique_sampler_balances_sources():
    from avmatch.versions.training import CliqueSampler

    # 2 cliques of a small real source, 30 of a large synthetic one, 2 versions each
    cliques = [f"real{i // 2}" for i in range(4)] + [f"syn{i // 2}" for i in range(60)]
    sources = ["real"] * 4 + ["syn"] * 60
    feats = [np.zeros((40, 12), np.float16) for _ in cliques]
    shares = {}
    for balance in (False, True):
        s = CliqueSampler(feats, cliques, 20, 0, sources, balance)
        real = 0
        for _ in range(200):
            _, y = s.batch(4, 1, None)
            real += int((y < 2).sum()) // 2   # the groups are sorted: real0, real1, syn...
        shares[balance] = real / 800
    assert shares[False] < 0.12 and 0.3 < shares[True] < 0.6, shares


def test_params_reject_bad_reduction_and_missing_dataset_files():
    with pytest.raises(ConfigError, match="versions.evaluate.reduction"):
        validate_params({"versions": {"evaluate": {"reduction": "max"}}})
    with pytest.raises(ConfigError, match="metadata"):
        validate_params({"versions": {"corpus": {"source": "shs100k"}}})
    with pytest.raises(ConfigError, match="chroma_top"):
        validate_params({"versions": {"model": {"pitch_input": "octaves", "chroma_top": 4}}})


def test_chorale_families_group_by_soprano_not_title():
    from avmatch.core.music21_render import Piece
    from avmatch.versions.corpus import chorale_families, soprano_signature, vary_piece

    def piece(key, melody, shift=0, rhythm=1.0, alto=60):
        sop = [(i * rhythm, rhythm, p + shift, 80) for i, p in enumerate(melody)]
        return Piece(key, "bach", "same title", [sop, [(0.0, 4.0, alto, 80)]], len(melody) * rhythm, "")

    tune = [67, 67, 69, 71, 72, 71, 69, 67, 69, 71, 72, 74, 72]
    other = [60, 62, 64, 65, 67, 65, 64, 62, 60, 62, 64, 65, 67]
    a = piece("a", tune)
    b = piece("b", tune, shift=-2, alto=55)                          # another key, another harmony
    c = piece("c", [67] + tune, rhythm=0.75)                         # repeated note, other rhythm
    d = piece("d", other)
    assert soprano_signature(a) == soprano_signature(b) == soprano_signature(c)
    fams, singles = chorale_families({"a": a, "b": b, "c": c, "d": d, "a2": piece("a2", tune)})
    assert [[p.key for p in f] for f in fams] == [["a", "b", "c"]]   # a2 has the same notes as a: counted once
    assert [p.key for p in singles] == ["d"]
    rng = np.random.default_rng(0)
    long = piece("l", tune * 3)
    dropped, desc = vary_piece(long, "drop", rng)
    assert desc.startswith("drop") and dropped.length_ql < long.length_ql
    repeated, desc = vary_piece(long, "repeat", rng)
    assert desc.startswith("repeat") and repeated.length_ql > long.length_ql
    assert len(repeated.parts[0]) > len(long.parts[0])
    ex, desc = vary_piece(long, "excerpt", rng)
    assert desc.startswith("excerpt") and ex.parts[0][0][0] == 0.0
    # another voicing of a 4-part setting: the melody (top voice) always kept, some other voices dropped
    satb = Piece("q", "bach", "", [long.parts[0]] + [[(0.0, 4.0, 60 - 5 * i, 80)] for i in range(3)], long.length_ql, "")
    for seed in range(6):
        v, desc = vary_piece(satb, "voices", np.random.default_rng(seed))
        assert desc.startswith("voices:S") and v.parts[0] == satb.parts[0] and 1 <= len(v.parts) < 4
    assert vary_piece(long, "voices", rng) == (long, "none")            # two parts: nothing to drop


def test_shard_key_changes_with_segmentation(tmp_path):
    """Shards cut with another hop or segment length must not be reused by extract/evaluate."""
    from avmatch.core.config import validate_params
    from pipelines.versions.paths import VersionsPaths
    from pipelines.versions.shared import shard_key as _shard_key

    def Params():
        return validate_params({}, systems=["versions"])

    params = Params()
    paths = VersionsPaths.from_params(params, tmp_path)
    paths.encoder.parent.mkdir(parents=True)
    paths.encoder.write_bytes(b"weights")
    key = _shard_key(params, paths)
    assert key == _shard_key(Params(), paths)
    other_hop = validate_params({"versions": {"audio": {"hop_s": 2.5}}}, systems=["versions"])
    assert _shard_key(other_hop, paths) != key
    paths.encoder.write_bytes(b"other weights")
    assert _shard_key(params, paths) != key


def _version_training_setup():
    from avmatch.versions.params import VerModelParams, VerTrainParams

    rng = np.random.default_rng(3)
    # 6 cliques of 2 versions: a shared random "tune" per clique plus per-version noise
    tunes = [rng.uniform(0, 2, (60, 84)) for _ in range(6)]
    feats = [(t + rng.uniform(0, 0.5, t.shape)).astype(np.float16) for t in tunes for _ in range(2)]
    cliques = [f"c{i // 2}" for i in range(12)]
    mp = VerModelParams(dim=16, channels=[8, 16])
    tp = VerTrainParams(cliques_per_batch=3, segments_per_track=2, max_steps=20, validate_every=5)
    return feats, cliques, mp, tp


def _val_score(feats):
    from avmatch.versions.training import embed_windows

    windows = np.stack([f[:40].T.astype(np.float32) for f in feats])

    def score(model, device) -> float:   # mean cosine of each clique's two versions
        e = embed_windows(model, windows, device)
        return float(np.mean(np.sum(e[0::2] * e[1::2], axis=1)))

    return score


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_version_training_is_fixed_by_seed_and_steps_not_by_time(tmp_path):
    """A slow run (sleeping at every log) under a generous safety limit keeps exactly the weights a fast run
    without a limit keeps, with the same losses, validation scores and best step."""
    import time

    from avmatch.versions.params import CQTParams
    from avmatch.versions.training import train_version_encoder

    feats, cliques, mp, tp = _version_training_setup()
    args = (feats, cliques, _val_score(feats))
    fast = train_version_encoder(*args, tp, mp, CQTParams(), 40, 5, "cpu", checkpoint_dir=tmp_path / "fast")
    slow = train_version_encoder(*args, tp.model_copy(update={"max_minutes": 0.5}), mp, CQTParams(), 40, 5, "cpu",
                                 log_fn=lambda m, step: time.sleep(0.05), checkpoint_dir=tmp_path / "slow")
    assert fast.steps == slow.steps == 20 and fast.history == slow.history
    assert (fast.best_step, fast.best_val_map) == (slow.best_step, slow.best_val_map)
    assert _same_state(fast.model, slow.model)


def test_version_time_limit_fails_loudly_and_a_rerun_resumes_the_same_sequence(tmp_path):
    from avmatch.core.training import TimeLimitReached
    from avmatch.versions.params import CQTParams
    from avmatch.versions.training import CHECKPOINT_NAME, train_version_encoder

    feats, cliques, mp, tp = _version_training_setup()
    args = (feats, cliques, _val_score(feats))
    reference = train_version_encoder(*args, tp, mp, CQTParams(), 40, 5, "cpu")   # no checkpoints at all

    class Killed(Exception):
        pass

    def kill_at_10(metrics, step):
        if step == 10:
            raise Killed()

    ckpt = tmp_path / CHECKPOINT_NAME
    with pytest.raises(Killed):  # logged before its checkpoint: the last one is at step 5
        train_version_encoder(*args, tp, mp, CQTParams(), 40, 5, "cpu", kill_at_10, checkpoint_dir=tmp_path)
    with pytest.raises(TimeLimitReached) as err:
        train_version_encoder(*args, tp.model_copy(update={"max_minutes": 1e-6}), mp, CQTParams(), 40, 5, "cpu",
                              checkpoint_dir=tmp_path)
    msg = str(err.value)
    assert err.value.steps == 5 and "5 of the configured max_steps=20" in msg
    assert "versions.train.max_minutes=1e-06" in msg and str(ckpt) in msg and "resume" in msg and "null" in msg
    assert torch.load(ckpt, weights_only=True)["step"] == 5
    done = train_version_encoder(*args, tp, mp, CQTParams(), 40, 5, "cpu", checkpoint_dir=tmp_path)
    assert done.resumed_from_step == 5 and done.steps == 20
    assert done.history == reference.history
    assert (done.best_step, done.best_val_map) == (reference.best_step, reference.best_val_map)
    assert _same_state(done.model, reference.model)
    # a checkpoint made for another validation is not resumed: its best-so-far weights were chosen by that one
    other = train_version_encoder(*args, tp, mp, CQTParams(), 40, 5, "cpu", checkpoint_dir=tmp_path, val_id="other")
    assert other.resumed_from_step is None and other.steps == 20


def test_version_training_runs_on_its_configured_threads_whatever_the_process_had(tmp_path):
    """The trained weights must not depend on the machine's cores: the trainer sets `train.threads` itself, so
    runs started from processes with different thread counts train the same weights on the same count."""
    from avmatch.versions.params import CQTParams
    from avmatch.versions.training import train_version_encoder

    feats, cliques, mp, tp = _version_training_setup()
    tp = tp.model_copy(update={"threads": 2, "max_steps": 6})
    args = (feats, cliques, _val_score(feats))
    before = torch.get_num_threads()
    try:
        runs = []
        for process_threads in (1, 3):
            torch.set_num_threads(process_threads)
            runs.append(train_version_encoder(*args, tp, mp, CQTParams(), 40, 5, "cpu",
                                              checkpoint_dir=tmp_path / str(process_threads)))
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert runs[0].history == runs[1].history and _same_state(runs[0].model, runs[1].model)


def test_distillation_term_asks_for_the_teachers_order_and_teacher_matrix_is_symmetric():
    from avmatch.versions.distill import distill_loss, teacher_distances

    torch.manual_seed(0)
    t = torch.rand(6, 6)
    t = (t + t.T) / 2
    t.fill_diagonal_(0)
    assert distill_loss(3 * t + 1, t) < 1e-5              # an increasing affine map of the teacher: nothing to learn
    assert distill_loss(-t, t) > 0.1                       # the reverse order costs
    holes = t.clone()
    holes[0, 1] = holes[1, 0] = float("nan")               # a pair the teacher did not align is left out
    s = (3 * t + 1).clone()
    s[0, 1] = s[1, 0] = 100.0
    assert distill_loss(s, holes) < distill_loss(s, t)
    student = torch.rand(6, 6, requires_grad=True)
    before = distill_loss(student, t)
    before.backward()
    with torch.no_grad():
        after = distill_loss(student - 0.5 * student.grad, t)
    assert after < before

    # both directions averaged, a pair that never aligns gets the largest finite distance, `pairs` subsamples
    calls = []

    def fake(a, b):
        calls.append(1)
        x, y = float(a.sum()), float(b.sum())
        return (float("inf"), float("inf")) if {x, y} == {0.0, 1.5} else (x + y, 2 * (x + y))

    chroma = [np.full((2, 12), v / 24, np.float32) for v in (0.0, 1.0, 3.0)]
    d = teacher_distances(chroma, fake, pool=2)
    assert len(calls) == 3 and np.allclose(d, d.T) and np.allclose(np.diag(d), 0)
    assert np.isclose(d[0, 1], 0.75) and np.isclose(d[1, 2], 3.0) and np.isclose(d[0, 2], 3.0)
    part = teacher_distances(chroma, fake, pairs=[(0, 1)])
    assert np.isnan(part[1, 2]) and np.isclose(part[0, 1], 1.5)


def test_version_training_with_distillation_needs_the_teacher_and_uses_it():
    from avmatch.versions.params import CQTParams
    from avmatch.versions.training import train_version_encoder

    feats, cliques, mp, tp = _version_training_setup()
    tp = tp.model_copy(update={"max_steps": 2, "distill_weight": 1.0})
    with pytest.raises(ValueError, match="teacher"):
        train_version_encoder(feats, cliques, None, tp, mp, CQTParams(), 40, 5, "cpu")
    teacher = np.abs(np.subtract.outer(np.arange(12.0), np.arange(12.0))).astype(np.float32)
    run = train_version_encoder(feats, cliques, None, tp, mp, CQTParams(), 40, 5, "cpu", teacher=teacher)
    plain = train_version_encoder(feats, cliques, None, tp.model_copy(update={"distill_weight": 0.0}), mp,
                                  CQTParams(), 40, 5, "cpu")
    assert all(h["distill"] > 0 for h in run.history) and "distill" not in plain.history[0]
    assert [h["loss"] for h in run.history] != [h["loss"] for h in plain.history]
    with pytest.raises(ConfigError):
        validate_params({"versions": {"train": {"distill_weight": -1.0}}})
