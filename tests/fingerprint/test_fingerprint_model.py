import math

import numpy as np
import pytest
import torch

from avmatch.core.device import (
    DeviceError,
    resolve_device,
    seed_everything,
    set_threads,
)
from avmatch.core.losses import koleo, nt_xent, triplet_semi_hard
from avmatch.fingerprint.model import (
    FingerprintEncoder,
    embed_segments,
    load_encoder,
    model_file_params,
    save_encoder,
)
from avmatch.fingerprint.params import FpAudioParams, FpModelParams, LogMelParams

SMALL = FpModelParams(dim=32, channels=[8, 8, 16, 16, 32, 32, 64, 64], head_hidden=8)


def _model(params: FpModelParams = SMALL) -> FingerprintEncoder:
    torch.manual_seed(0)
    return FingerprintEncoder.from_params(params, LogMelParams(), FpAudioParams())


def _audio(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy((np.random.default_rng(seed).standard_normal((n, 8000)) * 0.1).astype(np.float32))


def test_default_model_shape_and_unit_norm():
    m = _model(FpModelParams()).eval()
    with torch.no_grad():
        z = m(_audio(4))
    assert z.shape == (4, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    assert m.flat_shape[1:] == (1, 1)


def test_eval_is_batch_independent_and_deterministic():
    m = _model().eval()
    x = _audio(5)
    with torch.no_grad():
        full = m(x)
        torch.testing.assert_close(m(x[2:3]), full[2:3], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m(x), full)


def test_head_handles_flat_size_not_multiple_of_dim():
    m = _model(FpModelParams(dim=24, channels=[8, 16, 40], head_hidden=4)).eval()
    with torch.no_grad():
        z = m(_audio(2))
    assert z.shape == (2, 24)


def test_gradients_reach_every_parameter():
    m = _model().train()
    z = m(_audio(6))
    nt_xent(z[:3], z[3:], 0.1).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_embed_segments_batches_and_dtype():
    m = _model()
    x = _audio(7)
    out = embed_segments(m, x, batch_size=3, device="cpu")
    assert out.dtype == np.float32 and out.shape == (7, 32)
    ref = embed_segments(m, x.numpy(), batch_size=100, device=torch.device("cpu"))
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert not m.training


def test_save_load_roundtrip_weights_only(tmp_path):
    m = _model()
    m.train()
    m(_audio(8))  # move BatchNorm running stats away from their init
    path = save_encoder(m, tmp_path / "fp" / "model.pt", {"trained_steps": 12, "note": ("tuple", 1)})
    blob = torch.load(path, weights_only=True)  # nothing but tensors and primitives
    assert blob["params"]["trained_steps"] == 12
    loaded = load_encoder(path, "cpu")
    assert not loaded.training
    x = _audio(3, seed=5)
    np.testing.assert_allclose(embed_segments(loaded, x), embed_segments(m, x), atol=1e-6)
    assert model_file_params(path)["hparams"]["model"]["channels"] == SMALL.channels


def test_load_encoder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"hello": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not an avmatch fingerprint model"):
        load_encoder(bad)


# ---------------------------------------------------------------- losses
def test_nt_xent_prefers_matching_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    noisy = torch.nn.functional.normalize(a + 0.05 * torch.randn(16, 32, generator=g), dim=1)
    shuffled = noisy[torch.randperm(16, generator=g)]
    assert float(nt_xent(a, noisy, 0.1)) < 0.1 < float(nt_xent(a, shuffled, 0.1))


def test_nt_xent_known_value():
    # two orthogonal pairs, identical within a pair: logits 1/t for the partner, 0 for the other two
    a = torch.eye(2)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2.0))
    assert float(nt_xent(a, a.clone(), t)) == pytest.approx(expected, rel=1e-5)


def test_triplet_semi_hard():
    a = torch.eye(4)
    assert float(triplet_semi_hard(a, a.clone(), margin=0.3)) == 0.0  # d_ap 0, negatives at distance 2
    # positives swapped: every positive is as far as the negatives -> loss = margin (semi-hard) or more
    loss = triplet_semi_hard(a, a[[1, 0, 3, 2]], margin=0.3)
    assert float(loss) >= 0.3 - 1e-6
    x = torch.randn(8, 16, requires_grad=True)
    triplet_semi_hard(torch.nn.functional.normalize(x[:4]), torch.nn.functional.normalize(x[4:]), 0.5).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError):
        nt_xent(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        triplet_semi_hard(torch.zeros(3), torch.zeros(3))


# ---------------------------------------------------------------- device helpers
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no usable CUDA"):
            resolve_device("cuda")


def test_seed_and_threads():
    seed_everything(3)
    a = torch.rand(3), np.random.rand()
    seed_everything(3)
    assert torch.equal(a[0], torch.rand(3)) and a[1] == np.random.rand()
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) >= 1
    finally:
        torch.set_num_threads(before)


def test_koleo_prefers_spread_embeddings():
    """The entropy regulariser is lower for spread-out vectors than for a tight cluster, and its gradient
    pushes the nearest neighbours apart."""
    g = torch.Generator().manual_seed(0)
    spread = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)
    tight = torch.nn.functional.normalize(torch.ones(16, 8) + 0.05 * torch.randn(16, 8, generator=g), dim=1)
    assert koleo(spread) < koleo(tight)
    z = tight.clone().requires_grad_(True)
    koleo(z).backward()
    moved = torch.nn.functional.normalize(z - 0.01 * z.grad, dim=1)
    assert koleo(moved) < koleo(tight)
    with pytest.raises(ValueError):
        koleo(torch.ones(1, 8))
