"""Short real trainings of the fingerprint encoder on synthesised music (melody + chords + bass + drums)."""

import logging

import numpy as np
import pytest
import torch

from avmatch.core.config import CommonParams
from avmatch.core.training import TimeLimitReached
from avmatch.fingerprint.model import FingerprintEncoder, load_encoder, save_encoder
from avmatch.fingerprint.params import (
    FpAudioParams,
    FpAugmentParams,
    FpModelParams,
    FpTrainParams,
)
from avmatch.fingerprint.training import (
    CHECKPOINT_NAME,
    PairStream,
    ValidationSet,
    config_hash,
    train_fingerprinter,
)

SR = 8000
SMALL = FpModelParams(dim=64, channels=[8, 16, 32, 32, 64, 64, 128, 128], head_hidden=16)
CPU = CommonParams(device="cpu", seed=11, num_threads=0)


def synth_track(seed: int, seconds: float) -> np.ndarray:
    """A little piece: a melody over chords and a bass line in a random key and tempo, plus drums."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n, dtype=np.float64)
    beat = 60.0 / rng.uniform(80, 150)
    key = rng.integers(45, 57)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    t_env = np.arange(int(4 * beat * SR)) / SR

    def note(midi: float, start: float, dur: float, amp: float, harmonics: int, decay: float) -> None:
        i0 = int(start * SR)
        m = min(int(dur * SR), n - i0)
        if m <= 0:
            return
        tt = t_env[:m] if m <= len(t_env) else np.arange(m) / SR
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        sig = sum((0.6 ** h) * np.sin(2 * np.pi * f0 * (h + 1) * tt + rng.uniform(0, 6.28)) for h in range(harmonics)
                  if f0 * (h + 1) < SR / 2)
        env = np.minimum(1.0, tt / 0.01) * np.exp(-tt / decay)
        out[i0 : i0 + m] += amp * sig * env

    t = 0.0
    while t < seconds:
        root = key + scale[rng.integers(7)]
        for k in (0, 4, 7):
            note(root + k, t, 4 * beat, 0.12, 4, 2.0)
        note(root - 12, t, 2 * beat, 0.25, 3, 0.6)
        note(root - 12 + 7, t + 2 * beat, 2 * beat, 0.2, 3, 0.6)
        for b in range(8):
            if rng.random() < 0.8:
                note(key + 12 + scale[rng.integers(7)] + 12 * rng.integers(0, 2), t + b * beat / 2,
                     beat / 2, 0.2, 5, 0.25)
            i0 = int((t + b * beat / 2) * SR)
            m = min(int(0.05 * SR), n - i0)
            if m > 0:
                out[i0 : i0 + m] += 0.15 * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.01 * SR))
        t += 4 * beat
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def synth_noise(seed: int, seconds: float = 6.0) -> np.ndarray:
    """Background noise: coloured noise, babble-like formant buzz or hum, depending on the seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    kind = seed % 3
    if kind == 0:  # brown-ish noise
        x = np.cumsum(rng.standard_normal(n))
        x -= np.convolve(x, np.ones(400) / 400, mode="same")
    elif kind == 1:  # babble: several buzzes with random pitch glides and syllable-rate gating
        tt = np.arange(n) / SR
        x = np.zeros(n)
        for _ in range(4):
            f = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * tt))
            ph = 2 * np.pi * np.cumsum(f) / SR
            x += np.sign(np.sin(ph)) * (np.sin(2 * np.pi * rng.uniform(3, 6) * tt + rng.uniform(0, 6)) > 0)
    else:  # hum + hiss
        tt = np.arange(n) / SR
        x = np.sin(2 * np.pi * 50 * tt) + 0.5 * np.sin(2 * np.pi * 150 * tt) + 0.3 * rng.standard_normal(n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def tracks() -> list[np.ndarray]:
    return [synth_track(s, 30.0) for s in range(8)]


@pytest.fixture(scope="module")
def noises() -> list[np.ndarray]:
    return [synth_noise(s) for s in range(6)]


def _tp(**kw) -> FpTrainParams:
    base = dict(batch_size=32, lr=2e-3, max_steps=150, max_minutes=5.0, checkpoint_every=1000, validate_every=1000,
                num_workers=0, augment=FpAugmentParams(snr_db=(5.0, 15.0)))
    base.update(kw)
    return FpTrainParams(**base)


def test_pair_stream_batches(tracks, noises):
    ps = PairStream(tracks, noises, SR, 1.0, FpAugmentParams(), batch_size=16, seed=0)
    a, p = ps.make_batch(np.random.default_rng(0))
    assert a.shape == p.shape == (16, SR) and a.dtype == p.dtype == torch.float32
    assert torch.isfinite(p).all() and float(p.abs().max()) <= 1.0
    assert (a.pow(2).mean(1).sqrt() > 10 ** (-50 / 20)).all(), "silent anchors"
    assert not torch.allclose(a, p)
    a2, _ = ps.make_batch(np.random.default_rng(0))
    assert torch.equal(a, a2), "batches are reproducible from the seed"
    first = next(iter(ps))
    assert first[0].shape == (16, SR)


def test_training_beats_untrained_encoder(tracks, noises, tmp_path):
    """Can fail: ~120 contrastive steps must clearly improve degraded-segment top-1 over random weights."""
    val = ValidationSet(tracks, noises[3:], FpAudioParams(), FpAugmentParams(), n_queries=300, seed=5)
    torch.manual_seed(CPU.seed)
    untrained = FingerprintEncoder.from_params(SMALL, *_front())
    before = val.evaluate(untrained, torch.device("cpu"))["val_top1"]
    logged = []
    res = train_fingerprinter(tracks, noises[:3], checkpoint_dir=tmp_path, train_params=_tp(max_steps=120),
                              model_params=SMALL,
                              common_params=CPU, log=lambda m, s: logged.append((s, m)))
    after = val.evaluate(res.model, torch.device("cpu"))["val_top1"]
    assert res.steps == 120 and res.resumed_from_step is None
    losses = [h["loss"] for h in res.history if h.get("loss") is not None]
    assert losses[-1] < losses[0]
    assert logged and all(isinstance(s, int) for s, _ in logged)
    print(f"untrained top1 {before:.3f} -> trained {after:.3f} in {res.seconds:.0f} s")
    assert after >= before + 0.2, (before, after)
    assert after >= 0.35, (before, after)


def _front():
    from avmatch.fingerprint.params import LogMelParams
    return LogMelParams(), FpAudioParams()


class _Killed(Exception):
    pass


def test_checkpoint_resume_and_config_mismatch(tracks, noises, tmp_path, caplog):
    tp = _tp(max_steps=20, batch_size=8, checkpoint_every=5, validate_every=5)
    val = tracks[:1]

    def kill_at_10(metrics, step):
        if step == 10 and "val_top1" in metrics:
            raise _Killed()

    with pytest.raises(_Killed):
        train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=tp, model_params=SMALL,
                            common_params=CPU, log=kill_at_10, val_audio=val)
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["step"] == 10
    assert ckpt["config_hash"] == config_hash(tp, SMALL, *_front(), CPU.seed, tracks, noises)

    res = train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=tp, model_params=SMALL,
                              common_params=CPU, val_audio=val)
    assert res.resumed_from_step == 10 and res.steps == 20
    steps = [h["step"] for h in res.history]
    assert steps == sorted(steps) and steps[0] <= 10 and steps[-1] == 20
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 20

    # a finished run is not trained again
    again = train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=tp, model_params=SMALL,
                                common_params=CPU)
    assert again.resumed_from_step == 20 and again.steps == 20
    for k, v in again.model.state_dict().items():
        assert torch.equal(v.cpu(), res.model.state_dict()[k].cpu())

    # other parameters: start fresh and say why
    caplog.set_level(logging.WARNING, logger="avmatch.fingerprint.training")
    fresh = train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=tp.model_copy(update={"lr": 1e-3}),
                                model_params=SMALL, common_params=CPU)
    assert fresh.resumed_from_step is None and fresh.steps == 20
    assert "starting fingerprint training fresh" in caplog.text and "config_hash" in caplog.text

    # the final model file round-trips with weights_only loading
    path = save_encoder(fresh.model, tmp_path / "model.pt", {"steps": fresh.steps})
    loaded = load_encoder(path)
    x = torch.from_numpy(tracks[0][:SR].copy()).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), fresh.model.cpu().eval()(x))


