"""`avmatch copydetect add` / `query` on a folder of videos outside the project, run from another folder:
the project's encoder is found through $AVMATCH_ROOT, adds are incremental, bad files are reported by
name with a non-zero exit while the others are processed, and the matches come out as a VSC22 CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avmatch.cli import app
from avmatch.copydetect.metrics import MATCH_COLUMNS
from avmatch.core.video import encode_video

FPS = 4


def _clip(seed: int, seconds: int) -> np.ndarray:
    """A pan over a smooth random picture of its own colours: footage unlike the other clips."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 255, (12, 24, 3)).astype(np.uint8).repeat(16, 0).repeat(16, 1)  # 192 x 384 blocks
    return np.stack([big[:, int(t * 4): int(t * 4) + 192][:96:, ::2][:, :96] for t in range(seconds * FPS)])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    import torch

    from avmatch.copydetect.model import FrameEncoder, save_frame_encoder

    root = tmp_path_factory.mktemp("cd_user")
    proj = root / "proj"                       # an avmatch project with a trained encoder (here: a seeded one)
    (proj / "models/copydetect").mkdir(parents=True)
    (proj / "params.yaml").write_text("copydetect:\n  frames: {fps: 1.0, size: 64}\n"
                                      "  candidates: {k: 5, beta: 0.25}\n  localise: {floor: 0.5}\n")
    torch.manual_seed(0)
    enc = save_frame_encoder(FrameEncoder(32, [8, 16], 32).eval(), proj / "models/copydetect/encoder.pt")
    # the whitening of the default descriptor, as the project's extract stage fits it (references + noise frames)
    from avmatch.copydetect.db_build import WHITENING_REL
    from avmatch.copydetect.descriptor import DescriptorSpec, Whitening, frame_describer
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.copydetect.params import CdDescriptorParams
    from avmatch.core.hashing import file_hash

    spec = DescriptorSpec.from_params(CdDescriptorParams())
    train = frame_describer(spec.unwhitened(), load_frame_encoder(enc))(np.concatenate([_clip(s, 4) for s in (1, 2, 3, 50)]))
    Whitening.fit(train, spec, file_hash(enc)).save(proj / WHITENING_REL)
    refs = root / "my videos"                  # the user's footage, outside the project
    refs.mkdir()
    clips = {f"R{i}": _clip(i, 8) for i in range(1, 4)}
    for name, frames in clips.items():
        encode_video(refs / f"{name}.mp4", frames, FPS)
    (refs / "broken.mp4").write_bytes(b"not a video at all")
    noise = root / "noise"
    noise.mkdir()
    encode_video(noise / "N1.mp4", _clip(50, 6), FPS)
    queries = root / "queries"
    queries.mkdir()
    # Q1: 3 s of other footage, then seconds 2..7 of R2 (8 s)
    encode_video(queries / "Q1.mp4", np.concatenate([_clip(99, 3), clips["R2"][2 * FPS: 7 * FPS]]), FPS)
    (queries / "Q2.mp4").write_bytes(b"")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return {"proj": proj, "refs": refs, "noise": noise, "queries": queries, "elsewhere": elsewhere, "db": root / "db"}


def run(args: list[str], cwd: Path, env: dict[str, str]):
    """The real `avmatch` app in this process, from `cwd`, with AVMATCH_ROOT as given."""
    old, saved = os.getcwd(), os.environ.pop("AVMATCH_ROOT", None)
    os.environ.update(env)
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, args, catch_exceptions=False)
    finally:
        os.chdir(old)
        os.environ.pop("AVMATCH_ROOT", None)
        if saved is not None:
            os.environ["AVMATCH_ROOT"] = saved


def test_add_then_query_from_another_folder(world):
    env = {"AVMATCH_ROOT": str(world["proj"])}
    db = str(world["db"])
    r = run(["copydetect", "add", str(world["refs"]), "--db", db], world["elsewhere"], env)
    # the broken file is named with its reason, the three videos are added, the exit status says one failed
    assert r.exit_code == 1, r.output
    assert "broken.mp4" in r.stderr and "3 video(s) added" in r.stdout
    assert "encoder.pt" in r.stderr and "normalisation is OFF" in r.stderr   # no noise set yet: said, not hidden
    # the project's params.yaml names no descriptor: the default one, recorded in the database
    assert "trained_dct (dct_weight 0.5, mirror-averaged, whitened (power 0.5, shrink 0.1)) descriptor" in r.stderr
    from avmatch.copydetect.database import CopyDB
    from avmatch.copydetect.descriptor import DescriptorSpec
    from avmatch.copydetect.params import CdDescriptorParams

    cdb = CopyDB.load(world["db"])   # the project's whitening is kept in the database
    assert cdb.descriptor == DescriptorSpec.from_params(CdDescriptorParams()) and cdb.load_whitening() is not None
    # again: nothing re-embedded; a noise set switches normalisation on
    r = run(["copydetect", "add", str(world["refs"] / "R1.mp4"), str(world["refs"] / "R2.mp4"), "--db", db,
             "--noise", str(world["noise"])], world["elsewhere"], env)
    assert r.exit_code == 0, r.output
    assert "0 video(s) added, 2 unchanged" in r.stdout and "OFF" not in r.stderr
    # a changed file with a known id replaces that reference, and says so
    changed = world["elsewhere"] / "R3.mp4"
    encode_video(changed, _clip(7, 5), FPS)
    r = run(["copydetect", "add", str(changed), "--db", db], world["elsewhere"], env)
    assert r.exit_code == 0 and "1 video(s) added" in r.stdout and "R3: replaced" in r.stderr, r.output
    assert "3 reference video(s)" in r.stdout
    out = world["elsewhere"] / "matches.csv"
    r = run(["copydetect", "query", str(world["queries"] / "Q1.mp4"), str(world["queries"] / "Q2.mp4"), "--db", db,
             "--out", "matches.csv"], world["elsewhere"], {})
    assert r.exit_code == 1 and "Q2.mp4" in r.stderr and "copydetect query" in r.stderr   # error + progress bar
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert next(csv.reader(io.StringIO(r.stdout))) == MATCH_COLUMNS
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == MATCH_COLUMNS and [w["ref_id"] for w in written] == [w["ref_id"] for w in rows]
    # ids are the file stems; whether the right reference wins is the trained encoder's job, checked end to
    # end (tests/copydetect/test_copydetect_e2e.py): this seeded untrained one finds every clip alike
    assert rows and {r["query_id"] for r in rows} == {"Q1"} and {r["ref_id"] for r in rows} <= {"R1", "R2", "R3"}
    assert all(0 <= float(r["query_start"]) <= float(r["query_end"]) <= 8.5 for r in rows), rows
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)


