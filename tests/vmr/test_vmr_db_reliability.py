"""A vmr music database never loses a track: concurrent `vmr add`s, adds killed in each phase,
suggestions during adds, damage followed by `vmr repair`.

Writers are real, separate processes running the real `avmatch` app (see `_cli_procs`), kills are
SIGKILL at a named phase (`AVMATCH_FAULT`). The encoder is a tiny untrained one saved with the
project's `save_encoder`, the music tone mixes written with soundfile, the video a few textured shots.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import _cli_procs
import numpy as np
import pytest
import soundfile as sf
from _cli_procs import Call, Command, run
from _vmr_signals import shots_video
from _vmr_tiny_encoder import FPS, TARGET
from conftest import tone_mix

SR = 16000
N_FILES = 8
PHASES = ["ingest", "decode", "extract", "index", "save", "published"]
ENV = {"OMP_NUM_THREADS": "1"}

# librosa's first call compiles its numba kernels (~8 s): done once in the fork server, not per writer
if "tests._vmr_warmup" not in _cli_procs.PRELOAD:
    _cli_procs.PRELOAD.append("tests._vmr_warmup")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny encoder, eight 4 s tracks in four folders, a 4 s video, a reference database of four adds."""
    from avmatch.vmr.mux import write_music_video

    root = tmp_path_factory.mktemp("vmrrel")
    folders = [root / "music" / f"part{k}" for k in range(4)]
    for i in range(N_FILES):
        folders[i % 4].mkdir(parents=True, exist_ok=True)
        sf.write(folders[i % 4] / f"track{i}.wav", tone_mix(4.0, SR, 70 + i), SR, subtype="PCM_16")
    code, out = Call(TARGET, (root / "encoder.pt", sorted(root.glob("music/*/*.wav"))[:4]), root / "encoder.log").wait()
    assert code == 0, out
    write_music_video(root / "clip.mp4", shots_video([1.5, 3.0], 4.0, int(FPS), 32), FPS, None, SR)
    w = {"root": root, "encoder": root / "encoder.pt", "folders": folders, "video": root / "clip.mp4"}
    ref = root / "ref"       # ids are relative to the folder added: every database adds the same folders
    for i, folder in enumerate(folders):
        if i == 3:
            w["first3"] = root / "first3"
            shutil.copytree(ref, w["first3"])
        code, out = add(w, ref, folder)
        assert code == 0, out
    w["ref"] = ref
    return w


def add(world, db: Path, folder: Path, *extra: str, **env: str) -> tuple[int, str]:
    return run(["vmr", "add", str(folder), "--db", str(db), "--encoder", str(world["encoder"]), *extra],
               world["root"], {**ENV, **env})


def adder(world, db: Path, folder: Path, log: Path) -> Command:
    return Command(["vmr", "add", str(folder), "--db", str(db), "--encoder", str(world["encoder"])], world["root"],
                   ENV, log=log)


def suggest(world, db: Path) -> tuple[int, str, list[dict]]:
    code, out = run(["vmr", "suggest", str(world["video"]), "--db", str(db), "--top", str(N_FILES)],
                    world["root"], ENV)
    lines = [ln for ln in out.splitlines() if ln.count(",") == 5]
    return code, out, list(csv.DictReader(io.StringIO("\n".join(lines))))


def content(db: Path) -> tuple[list[str], np.ndarray]:
    """(track ids, window vectors in id/segment order) of the published version; each track once."""
    from avmatch.vmr.database import MusicDB

    mdb = MusicDB.load(db)
    ids = sorted(mdb.tracks["track_id"])
    assert len(ids) == len(set(ids)), ids
    assert ids == sorted(mdb.index.item_ids)
    vecs = np.concatenate([mdb.index.item_vectors(t) for t in ids])
    return ids, vecs


def assert_same(a: Path, b: Path) -> None:
    ids_a, v_a = content(a)
    ids_b, v_b = content(b)
    assert ids_a == ids_b and len(ids_a) == N_FILES
    np.testing.assert_allclose(v_a, v_b, atol=1e-5)


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_adds_keep_every_track_once(world, tmp_path, n):
    db = tmp_path / "db"
    # n = 2: two folders of two tracks, then the other two folders in a second round of two writers
    rounds = [world["folders"]] if n == 4 else [world["folders"][:2], world["folders"][2:]]
    waited = 0
    for group in rounds:
        cmds = [adder(world, db, f, tmp_path / f"{f.name}.log") for f in group]
        results = [c.wait() for c in cmds]
        assert [code for code, _ in results] == [0] * len(group), results
        waited += sum("waiting for it to finish" in out for _, out in results)
    assert waited >= 1        # they did overlap: at least one writer met the lock
    assert_same(db, world["ref"])


def test_a_second_writer_gives_up_after_wait_and_changes_nothing(world, tmp_path):
    from avmatch.core.db_store import writer_lock

    db = tmp_path / "db"
    shutil.copytree(world["first3"], db)
    before = (db / "CURRENT").read_text()
    with writer_lock(db):
        code, out = add(world, db, world["folders"][3], "--wait", "0.5")
    assert code == 2 and "after 0.5 s" in out and "nothing was changed" in out, out
    assert (db / "CURRENT").read_text() == before


