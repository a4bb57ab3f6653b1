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
    WhiteningMissing,
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


def test_mirror_averaged_and_whitened_descriptors(encoder, tmp_path):
    """mirror: one descriptor per frame, the same for the mirrored frame; whitening: fitted on training descriptors
    (decorrelated and equalised there at power 1), applied by the one describer, recorded and checked."""
    from avmatch.copydetect.descriptor import Whitening, WhiteningMissing, mirror_frames, whiten_sets
    from avmatch.copydetect.metrics import VideoFeatures

    frames = _frames(6, 1)
    mirrored = DescriptorSpec("trained_dct", 0.5, mirror=True)
    x = frame_describer(mirrored, encoder)(frames)
    assert x.shape == (6, mirrored.dim(32)) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.allclose(frame_describer(mirrored, encoder)(mirror_frames(frames)), x, atol=1e-4)
    plain = frame_describer(DescriptorSpec("trained_dct", 0.5), encoder)
    assert not np.allclose(plain(mirror_frames(frames)), plain(frames), atol=1e-2)   # the plain one is not

    full = DescriptorSpec("trained_dct", 0.5, whiten_power=1.0, whiten_shrink=0.0)
    train = plain(_frames(400, 2))
    w = Whitening.fit(train, full, "abc")
    y = ((train - w.mean) @ w.projection)[:, :60]    # the leading components (the frames span fewer than 167)
    assert np.allclose(np.cov(y.T), np.eye(60), atol=1e-2)   # whitened on the training frames
    with pytest.raises(WhiteningMissing, match="needs its fitted whitening"):
        frame_describer(full, encoder)
    described = frame_describer(full, encoder, whitening=w)(frames)
    assert np.allclose(described, w.apply(plain(frames)), atol=1e-5)
    assert np.allclose(np.linalg.norm(described, axis=1), 1.0, atol=1e-5)
    # saved and loaded; fitted for one descriptor and encoder, refused for another
    back = Whitening.load(w.save(tmp_path / "w.npz"))
    assert np.array_equal(back.projection, w.projection) and back.check("w", full, "abc") is back
    with pytest.raises(DescriptorMismatch, match="fitted for the trained_dct .*whitened.* not trained_dct"):
        back.check("w", DescriptorSpec("trained_dct", 0.5), "abc")
    with pytest.raises(DescriptorMismatch, match="of encoder abc"):
        back.check("w", full, "other")
    # the record keeps the post-processing (and an older record stays what it was)
    post = DescriptorSpec("trained_dct", 0.5, True, 0.5, 0.1)
    assert DescriptorSpec.from_record(post.record()) == post and post.record() != mirrored.record()
    assert DescriptorSpec("trained_dct", 0.5).record() == {"kind": "trained_dct", "dct_weight": 0.5}
    assert post.label == "trained_dct (dct_weight 0.5, mirror-averaged, whitened (power 0.5, shrink 0.1))"
    assert post.unwhitened() == DescriptorSpec("trained_dct", 0.5, True)
    # whiten_sets: fitted on refs + noise only (moving a query changes nothing)
    vf = [VideoFeatures(f"V{i}", np.zeros((100, 2)), train[100 * i:100 * (i + 1)]) for i in range(4)]
    fit, sets = whiten_sets(post, "abc", {"queries": vf[:1], "refs": vf[1:3], "noise": vf[3:]})
    fit2, _ = whiten_sets(post, "abc", {"queries": vf[1:2], "refs": vf[1:3], "noise": vf[3:]})
    assert np.array_equal(fit.projection, fit2.projection)
    assert np.allclose(sets["queries"][0].features, fit.apply(train[:100]))
    with pytest.raises(ValueError, match=r"whiten_power must be in \[0, 1\]"):
        DescriptorSpec("trained", whiten_power=2)


def test_database_keeps_its_whitening(tmp_path, encoder):
    """A whitened database keeps the fitted whitening beside its encoder, gives it back, and is named damaged
    without it; a new database takes the project's fit only when it was fitted for that encoder."""
    from avmatch.copydetect.database import WHITENING_FILE, CopyDB, settings_from
    from avmatch.copydetect.db_build import WHITENING_REL, whitening_for
    from avmatch.copydetect.descriptor import Whitening, WhiteningMissing
    from avmatch.copydetect.metrics import VideoFeatures
    from avmatch.copydetect.model import save_frame_encoder
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.core.hashing import file_hash

    spec = DescriptorSpec("trained_dct", 0.5, True, 0.5, 0.1)
    project = tmp_path / "proj"
    (project / "models/copydetect").mkdir(parents=True)
    (project / "params.yaml").write_text("copydetect: {}\n")
    enc = save_frame_encoder(encoder, project / "models/copydetect/encoder.pt")
    with pytest.raises(WhiteningMissing, match="needs the whitening fitted"):
        whitening_for(enc, spec)
    # a new database's descriptor from the project's params.yaml: the defaults (whitened) when it names none; a
    # descriptor section older than the post-processing options (the shipped params.yaml's) describes none
    from avmatch.copydetect.db_build import _project_settings

    assert _project_settings(project)["descriptor"] == spec.record()
    (project / "params.yaml").write_text("copydetect: {descriptor: {kind: trained_dct, dct_weight: 0.5}}\n")
    assert _project_settings(project)["descriptor"] == {"kind": "trained_dct", "dct_weight": 0.5}
    assert whitening_for(enc, DescriptorSpec("trained_dct", 0.5)) is None
    raw = frame_describer(spec.unwhitened(), encoder)(_frames(50, 3))
    Whitening.fit(raw, spec, "another encoder").save(project / WHITENING_REL)
    with pytest.raises(DescriptorMismatch, match="of encoder another enc"):
        whitening_for(enc, spec)
    w = Whitening.fit(raw, spec, file_hash(enc))
    saved = w.save(project / WHITENING_REL)
    assert whitening_for(enc, spec) == saved
    refs = [VideoFeatures("R0", np.stack([np.arange(4.0), np.arange(4.0) + 1], 1), w.apply(raw[:4]))]
    settings = settings_from(fps=1.0, frame_size=64, beta=0.0, k=5, max_pairs_per_query=5, localise={},
                             descriptor=spec, verify={})
    db = CopyDB.create(tmp_path / "db", enc, refs, [], settings, whitening=project / WHITENING_REL)
    assert db.descriptor == spec and np.array_equal(db.load_whitening().projection, w.projection)
    good = db.whitening.read_bytes()
    db.whitening.write_bytes(b"not a whitening")      # a damaged fit is named when the database is opened,
    with pytest.raises(DamagedDatabase, match=f"{WHITENING_FILE}: has 15 bytes where"):   # the snapshot store's check
        CopyDB.load(db.root)
    db.whitening.write_bytes(good)
    (project / WHITENING_REL).write_bytes(b"truncated")   # and a damaged project fit when a database is built
    with pytest.raises(WhiteningMissing, match="not a copy detection whitening file.*dvc repro copydetect_extract"):
        whitening_for(enc, spec)
    w.save(project / WHITENING_REL)
    db.whitening.unlink()
    with pytest.raises(DamagedDatabase, match=f"{WHITENING_FILE}: is missing"):
        CopyDB.load(db.root)
    with pytest.raises(ValueError, match=f"a whitened descriptor needs its fitted whitening .{WHITENING_FILE}"):
        CopyDB.create(tmp_path / "db2", enc, refs, [], settings)     # never published without it
