"""`avmatch fingerprint add / identify / info` as a user meets them: from any folder, with bad inputs,
with streaming output, ranked candidates and a database that stores each vector once.

Real audio (tone mixes written with soundfile), real FAISS and real encoder weights: a tiny encoder
randomly initialised with a fixed seed and saved with the project's `save_encoder`. Its BatchNorm
statistics are measured on a few seconds of other audio first (no training): with the default
statistics an untrained encoder maps every segment to nearly the same point, and nothing can be
told apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import csv_rows as rows_of
from conftest import (
    read_line,
    save_tiny_fingerprint_encoder,
    stderr_lines,
    tone_mix,
    write_bad_files,
)
from conftest import run_cli as run

SR = 8000
THRESHOLD = 0.2
N_REFS = 5
REF_S = 12.0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A project with a trained-looking encoder and its evaluated threshold, a music folder (two files
    share a stem), queries cut from it, and a folder that is not a project to run from."""
    root = tmp_path_factory.mktemp("cli")
    proj = root / "proj"
    (proj / "models/fingerprint").mkdir(parents=True)
    (proj / "metrics").mkdir()
    # THRESHOLD was chosen for the plain margin (runner_up_weight 1: rank 2 and below then score < 0)
    (proj / "params.yaml").write_text("fingerprint:\n  search: {score: margin, runner_up_weight: 1.0}\n  index: {type: flat}\n")
    save_tiny_fingerprint_encoder(proj / "models/fingerprint/encoder.pt", seed=0)
    (proj / "metrics/fingerprint.json").write_text(json.dumps({"threshold": THRESHOLD}))
    music = root / "music"
    names = ["a/song.wav", "b/song.wav", "intro.flac", "c/outro.wav", "c/deep/theme.flac"]
    audio = {}
    for i, name in enumerate(names[:N_REFS]):
        (music / name).parent.mkdir(parents=True, exist_ok=True)
        audio[name] = tone_mix(REF_S, SR, i)
        sf.write(music / name, audio[name], SR, subtype="PCM_16")
    queries = root / "queries"
    queries.mkdir()
    truth = {}
    for i, name in enumerate(names):
        start = 1.0 + 0.5 * i        # on the 0.5 s segment grid: the query's segments are the reference's
        q = queries / f"q{i}.wav"
        sf.write(q, audio[name][int(start * SR):int((start + 4.0) * SR)], SR, subtype="PCM_16")
        truth[str(q)] = (name, start)
    oov = queries / "not_in_db.wav"
    sf.write(oov, tone_mix(4.0, SR, 77), SR, subtype="PCM_16")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    save_tiny_fingerprint_encoder(root / "other.pt", seed=1)
    return {"root": root, "proj": proj, "music": music, "names": names, "queries": queries, "truth": truth,
            "oov": oov, "elsewhere": elsewhere, "other": root / "other.pt"}


@pytest.fixture(scope="module")
def db(world) -> Path:
    """A database built from the folder that is not a project, the project named by $AVMATCH_ROOT."""
    path = world["root"] / "db"
    r = run(["fingerprint", "add", str(world["music"]), "--db", str(path), "--workers", "1"], world["elsewhere"],
            {"AVMATCH_ROOT": str(world["proj"])})
    assert r.exit_code == 0, r.output
    return path


# ------------------------------------------------------------------------------ finding the encoder
def test_add_from_another_folder_uses_the_projects_encoder_and_threshold(world, db):
    from avmatch.core.hashing import file_hash

    meta = json.loads((db / "db.json").read_text())
    encoder = world["proj"] / "models/fingerprint/encoder.pt"
    assert meta["model_hash"] == file_hash(encoder) == file_hash(db / "model.pt")
    assert meta["model_source"] == str(encoder)
    assert meta["threshold"] == THRESHOLD
    assert meta["threshold_source"] == str(world["proj"] / "metrics/fingerprint.json")


