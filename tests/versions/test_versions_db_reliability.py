"""A versions database never loses a track: concurrent `versions add`s, adds killed in each phase,
queries during adds, damage followed by `versions repair`.

Writers are real, separate processes running the real `avmatch` app (see `_cli_procs`), kills are
SIGKILL at a named phase (`AVMATCH_FAULT`), the encoder is a tiny untrained one saved with the
project's `save_encoder`, the audio tone mixes written with soundfile.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _cli_procs import Command, run
from conftest import tone_mix

SR = 16000
N_FILES = 8
PHASES = ["ingest", "decode", "extract", "index", "save", "published"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny encoder (2 s segments), eight 4 s tracks in four folders, a reference database."""
    import torch

    from avmatch.versions.model import VersionEncoder, save_encoder
    from avmatch.versions.params import CQTParams, VerAudioParams, VerModelParams

    root = tmp_path_factory.mktemp("verrel")
    torch.manual_seed(0)
    m, c = VerModelParams(dim=16, channels=[8, 8, 8, 8]), CQTParams()
    save_encoder(VersionEncoder.from_params(m, c).eval(), root / "encoder.pt",
                 {"model": m.model_dump(), "cqt": c.model_dump(),
                  "audio": VerAudioParams(segment_s=2.0, hop_s=1.0).model_dump()})
    folders = [root / "music" / f"part{k}" for k in range(4)]
    for i in range(N_FILES):
        folders[i % 4].mkdir(parents=True, exist_ok=True)
        sf.write(folders[i % 4] / f"track{i}.wav", tone_mix(4.0, SR, 70 + i), SR, subtype="PCM_16")
    w = {"root": root, "model": root / "encoder.pt", "music": root / "music", "folders": folders}
    ref = root / "ref"       # ids are relative to the folder added: the reference adds the same folders
    for i, folder in enumerate(folders):
        if i == 3:
            w["first3"] = root / "first3"
            shutil.copytree(ref, w["first3"])
        assert add(w, ref, folder)[0] == 0
    w["ref"] = ref
    return w


def add(world, db: Path, folder: Path, **env: str) -> tuple[int, str]:
    return run(["versions", "add", str(folder), "--db", str(db), "--model", str(world["model"])], world["root"],
               {"OMP_NUM_THREADS": "1", **env})


def query(world, db: Path) -> tuple[int, str, list[dict]]:
    """(exit code, the command's stdout and stderr, the CSV rows it wrote to --out)."""
    out_csv = db.parent / f"{db.name}-answer.csv"
    out_csv.unlink(missing_ok=True)
    code, out = run(["versions", "query", str(world["folders"][1] / "track1.wav"), "--db", str(db), "--top", "8",
                     "--include-self", "--out", str(out_csv)], world["root"], {"OMP_NUM_THREADS": "1"})
    return code, out, list(csv.DictReader(io.StringIO(out_csv.read_text() if out_csv.exists() else "")))


def content(db: Path) -> tuple[list[tuple], np.ndarray]:
    """(track ids with their segment counts, vectors in id/segment order) of the published version."""
    from avmatch.versions.database import Embedder, _tracks_and_vectors

    ok, meta, vecs = _tracks_and_vectors(db, Embedder.load(json.loads((db / "db.json").read_text())["encoder"]))
    order = np.lexsort((meta["start_s"].to_numpy(), meta["item_id"].to_numpy()))
    ids = sorted(ok["id"])
    assert len(ids) == len(set(ids)), ids          # each track once
    return ids, vecs[order]


def assert_same(a: Path, b: Path) -> None:
    ids_a, v_a = content(a)
    ids_b, v_b = content(b)
    assert ids_a == ids_b
    np.testing.assert_allclose(v_a, v_b, atol=1e-5)


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_adds_keep_every_track_once(world, tmp_path, n):
    db = tmp_path / "db"
    # n = 2: two folders of two tracks, then the other two folders in a second round of two writers
    rounds = [world["folders"]] if n == 4 else [world["folders"][:2], world["folders"][2:]]
    for group in rounds:
        cmds = [Command(["versions", "add", str(f), "--db", str(db), "--model", str(world["model"])], world["root"],
                        {"OMP_NUM_THREADS": "1"}, log=tmp_path / f"{f.name}.log") for f in group]
        results = [c.wait() for c in cmds]
        assert [code for code, _ in results] == [0] * len(group), results
    assert_same(db, world["ref"])


@pytest.mark.parametrize("phase", PHASES)
def test_an_add_killed_in_each_phase_then_rerun_equals_an_uninterrupted_add(world, tmp_path, phase):
    db = tmp_path / "db"
    shutil.copytree(world["first3"], db)
    code, out = add(world, db, world["folders"][3], AVMATCH_FAULT=phase)
    assert code == -9, out
    assert add(world, db, world["folders"][3])[0] == 0
    assert_same(db, world["ref"])


def test_queries_during_adds_read_whole_versions(world, tmp_path):
    from avmatch.versions.database import Embedder, _tracks_and_vectors

    db = tmp_path / "db"
    assert add(world, db, world["folders"][0])[0] == 0
    emb = Embedder.load(world["model"])
    writers = [Command(["versions", "add", str(f), "--db", str(db), "--model", str(world["model"])], world["root"],
                       {"OMP_NUM_THREADS": "1"}, log=tmp_path / f"{f.name}.log") for f in world["folders"][1:]]
    reads, errors = 0, []
    while any(w.proc.is_alive() for w in writers) or reads < 3:
        try:
            ok, meta, _ = _tracks_and_vectors(db, emb)
            assert set(ok["id"]) == set(meta["item_id"])       # manifest and vectors of one version
            reads += 1
        except Exception as exc:  # counted; the assertion below lists them
            errors.append(repr(exc))
            if len(errors) > 5:
                break
    assert [w.wait()[0] for w in writers] == [0, 0, 0]
    assert errors == [] and reads >= 3
    assert_same(db, world["ref"])


def _damage(db: Path, kind: str) -> str:
    snap = db / "snapshots" / f"{json.loads((db / 'CURRENT').read_text())['version']:06d}"
    if kind == "truncated_manifest":
        data = (snap / "tracks.parquet").read_bytes()
        (snap / "tracks.parquet").write_bytes(data[:200])
        return str(snap / "tracks.parquet")
    if kind == "corrupt_db_json":
        (db / "db.json").write_text("{not json")
        return str(db / "db.json")
    if kind == "missing_shard":
        sorted((db / "shards").glob("part-*.parquet"))[-1].unlink()
        return str(db / "shards")
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated_manifest", "corrupt_db_json", "missing_shard"])
def test_each_damage_is_named_and_repair_restores_the_answers(world, tmp_path, kind):
    db = tmp_path / "db"
    shutil.copytree(world["ref"], db)    # made by four adds: older versions are kept
    code, out, before = query(world, db)
    assert code == 0 and len(before) == N_FILES, out
    named = _damage(db, kind)
    code, out, _ = query(world, db)
    assert code == 2 and named in out and f"avmatch versions repair --db {db}" in out, out
    code, out = run(["versions", "repair", "--db", str(db)], world["root"], {"OMP_NUM_THREADS": "1"})
    assert code == (1 if kind == "missing_shard" else 0), out
    assert out.count("add this file again") == (2 if kind == "missing_shard" else 0)   # the last add's tracks
    if kind != "corrupt_db_json":   # tracks lost or taken in without their path: adding the folders again
        for folder in world["folders"]:
            assert add(world, db, folder)[0] == 0
    code, out, after = query(world, db)
    assert code == 0 and after == before, out
    assert_same(db, world["ref"])
