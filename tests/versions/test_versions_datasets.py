"""SHS100K and Discogs-VI metadata adapters on hand-made metadata files; ingest reports missing audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from avmatch.versions.corpus import read_tracks_csv
from avmatch.versions.datasets import DatasetLayoutError, import_version_dataset


def _wav(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(seed).uniform(-0.3, 0.3, 8000).astype(np.float32), 16000)


def test_shs100k_list_and_split_files(tmp_path):
    meta = tmp_path / "meta" / "list"
    meta.parent.mkdir()
    meta.write_text("0\t0\tYesterday\tThe Beatles\thttps://youtu.be/a\n0\t1\tYesterday\tRay Charles\thttps://youtu.be/b\n"
                    "1\t0\tHallelujah\tLeonard Cohen\thttps://youtu.be/c\n1\t1\tHallelujah\tJeff Buckley\turl\n")
    (tmp_path / "meta" / "SHS100K-TRAIN").write_text("0\t0\n0\t1\n")
    (tmp_path / "meta" / "SHS100K-TEST").write_text("1\t0\n1\t1\n")
    audio = tmp_path / "audio"
    _wav(audio / "0_0.wav", 0)
    _wav(audio / "0-1.wav", 1)
    _wav(audio / "1_0.wav", 2)          # 1_1 is missing
    info = import_version_dataset("shs100k", meta, audio, tmp_path / "corpus")
    assert info["n_tracks"] == 4 and info["cliques"] == 2 and info["missing_audio"] == 1
    rows = {r["id"]: r for r in read_tracks_csv(tmp_path / "corpus" / "tracks.csv")}
    assert rows["shs/0_1"]["path"].endswith("0-1.wav") and rows["shs/0_1"]["clique"] == "shs0"
    assert rows["shs/0_0"]["split"] == "train" and rows["shs/1_1"]["split"] == "test"
    assert rows["shs/1_0"]["title"] == "Hallelujah" and rows["shs/1_0"]["piece"] == "Leonard Cohen"

    # ingest: the missing file becomes an error row with a reason, the rest goes on
    from pathlib import Path

    from avmatch.core.manifest import build_manifest

    man = build_manifest([Path(r["path"]) for r in rows.values()])
    bad = man[man["status"] != "ok"]
    assert len(bad) == 1 and "cannot read" in bad["error"].iloc[0]


def test_discogs_vi_jsonl(tmp_path):
    meta = tmp_path / "discogs.jsonl"
    cliques = [{"clique_id": "c1", "versions": [
        {"version_id": "v1", "title": "Song", "artists": [{"name": "A"}], "youtube_ids": ["abcdefghijk"]},
        {"version_id": "v2", "track_title": "Song (live)", "artist": "B", "videos": [{"youtube_id": "zzzzzzzzzzz"}]},
        {"version_id": "v3", "title": "no video"}]}]
    meta.write_text("\n".join(json.dumps(c) for c in cliques) + "\n")
    _wav(tmp_path / "audio" / "ab" / "abcdefghijk.wav", 0)
    info = import_version_dataset("discogs_vi", meta, tmp_path / "audio", tmp_path / "corpus")
    rows = read_tracks_csv(tmp_path / "corpus" / "tracks.csv")
    assert info["n_tracks"] == 2 and info["missing_audio"] == 1
    by = {r["id"]: r for r in rows}
    assert by["discogs/abcdefghijk"]["path"].endswith("ab/abcdefghijk.wav")
    assert by["discogs/abcdefghijk"]["piece"] == "A" and by["discogs/zzzzzzzzzzz"]["title"] == "Song (live)"
    assert len({r["split"] for r in rows}) == 1                       # clique-disjoint splits


def test_bad_metadata_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(DatasetLayoutError, match="clique_id"):
        import_version_dataset("discogs_vi", bad, tmp_path, tmp_path / "c")
    with pytest.raises(DatasetLayoutError, match="not found"):
        import_version_dataset("shs100k", tmp_path / "nope", tmp_path, tmp_path / "c")