def test_a_given_model_keeps_the_threshold_evaluated_for_it(world, tmp_path):
    """--model relative to the working folder, no $AVMATCH_ROOT: the threshold is still the one of
    the project the encoder belongs to, not a made-up default."""
    rel = os.path.relpath(world["proj"] / "models/fingerprint/encoder.pt", world["elsewhere"])
    r = run(["fingerprint", "add", str(world["music"] / "intro.flac"), "--db", str(tmp_path / "db"), "--model", rel,
             "--workers", "1"], world["elsewhere"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "db/db.json").read_text())
    assert meta["threshold"] == THRESHOLD and meta["threshold_source"].endswith("metrics/fingerprint.json")


def test_no_encoder_found_says_what_to_do(world, tmp_path):
    empty = tmp_path / "empty_project"
    empty.mkdir()
    r = run(["fingerprint", "add", str(world["music"]), "--db", str(tmp_path / "db")], world["elsewhere"],
            {"AVMATCH_ROOT": str(empty)})
    assert r.exit_code == 2
    assert "no trained fingerprint encoder found" in r.stderr
    assert str(empty / "models/fingerprint/encoder.pt") in r.stderr
    assert "AVMATCH_ROOT" in r.stderr and "--model" in r.stderr and "dvc repro" in r.stderr
    assert not (tmp_path / "db").exists()


def test_a_model_without_an_evaluated_threshold_needs_one(world, tmp_path):
    r = run(["fingerprint", "add", str(world["music"]), "--db", str(tmp_path / "db"), "--model", str(world["other"])],
            world["elsewhere"])
    assert r.exit_code == 2 and "--threshold" in r.stderr and str(world["other"]) in r.stderr
    r = run(["fingerprint", "add", str(world["music"] / "intro.flac"), "--db", str(tmp_path / "db"),
             "--model", str(world["other"]), "--threshold", "0.25", "--workers", "1"], world["elsewhere"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "db/db.json").read_text())
    assert meta["threshold"] == 0.25 and meta["threshold_source"] == "--threshold"


def test_a_mismatched_model_is_an_error_naming_both(world, db):
    from avmatch.core.hashing import file_hash

    before = sorted(p.name for p in (db / "shards").iterdir())
    r = run(["fingerprint", "add", str(world["music"]), "--db", str(db), "--model", str(world["other"])],
            world["elsewhere"])
    assert r.exit_code == 2
    for fact in (str(world["other"]), file_hash(world["other"]), str(world["proj"] / "models/fingerprint/encoder.pt"),
                 file_hash(db / "model.pt")):
        assert fact in r.stderr, (fact, r.stderr)
    assert sorted(p.name for p in (db / "shards").iterdir()) == before