def test_corrupt_checkpoint_starts_fresh(tracks, noises, tmp_path, caplog):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    caplog.set_level(logging.WARNING, logger="avmatch.fingerprint.training")
    res = train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=_tp(max_steps=3, batch_size=4),
                              model_params=SMALL, common_params=CPU)
    assert res.steps == 3 and res.resumed_from_step is None
    assert "unreadable" in caplog.text


# one intra-op thread: runs compared bit for bit must not differ by the float noise of thread splits
ONE_THREAD = CommonParams(device="cpu", seed=11, num_threads=1)


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def _losses(history) -> list[float]:
    return [h["loss"] for h in history if h.get("loss") is not None]


@pytest.fixture(scope="module")
def reference_run(tracks, noises, tmp_path_factory):
    """12 uninterrupted steps in the main process: what every other way of running must reproduce."""
    return train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path_factory.mktemp("fp_ref"),
                               train_params=_tp(max_steps=12, batch_size=8, num_workers=0),
                               model_params=SMALL, common_params=ONE_THREAD)


def test_same_seed_and_steps_give_the_same_weights_with_any_workers(tracks, noises, reference_run, tmp_path):
    """Two DataLoader worker processes make the batches in whatever order the OS runs them, yet step s gets
    the batch seeded by s: the weights are those of the single-process run, bit for bit."""
    two = train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path / "w2",
                              train_params=_tp(max_steps=12, batch_size=8, num_workers=2),
                              model_params=SMALL, common_params=ONE_THREAD)
    assert two.steps == reference_run.steps == 12
    assert _losses(two.history) == _losses(reference_run.history)
    assert _weights_equal(two.model, reference_run.model)
    # another intra-op thread count (train.threads, which the trainer sets whatever the process had) changes
    # only the float rounding of the reductions
    threads = train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path / "t2",
                                  train_params=_tp(max_steps=12, batch_size=8, num_workers=0, threads=2),
                                  model_params=SMALL, common_params=ONE_THREAD)
    assert torch.get_num_threads() == 2
    ref = reference_run.model.state_dict()
    for k, v in threads.model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-4)


