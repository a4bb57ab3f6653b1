"""The copy detection database is rewritten whole by the extract stage: concurrent writers, a writer
killed in each phase and readers during writes must only ever see one complete version (references,
noise and settings of the same writer); damage is named and `copydetect repair` publishes the newest
intact version. Writers are separate processes (see `_cli_procs`), killed by SIGKILL at a phase.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _cli_procs import Call, run

from avmatch.copydetect.database import CopyDB
from avmatch.copydetect.metrics import VideoFeatures
from avmatch.core.db_store import DamagedDatabase

TARGET = "avmatch.copydetect.database:CopyDB.create"


def _features(name: str, n: int, seed: int) -> VideoFeatures:
    rng = np.random.default_rng(seed)
    return VideoFeatures(name, np.stack([np.arange(n), np.arange(n) + 1.0], 1), rng.normal(size=(n, 8)).astype(np.float32))


def writer_args(root: Path, db: Path, k: int) -> tuple:
    """Everything writer k puts in the database carries k: references, noise, settings."""
    encoder = root / "encoder.pt"
    if not encoder.exists():
        encoder.write_bytes(b"frame encoder weights stand-in" * 100)
    refs = [_features(f"w{k}-ref{j}", 5 + j, 100 * k + j) for j in range(3 + k)]
    noise = [_features(f"w{k}-noise", 4, 1000 + k)]
    return (db, encoder, refs, noise, {"writer": k, "fps": 1, "frame_size": 64})


def writer_of(db: Path) -> int:
    """The writer whose version a reader got; fails when the version mixes two writers."""
    cdb = CopyDB.load(db)
    k = cdb.settings["writer"]
    assert [r.video_id for r in cdb.refs] == [f"w{k}-ref{j}" for j in range(3 + k)]
    assert np.array_equal(cdb.noise, _features(f"w{k}-noise", 4, 1000 + k).features)
    assert cdb.encoder is not None and cdb.encoder.exists()
    return k


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_writers_leave_one_complete_version(tmp_path, n):
    db = tmp_path / "db"
    calls = [Call(TARGET, writer_args(tmp_path, db, k), tmp_path / f"w{k}.log") for k in range(n)]
    assert [c.wait()[0] for c in calls] == [0] * n
    assert writer_of(db) in range(n)
    assert len(list((db / "snapshots").iterdir())) == 2     # the published version and the one before


def test_readers_during_writes_see_one_writers_version(tmp_path):
    db = tmp_path / "db"
    CopyDB.create(*writer_args(tmp_path, db, 0))
    calls = [Call(TARGET, writer_args(tmp_path, db, k % 4), tmp_path / f"w{k}.log") for k in range(1, 9)]
    seen, reads = set(), 0
    while any(c.proc.is_alive() for c in calls) or reads < 3:
        seen.add(writer_of(db))
        reads += 1
    assert [c.wait()[0] for c in calls] == [0] * 8
    assert reads >= 3 and seen <= {0, 1, 2, 3}


@pytest.mark.parametrize("phase", ["extract", "index", "save", "published"])
def test_a_writer_killed_in_each_phase_leaves_a_whole_version_and_a_rerun_completes(tmp_path, phase):
    db = tmp_path / "db"
    CopyDB.create(*writer_args(tmp_path, db, 0))
    code, _ = Call(TARGET, writer_args(tmp_path, db, 1), tmp_path / "killed.log", {"AVMATCH_FAULT": phase}).wait()
    assert code == -9
    assert writer_of(db) == (1 if phase == "published" else 0)
    assert Call(TARGET, writer_args(tmp_path, db, 1), tmp_path / "rerun.log").wait()[0] == 0
    assert writer_of(db) == 1
    assert not list((db / "snapshots").glob(".*"))


@pytest.mark.parametrize("kind", ["truncated_refs", "missing_encoder", "corrupt_pointer"])
def test_damage_is_named_and_repair_publishes_the_newest_intact_version(tmp_path, kind):
    db = tmp_path / "db"
    for k in (1, 2):
        CopyDB.create(*writer_args(tmp_path, db, k))
    snap = CopyDB.load(db).encoder.parent
    named = {"truncated_refs": snap / "refs.npz", "missing_encoder": snap / "encoder.pt",
             "corrupt_pointer": db / "CURRENT"}[kind]
    if kind == "truncated_refs":
        named.write_bytes(named.read_bytes()[:100])
    elif kind == "missing_encoder":
        named.unlink()
    else:
        named.write_text("{")
    with pytest.raises(DamagedDatabase) as err:
        CopyDB.load(db)
    assert str(named) in str(err.value) and f"avmatch copydetect repair --db {db}" in str(err.value)
    code, out = run(["copydetect", "repair", "--db", str(db)], tmp_path)
    assert code == 0, out
    # the pointer alone was damaged: the latest version is intact and comes back; else the one before
    assert writer_of(db) == (2 if kind == "corrupt_pointer" else 1)


def test_an_older_database_is_read_and_moves_to_versions_at_its_next_write(tmp_path):
    from avmatch.copydetect.vsc_npz import write_vsc_npz
    from avmatch.core.db_store import write_json_atomic

    db = tmp_path / "db"
    d, enc, refs, noise, settings = writer_args(tmp_path, db, 1)
    db.mkdir()
    shutil.copy2(enc, db / "encoder.pt")
    write_vsc_npz(db / "refs.npz", refs)
    write_vsc_npz(db / "noise.npz", noise)
    write_json_atomic(db / "settings.json", settings)
    assert writer_of(db) == 1
    CopyDB.create(*writer_args(tmp_path, db, 2))
    assert writer_of(db) == 2 and not (db / "refs.npz").exists()