@pytest.mark.parametrize("phase", PHASES)
def test_an_add_killed_in_each_phase_then_rerun_equals_an_uninterrupted_add(world, tmp_path, phase):
    db = tmp_path / "db"
    shutil.copytree(world["first3"], db)
    code, out = add(world, db, world["folders"][3], AVMATCH_FAULT=phase)
    assert code == -9, out
    assert content(db)[0] == (content(world["ref"])[0] if phase == "published" else content(world["first3"])[0])
    code, out = add(world, db, world["folders"][3])
    assert code == 0, out
    assert_same(db, world["ref"])
    assert not list((db / "snapshots").glob(".*"))      # the killed writer's staging folder is gone


def test_suggestions_during_adds_read_whole_versions(world, tmp_path):
    from avmatch.vmr.database import MusicDB

    db = tmp_path / "db"
    assert add(world, db, world["folders"][0])[0] == 0
    writers = [adder(world, db, f, tmp_path / f"{f.name}.log") for f in world["folders"][1:]]
    reads, errors, sizes = 0, [], set()
    while any(w.proc.is_alive() for w in writers) or reads < 3:
        try:
            mdb = MusicDB.load(db)
            assert set(mdb.tracks["track_id"]) == set(mdb.index.item_ids)   # table and index of one version
            assert {s.track_id for s in mdb.suggest(world["video"], N_FILES)} == set(mdb.index.item_ids)
            sizes.add(len(mdb.tracks))
            reads += 1
        except Exception as exc:  # counted; the assertion below lists them
            errors.append(repr(exc))
            if len(errors) > 5:
                break
    assert [w.wait()[0] for w in writers] == [0, 0, 0]
    assert errors == [] and reads >= 3 and sizes <= {2, 4, 6, 8}
    assert_same(db, world["ref"])


def _damage(db: Path, kind: str) -> Path:
    snap = db / "snapshots" / f"{json.loads((db / 'CURRENT').read_text())['version']:06d}"
    if kind == "missing_index":
        (snap / "index" / "index.faiss").unlink()
        return snap / "index" / "index.faiss"
    if kind == "truncated_index":
        data = (snap / "index" / "vectors.npy").read_bytes()
        (snap / "index" / "vectors.npy").write_bytes(data[: len(data) // 2])
        return snap / "index" / "vectors.npy"
    if kind == "corrupt_settings":
        text = (snap / "settings.json").read_text()
        (snap / "settings.json").write_text("{" + "x" * (len(text) - 1))     # same size: only parsing tells
        return snap / "settings.json"
    if kind == "corrupt_pointer":
        (db / "CURRENT").write_text("{not json")
        return db / "CURRENT"
    if kind == "tracks_disagree":
        # same size, so only the comparison with the index tells: one id renamed
        text = (snap / "tracks.csv").read_text()
        assert "\ntrack7," in text
        (snap / "tracks.csv").write_text(text.replace("\ntrack7,", "\ntrack9,", 1))
        return snap / "tracks.csv"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["missing_index", "truncated_index", "corrupt_settings", "corrupt_pointer",
                                  "tracks_disagree"])
def test_each_damage_is_named_and_repair_restores_the_answers(world, tmp_path, kind):
    db = tmp_path / "db"
    shutil.copytree(world["ref"], db)    # made by four adds: the version before the last is kept
    code, out, before = suggest(world, db)
    assert code == 0 and len(before) == N_FILES, out
    named = _damage(db, kind)
    code, out, _ = suggest(world, db)
    assert code == 2 and str(named) in out and f"avmatch vmr repair --db {db}" in out, out
    code, out = run(["vmr", "repair", "--db", str(db)], world["root"], ENV)
    # the last add's two tracks are listed (exit 1), unless only the pointer was damaged
    lost = 0 if kind == "corrupt_pointer" else 2
    assert code == (1 if lost else 0) and "published again" in out, out
    assert out.count("add this file again") == lost and (not lost or str(world["folders"][3]) in out), out
    restored, _ = content(db)
    # only the pointer was damaged: the last version is intact and comes back whole; else the one before it
    assert len(restored) == (N_FILES if kind == "corrupt_pointer" else N_FILES - 2)
    code, out = add(world, db, world["folders"][3])     # the last add's tracks; present ones are skipped
    assert code == 0 and f"{0 if kind == 'corrupt_pointer' else 2} track(s) added, 0 failed; 8 in" in out, out
    code, out, after = suggest(world, db)
    assert code == 0 and after == before, out
    assert_same(db, world["ref"])


def test_an_older_database_is_read_and_moves_to_versions_at_its_next_add(world, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(world["first3"], db)
    snap = db / "snapshots" / f"{json.loads((db / 'CURRENT').read_text())['version']:06d}"
    for name in ("encoder.pt", "settings.json", "tracks.csv", "index"):     # the layout before versions
        shutil.move(str(snap / name), db / name)
    shutil.rmtree(db / "snapshots")
    (db / "CURRENT").unlink()
    assert content(db)[0] == content(world["first3"])[0]
    assert add(world, db, world["folders"][3])[0] == 0
    assert (db / "CURRENT").exists() and not (db / "tracks.csv").exists() and not (db / "index").exists()
    assert_same(db, world["ref"])
