"""The copy detection frame descriptor by kind (`avmatch.copydetect.descriptor`, params copydetect.descriptor):
its size, unit norm and the cosine identity of trained_dct; the params' validation messages; a database that
refuses references or queries described with another descriptor than its own."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from avmatch.copydetect.descriptor import (
    DescriptorMismatch,
    DescriptorSpec,
    encoder_part,
    frame_describer,
)


@pytest.fixture(scope="module")
def encoder():
    import torch

    from avmatch.copydetect.model import FrameEncoder

    torch.manual_seed(0)
    return FrameEncoder(32, [8, 16], 32).eval()


def _frames(n: int, seed: int = 0) -> np.ndarray:
    """Blocky random pictures (the DCT part needs structure, the colour part colours)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 8, 8, 3)).astype(np.uint8).repeat(8, 1).repeat(8, 2)


def test_trained_dct_is_a_unit_vector_whose_cosine_mixes_the_two(encoder):
    from avmatch.copydetect.dct_colour import DIM, dct_colour_descriptors
    from avmatch.copydetect.model import embed_frames

    frames = _frames(7)
    t, d = embed_frames(encoder, frames), dct_colour_descriptors(frames)
    for w in (0.5, 2.0):
        spec = DescriptorSpec("trained_dct", w)
        x = frame_describer(spec, encoder)(frames)
        assert x.shape == (7, 32 + DIM) == (7, spec.dim(32)) and x.dtype == np.float32
        assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
        # a frame pair's cosine = (trained cosine + w × DCT/colour cosine) / (1 + w)
        assert np.allclose(x @ x.T, (t @ t.T + w * (d @ d.T)) / (1 + w), atol=1e-5)
        assert np.allclose(encoder_part(x, 32), t, atol=1e-5)   # the evaluate stage's "trained alone" row
    plain = frame_describer(DescriptorSpec("trained"), encoder)(frames)
    assert plain.shape == (7, 32) and np.array_equal(plain, t)
    assert frame_describer(DescriptorSpec("trained_dct"), encoder)(frames[:0]).shape == (0, 32 + DIM)


def test_spec_record_and_the_constants_params_cannot_import():
    from avmatch.copydetect import dct_colour, params, vsc_npz

    assert params.DCT_COLOUR_DIM == dct_colour.DIM and params.VSC22_MAX_DIM == vsc_npz.MAX_DIM
    assert DescriptorSpec.from_record(None) == DescriptorSpec("trained")     # databases older than the option
    assert DescriptorSpec("trained", 3.0).record() == DescriptorSpec("trained").record()   # weight unused there
    assert DescriptorSpec.from_record(DescriptorSpec("trained_dct", 0.5).record()) == DescriptorSpec("trained_dct", 0.5)
    with pytest.raises(ValueError, match="unknown copy detection descriptor kind 'dct'"):
        DescriptorSpec("dct")


def test_params_validation_names_the_key():
    from avmatch.core.config import ConfigError, validate_params

    ok = validate_params({"copydetect": {"descriptor": {"kind": "trained"}}}, systems=["copydetect"])
    assert ok.copydetect.descriptor.kind == "trained"
    with pytest.raises(ConfigError, match=r"copydetect\.descriptor\.kind = 'trained_dtc'.*'trained' or 'trained_dct'"):
        validate_params({"copydetect": {"descriptor": {"kind": "trained_dtc"}}}, systems=["copydetect"])
    with pytest.raises(ConfigError, match=r"copydetect\.descriptor\.dct_weight"):
        validate_params({"copydetect": {"descriptor": {"dct_weight": 0}}}, systems=["copydetect"])
    # 400 + 135 > 512 (β 0 by default: no normalisation dimension): the VSC22 limit, with what to do
    with pytest.raises(ConfigError, match=r"trained_dct with model\.dim 400 gives 535-d .*use kind trained"):
        validate_params({"copydetect": {"model": {"dim": 400}}}, systems=["copydetect"])
    with pytest.raises(ConfigError, match=r"model\.dim 377 gives 513-d"):   # the normalisation dimension counts
        validate_params({"copydetect": {"model": {"dim": 377}, "candidates": {"beta": 0.25}}}, systems=["copydetect"])
    validate_params({"copydetect": {"model": {"dim": 377}}}, systems=["copydetect"])
    validate_params({"copydetect": {"model": {"dim": 400}, "descriptor": {"kind": "trained"}}}, systems=["copydetect"])


@pytest.fixture()
def trained_dct_db(tmp_path, encoder):
    """A database of two references described with trained_dct (w 0.5), no noise set."""
    from avmatch.copydetect.database import CopyDB, settings_from
    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.copydetect.model import save_frame_encoder

    spec = DescriptorSpec("trained_dct", 0.5)
    enc = save_frame_encoder(encoder, tmp_path / "encoder.pt")
    describe = frame_describer(spec, encoder)
    refs = [VideoFeatures(f"R{i}", np.stack([np.arange(4.0), np.arange(4.0) + 1], 1), describe(_frames(4, i)))
            for i in range(2)]
    settings = settings_from(fps=1.0, frame_size=64, beta=0.0, k=5, max_pairs_per_query=5, localise={},
                             descriptor=spec, verify={})
    return CopyDB.create(tmp_path / "db", enc, refs, [], settings)


def test_database_refuses_another_descriptor(trained_dct_db, tmp_path):
    from avmatch.cli import app
    from avmatch.copydetect.database import CopyDB
    from avmatch.copydetect.db_build import add_references

    db = CopyDB.load(trained_dct_db.root)
    assert db.descriptor == DescriptorSpec("trained_dct", 0.5)
    with pytest.raises(DescriptorMismatch, match=r"built with the trained_dct \(dct_weight 0.5\) descriptor, not trained"):
        add_references(db.root, [str(tmp_path / "new.mp4")], descriptor=DescriptorSpec("trained"))
    with pytest.raises(DescriptorMismatch, match="not trained_dct \\(dct_weight 1\\)"):
        db.query(tmp_path / "q.mp4", descriptor=DescriptorSpec("trained_dct", 1.0))
    # the commands say it and stop (exit 2) before reading any video
    r = CliRunner().invoke(app, ["copydetect", "query", str(tmp_path / "q.mp4"), "--db", str(db.root),
                                 "--descriptor", "trained"])
    assert r.exit_code == 2 and "a database keeps one descriptor" in r.stderr, r.output
    r = CliRunner().invoke(app, ["copydetect", "add", str(tmp_path / "new.mp4"), "--db", str(db.root),
                                 "--descriptor", "trained_dct", "--dct-weight", "2"])
    assert r.exit_code == 2 and "not trained_dct (dct_weight 2)" in r.stderr, r.output
    r = CliRunner().invoke(app, ["copydetect", "query", str(tmp_path / "q.mp4"), "--db", str(db.root),
                                 "--descriptor", "trained", "--dct-weight", "2"])
    assert r.exit_code == 2 and "--dct-weight needs --descriptor trained_dct" in r.stderr, r.output
    assert CopyDB.load(db.root).settings == db.settings    # nothing was published