# ------------------------------------------------------------------------------------------- output
def test_ref_ids_are_stable_file_stems(world, db, tmp_path):
    r = run(["fingerprint", "identify", str(world["queries"]), "--db", str(db)], world["elsewhere"])
    assert r.exit_code == 0, r.output
    rows = {Path(row["query_file"]).name: row for row in rows_of(r.stdout)}
    expected_ids = {"a/song.wav": "a/song", "b/song.wav": "b/song", "intro.flac": "intro", "c/outro.wav": "outro",
                    "c/deep/theme.flac": "theme"}
    for q, (name, start) in world["truth"].items():
        row = rows[Path(q).name]
        assert row["ref_id"] == expected_ids[name], row
        assert row["ref_path"] == str(world["music"] / name)
        assert row["match"] == "1" and row["rank"] == "1"
        assert abs(float(row["offset_s"]) - start) < 0.26
    assert rows["not_in_db.wav"]["ref_id"] == "" and rows["not_in_db.wav"]["match"] == "0"

    # a later file with a taken stem gets a longer id; the ids given before do not change
    more = tmp_path / "more" / "intro.wav"
    more.parent.mkdir()
    sf.write(more, tone_mix(REF_S, SR, 55), SR, subtype="PCM_16")
    ids_file = tmp_path / "ids.csv"
    ids_file.write_text("path,id\nfinale.wav,ISRC-XY-001\n")
    sf.write(tmp_path / "finale.wav", tone_mix(REF_S, SR, 56), SR, subtype="PCM_16")
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(db, copy)
    r = run(["fingerprint", "add", str(world["music"]), str(more), "--manifest", str(ids_file), "--db", str(copy),
             "--workers", "1"], world["elsewhere"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("2 file(s) fingerprinted, 5 unchanged")
    from avmatch.fingerprint.database import FingerprintDB

    m = FingerprintDB(copy).manifest()
    ids = dict(zip(m["path"], m["id"]))
    assert {ids[str(world["music"] / n)] for n in world["names"]} == set(expected_ids.values())
    assert ids[str(more)] == "more/intro" and ids[str(tmp_path / "finale.wav")] == "ISRC-XY-001"


def test_answers_stream_one_query_at_a_time(world, db, tmp_path):
    """Query paths fed one by one on stdin (`-`): each row arrives, on stdout and in --out, before the
    next query is even known, and the encoder is loaded once for all of them."""
    out = tmp_path / "matches.csv"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AVMATCH_ROOT", None)
    p = subprocess.Popen([sys.executable, "-m", "avmatch", "fingerprint", "identify", "-", "--db", str(db),
                          "--out", str(out)], cwd=world["elsewhere"], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert read_line(p, 120) == ",".join(["query_file", "rank", "ref_id", "ref_path", "offset_s", "score", "match"])
        queries = sorted(world["truth"])[:3]
        for q in queries:
            p.stdin.write(q + "\n")
            p.stdin.flush()
            line = read_line(p, 60)
            assert line.startswith(q + ",1,"), line
            assert p.poll() is None                     # still waiting for the next query
            assert out.read_text().splitlines()[-1] == line
        p.stdin.close()
        assert p.wait(60) == 0
        err = p.stderr.read()
        assert err.count("loaded in") == 1, err
    finally:
        if p.poll() is None:
            p.kill()


def test_top_n_lists_ranked_candidates(world, db):
    q = sorted(world["truth"])[2]
    r = run(["fingerprint", "identify", q, "--db", str(db), "--top", "3"], world["elsewhere"])
    assert r.exit_code == 0, r.output
    rows = rows_of(r.stdout)
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    assert len({row["ref_id"] for row in rows}) == 3
    assert rows[0]["ref_id"] == "intro" and rows[0]["match"] == "1"
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(row["match"] == "0" and float(row["score"]) < 0 for row in rows[1:])   # margin below rank 1


def test_bad_queries_are_reported_and_the_others_answered(world, db, tmp_path):
    bad = write_bad_files(tmp_path / "bad")
    missing = tmp_path / "missing.wav"
    empty_dir = tmp_path / "no_audio"
    empty_dir.mkdir()
    good = sorted(world["truth"])[:2]
    r = run(["fingerprint", "identify", good[0], str(missing), str(bad["corrupt"]), str(world["queries"]),
             str(empty_dir), good[1], "--db", str(db)], world["elsewhere"])
    assert r.exit_code == 1
    errors = [ln for ln in stderr_lines(r) if ln.startswith("error: ")]
    assert f"error: {missing}: no such file or directory" in errors
    assert any(ln.startswith(f"error: {bad['corrupt']}: not a readable media file") for ln in errors), errors
    assert f"error: {empty_dir}: folder holds no audio or video files" in errors
    assert len(errors) == 3
    answered = [row["query_file"] for row in rows_of(r.stdout)]
    folder_files = sorted(str(p) for p in world["queries"].glob("*.wav"))
    assert answered == [good[0], *folder_files, good[1]]


def test_add_reports_bad_files_and_stores_the_rest(world, tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "fine.wav", tone_mix(REF_S, SR, 3), SR, subtype="PCM_16")
    write_bad_files(music / "broken")
    r = run(["fingerprint", "add", str(music), str(tmp_path / "nowhere"), "--db", str(tmp_path / "db"),
             "--workers", "1"], world["elsewhere"], {"AVMATCH_ROOT": str(world["proj"])})
    assert r.exit_code == 1
    assert f"error: {tmp_path / 'nowhere'}: no such file or directory" in r.stderr
    lines = stderr_lines(r)
    for name in ("empty.wav", "garbage.mp3", "silent.wav", "nan.wav"):
        prefix = f"error: {music / 'broken' / name}: "
        assert any(ln.startswith(prefix) and len(ln) > len(prefix) + 5 for ln in lines), (name, lines)  # + a reason
    assert "1 file(s) fingerprinted" in r.stdout and "holds 1 recording(s)" in r.stdout
    # again: the files that decode badly are tried (and reported) again, the good one is unchanged
    again = run(["fingerprint", "add", str(music), "--db", str(tmp_path / "db"), "--workers", "1"], world["elsewhere"])
    assert again.exit_code == 1 and again.stdout.startswith("0 file(s) fingerprinted, 1 unchanged"), again.output


# ---------------------------------------------------------------------------------- what is stored
def test_no_decoded_audio_and_each_vector_once(world, db):
    import pyarrow.parquet as pq

    files = sorted(p.relative_to(db).as_posix() for p in db.rglob("*") if p.is_file())
    assert not any(f.endswith(".npy") or f.startswith(("pcm/", "index/")) or "/index/" in f for f in files), files
    shards = [f for f in files if f.startswith("shards/part-")]
    version = json.loads((db / "CURRENT").read_text())["version"]
    published = {f"snapshots/{version:06d}/{name}" for name in ("manifest.parquet", "db.json", "_files.json")}
    assert set(files) - set(shards) == {"db.json", "model.pt", "CURRENT", "shards/_store.json", ".shards.lock",
                                        ".writer.lock", *published}
    stored = sum(pq.read_metadata(db / f).num_rows for f in shards)
    segments = sum(int((REF_S - 1.0) / 0.5) + 1 for _ in range(N_REFS))
    assert stored == segments   # one row (one vector) per segment, in the shards only
    info = json.loads(run(["fingerprint", "info", "--db", str(db), "--json"], world["elsewhere"]).stdout)
    assert info["recordings"] == N_REFS and info["audio_hours"] == pytest.approx(N_REFS * REF_S / 3600)
    assert info["bytes_per_audio_hour"] == pytest.approx((info["bytes_total"] - info["bytes"]["model.pt"])
                                                         / info["audio_hours"])


def test_keep_pcm_keeps_a_decoded_copy_when_asked(world, tmp_path):
    r = run(["fingerprint", "add", str(world["music"] / "intro.flac"), "--db", str(tmp_path / "db"), "--keep-pcm",
             "--workers", "1"], world["elsewhere"], {"AVMATCH_ROOT": str(world["proj"])})
    assert r.exit_code == 0, r.output
    kept = list((tmp_path / "db/pcm").glob("*.npy"))
    assert len(kept) == 1 and np.load(kept[0]).shape == (int(REF_S * SR),)


def test_ivfpq_database_stores_codes_not_vectors_and_answers(world, tmp_path):
    proj = tmp_path / "proj"
    import shutil

    shutil.copytree(world["proj"], proj)
    (proj / "params.yaml").write_text("fingerprint:\n  index: {type: ivfpq, nlist: 4, pq_m: 8, nprobe: 4}\n")
    env = {"AVMATCH_ROOT": str(proj)}
    names = world["names"]
    first = run(["fingerprint", "add", *[str(world["music"] / n) for n in names[:3]], "--db", str(tmp_path / "db"),
                 "--workers", "1"], world["elsewhere"], env)
    assert first.exit_code == 0, first.output
    second = run(["fingerprint", "add", str(world["music"]), "--db", str(tmp_path / "db"), "--workers", "1"],
                 world["elsewhere"], env)   # the last two are appended to the trained index
    assert second.exit_code == 0, second.output
    version = json.loads((tmp_path / "db/CURRENT").read_text())["version"]
    codes = tmp_path / f"db/snapshots/{version:06d}/index"
    assert sorted(p.name for p in codes.iterdir()) == ["codes.json", "idmap.parquet", "index.faiss"]
    r = run(["fingerprint", "identify", str(world["queries"]), "--db", str(tmp_path / "db")], world["elsewhere"])
    assert r.exit_code == 0, r.output
    got = {Path(row["query_file"]).name: row["ref_path"] for row in rows_of(r.stdout)}
    for q, (name, _) in world["truth"].items():
        assert got[Path(q).name] == str(world["music"] / name)


# ------------------------------------------------------------------------------- threshold and help
def test_help_explains_the_score_and_shows_the_threshold_in_use(world, db):
    r = run(["fingerprint", "identify", "--db", str(db), "--help"], world["elsewhere"])
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    for words in ("cosine similarity", "from -1 to 1", "margin", "hub score", "Threshold in use",
                  f"{THRESHOLD:.4f}", "--top"):
        assert words in text, words
    r = run(["fingerprint", "add", "--help"], world["elsewhere"], {"AVMATCH_ROOT": str(world["proj"])})
    assert f"{THRESHOLD:.4f}" in " ".join(r.stdout.split())


def test_thresholds_by_query_length(world, tmp_path):
    from avmatch.fingerprint.calibration import Thresholds

    t = Thresholds.from_json({"threshold": 0.2, "thresholds_by_length": {"1s": 0.05, "3s": 0.1, "10s": 0.3}})

    def at(seconds: float) -> float:
        from avmatch.fingerprint.calibration import segments_in

        return t.for_segments(segments_in(seconds, 1.0, 0.5), 1.0, 0.5)

    assert [at(s) for s in (0.5, 1.0, 2.0, 3.0, 3.02, 2.99, 4.0, 10.0, 30.0)] == \
        [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0.3]
    # a project whose evaluation chose one threshold per length: the database keeps them all
    proj = tmp_path / "proj"
    import shutil

    shutil.copytree(world["proj"], proj)
    (proj / "metrics/fingerprint.json").write_text(json.dumps(
        {"threshold": 0.2, "thresholds_by_length": {"1s": 0.05, "3s": 0.1, "10s": 0.3}}))
    r = run(["fingerprint", "add", str(world["music"] / "intro.flac"), "--db", str(tmp_path / "db"), "--workers", "1"],
            world["elsewhere"], {"AVMATCH_ROOT": str(proj)})
    assert r.exit_code == 0, r.output
    from avmatch.fingerprint.database import FingerprintDB

    assert FingerprintDB(tmp_path / "db").thresholds == t
    r = run(["fingerprint", "info", "--db", str(tmp_path / "db")], world["elsewhere"])
    assert "by query length: 0.0500 at 1 s, 0.1000 at 3 s, 0.3000 at 10 s" in r.stdout


def test_decision_either_is_stored_and_applied_by_identify(world, tmp_path):
    """Decision `either`: db.json keeps both scores' thresholds and identify accepts on either one; a
    project evaluated before `either` existed, or a db.json without the similarity's thresholds, is a
    clear error rather than a silent margin-only database."""
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(world["proj"], proj)
    (proj / "params.yaml").write_text("fingerprint:\n  search: {score: either}\n  index: {type: flat}\n")
    r = run(["fingerprint", "add", str(world["music"]), "--db", str(tmp_path / "old"), "--workers", "1"],
            world["elsewhere"], {"AVMATCH_ROOT": str(proj)})
    assert r.exit_code == 2 and "similarity_thresholds_by_length" in r.stderr and "dvc repro" in r.stderr
    # the margin never passes (10), the similarity always (-1): every query, even unknown music, is answered
    (proj / "metrics/fingerprint.json").write_text(json.dumps(
        {"threshold": 10.0, "thresholds_by_length": {"1s": 10.0, "10s": 10.0},
         "similarity_threshold": -1.0, "similarity_thresholds_by_length": {"1s": -1.0, "10s": -1.0}}))
    db = tmp_path / "db"
    r = run(["fingerprint", "add", str(world["music"]), "--db", str(db), "--workers", "1"], world["elsewhere"],
            {"AVMATCH_ROOT": str(proj)})
    assert r.exit_code == 0, r.output
    meta = json.loads((db / "db.json").read_text())
    assert meta["search"]["score"] == "either" and meta["similarity_thresholds_by_length"] == {"1s": -1.0, "10s": -1.0}
    r = run(["fingerprint", "identify", str(world["queries"]), "--db", str(db)], world["elsewhere"])
    assert r.exit_code == 0, r.output
    rows = rows_of(r.stdout)
    assert len(rows) == len(world["truth"]) + 1 and all(row["match"] == "1" for row in rows)
    r = run(["fingerprint", "identify", str(world["oov"]), "--db", str(db), "--threshold", "10"], world["elsewhere"])
    assert rows_of(r.stdout)[0]["match"] == "0"                     # --threshold: the margin alone
    r = run(["fingerprint", "identify", "--db", str(db), "--help"], world["elsewhere"])
    assert "or similarity by query length" in " ".join(r.stdout.split())
    for k in ("similarity_threshold", "similarity_thresholds_by_length"):
        meta.pop(k)
    (db / "db.json").write_text(json.dumps(meta))
    r = run(["fingerprint", "identify", str(world["oov"]), "--db", str(db)], world["elsewhere"])
    assert r.exit_code != 0 and "similarity_thresholds_by_length" in r.stderr and "db.json" in r.stderr


def test_ranked_search_puts_the_evaluated_answer_first():
    import pandas as pd

    from avmatch.core.index import SegmentIndex
    from avmatch.fingerprint.ranking import search_ranked
    from avmatch.fingerprint.search import search_queries

    rng = np.random.default_rng(0)
    v = rng.standard_normal((400, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = pd.DataFrame({"item_id": [f"t{i // 40}" for i in range(400)], "segment": [i % 40 for i in range(400)],
                        "start_s": [0.5 * (i % 40) for i in range(400)]})
    index = SegmentIndex.build(v, ids, "flat")
    queries = [v[s:s + 6] + 0.3 * rng.standard_normal((6, 16)).astype(np.float32) for s in range(0, 390, 37)]
    for rescore in (True, False):
        best = search_queries(index, queries, 10, 5, rescore)
        ranked = search_ranked(index, queries, 10, 5, rescore, n=3)
        assert [r[0] for r in ranked] == best
        assert all(len({m.item_id for m in r}) == len(r) == 3 for r in ranked)


def test_reading_the_shards_for_the_index_matches_the_shard_store(tmp_path):
    """The database's fast shard reader keeps what `ShardStore.read` keeps: current hashes only, each
    segment once (an item written twice by an interrupted run), each item's segments in order."""
    from avmatch.core.shards import ShardStore
    from avmatch.fingerprint.db_index import read_current

    rng = np.random.default_rng(0)
    store = ShardStore(tmp_path / "shards", 8, "m")

    def write(items: list[tuple[str, str, int]]) -> None:
        with store.writer(shard_items=2) as w:
            for item, digest, n in items:
                starts = np.arange(n, dtype=np.float32) * 0.5
                w.add_item(item, digest, rng.standard_normal((n, 8)).astype(np.float32), starts, starts + 1)

    write([("b", "h1", 3), ("a", "h1", 4), ("c", "old", 2)])
    write([("c", "new", 5), ("b", "h1", 3), ("d", "h1", 1)])   # c changed; b written again
    current = {"a": "h1", "b": "h1", "c": "new", "d": "h1"}
    meta, vectors = read_current(store, current)
    ref_meta, ref_vectors = store.read(current)
    order = meta.sort_values(["item_id", "segment"]).index.to_numpy()
    assert list(meta["item_id"].to_numpy()[order]) == list(ref_meta["item_id"].astype(str))
    assert list(meta["segment"].to_numpy()[order]) == list(ref_meta["segment"])
    np.testing.assert_array_equal(vectors[order], ref_vectors)
    assert len(meta) == 3 + 4 + 5 + 1