def test_add_without_an_encoder_says_where_it_looked(world, tmp_path):
    lonely = tmp_path / "no_project"
    lonely.mkdir()
    (lonely / "params.yaml").write_text("copydetect: {}\n")
    r = run(["copydetect", "add", str(world["refs"] / "R1.mp4"), "--db", str(tmp_path / "db")], tmp_path,
            {"AVMATCH_ROOT": str(lonely)})
    assert r.exit_code == 2 and "no trained copy detection encoder" in r.stderr
    assert str(lonely / "models/copydetect/encoder.pt") in r.stderr
    assert not (tmp_path / "db").exists()      # a failed creation leaves no folder behind


def test_repair_of_a_missing_folder_is_an_error_and_creates_nothing(tmp_path):
    r = run(["copydetect", "repair", "--db", str(tmp_path / "nowhere")], tmp_path, {})
    assert r.exit_code == 2 and "no such database folder" in r.stderr
    assert not (tmp_path / "nowhere").exists()


def test_query_with_verification_uses_the_recorded_reference_files_and_names_a_missing_one(world):
    """--verify checks every match against the reference files `add` recorded: the copied reference (R2) is the
    only one verified, so it ranks first with bounds re-drawn from its frames; a reference file that has gone
    is named (exit 2), as is a --ref-dir without it."""
    env = {"AVMATCH_ROOT": str(world["proj"])}
    db = str(world["db"])
    if not (world["db"] / "CURRENT").exists():
        assert run(["copydetect", "add", str(world["refs"]), "--db", db], world["elsewhere"], env).exit_code == 1
    q1 = str(world["queries"] / "Q1.mp4")
    plain = run(["copydetect", "query", q1, "--db", db, "--no-verify"], world["elsewhere"], env)
    r = run(["copydetect", "query", q1, "--db", db, "--verify"], world["elsewhere"], env)
    assert plain.exit_code == 0 and r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    before = list(csv.DictReader(io.StringIO(plain.stdout)))
    assert len(rows) == len(before)
    verified = [w for w in rows if float(w["score"]) > 1.0]     # + bonus 1.0 over a cosine score
    assert verified and {w["ref_id"] for w in verified} == {"R2"} and rows[0]["ref_id"] == "R2", rows
    # Q1 = 3 s of other footage, then R2's seconds 2..7 (bounds: tests/copydetect/test_copydetect_verify.py, on photos; these
    # block pictures share their grid of corners, so the other footage's frames find a few inliers too)
    top = verified[0]
    assert float(top["query_end"]) > 5.0 and float(top["ref_start"]) < 5.0, top
    # the database recorded the verification settings it was built with: a query answers the same from a
    # project whose params.yaml turns verification off
    from avmatch.copydetect.database import CopyDB

    settings = CopyDB.load(world["db"]).settings
    assert settings["verify"]["enabled"] is True and settings["verify"]["min_inliers"] >= 1, settings.get("verify")
    other = world["elsewhere"] / "other_project"
    other.mkdir(exist_ok=True)
    (other / "params.yaml").write_text("copydetect:\n  verify: {enabled: false}\n")
    again = run(["copydetect", "query", q1, "--db", db], world["elsewhere"], {"AVMATCH_ROOT": str(other)})
    assert again.exit_code == 0 and again.stdout == r.stdout, again.output
    moved = world["refs"] / "R2.mp4"
    moved.rename(moved.with_suffix(".bak"))
    try:
        r = run(["copydetect", "query", q1, "--db", db, "--verify"], world["elsewhere"], env)
        assert r.exit_code == 2 and "R2.mp4" in r.stderr and "missing" in r.stderr, r.output
    finally:
        moved.with_suffix(".bak").rename(moved)
    r = run(["copydetect", "query", q1, "--db", db, "--verify", "--ref-dir", str(world["noise"])], world["elsewhere"], env)
    assert r.exit_code == 2 and str(world["noise"]) in r.stderr and "no video file of the reference" in r.stderr