def test_time_limit_fails_loudly_and_a_rerun_resumes_the_same_sequence(tracks, noises, reference_run, tmp_path):
    tp = _tp(max_steps=12, batch_size=8, num_workers=0, validate_every=4)

    def kill_at_8(metrics, step):
        if step == 8 and "val_top1" in metrics:
            raise _Killed()

    with pytest.raises(_Killed):  # a checkpoint at step 8, as a killed run leaves it
        train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=tp.model_copy(update={
            "checkpoint_every": 4}), model_params=SMALL, common_params=ONE_THREAD, log=kill_at_8, val_audio=tracks[:1])
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 8

    # a limit far shorter than one step: the run stops at once, keeps its checkpoint and fails saying so
    with pytest.raises(TimeLimitReached) as err:
        train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=tp.model_copy(update={
            "max_minutes": 1e-6}), model_params=SMALL, common_params=ONE_THREAD)
    msg = str(err.value)
    assert err.value.steps == 8 and "8 of the configured max_steps=12" in msg
    assert "fingerprint.train.max_minutes=1e-06" in msg and str(tmp_path / CHECKPOINT_NAME) in msg
    assert "resume" in msg and "null" in msg
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 8

    # the limit removed: the rerun resumes (the limit is not part of the config hash) and finishes with
    # exactly the weights, losses and learning rates of the run that was never interrupted
    res = train_fingerprinter(tracks, noises, checkpoint_dir=tmp_path, train_params=tp, model_params=SMALL,
                              common_params=ONE_THREAD)
    assert res.resumed_from_step == 8 and res.steps == 12
    assert _weights_equal(res.model, reference_run.model)
    assert _losses(res.history) == _losses(reference_run.history)
    lrs = [(h["step"], h["lr"]) for h in res.history if h.get("lr") is not None]
    assert lrs == [(h["step"], h["lr"]) for h in reference_run.history if h.get("lr") is not None]


def test_missing_noise_is_an_error(tracks, tmp_path):
    with pytest.raises(ValueError, match="noise_audio is empty"):
        train_fingerprinter(tracks, [], checkpoint_dir=tmp_path, train_params=_tp(max_steps=1))
