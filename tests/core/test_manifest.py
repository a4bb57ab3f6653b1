import numpy as np

from avmatch.core.manifest import build_manifest, scan_media
from avmatch.core.pcm_cache import decode_manifest, load_pcm


def test_bad_files_are_rows_with_reasons_and_good_ones_decode(audio_folder, tmp_path):
    files = scan_media(audio_folder)
    df = build_manifest(files, base=audio_folder)
    items = decode_manifest(df, tmp_path / "pcm", 8000, workers=2)
    by_name = {p.split("/")[-1]: r for p, r in zip(items["path"], items.to_dict("records"))}
    for i in range(6):
        name = [n for n in by_name if n.startswith(f"good_{i}.")][0]
        row = by_name[name]
        assert row["status"] == "ok", (name, row["error"])
        audio = load_pcm(row["pcm_file"])
        assert abs(len(audio) / 8000 - row["duration_s"]) < 1e-6
        assert len(audio) > 8000 * 3.5
    expected = {"empty.wav": "empty", "garbage.mp3": "not a readable", "notes.flac": "not",
                "nan.wav": "NaN", "silent.wav": "silent", "truncated.wav": "", "huge_header.wav": ""}  # any clear reason
    for name, words in expected.items():
        row = by_name[name]
        assert row["status"] == "error", f"{name} should be rejected"
        assert words in row["error"], (name, row["error"])


def test_metadata_cache_reuses_unchanged_rows(audio_folder, monkeypatch):
    files = scan_media(audio_folder)
    first = build_manifest(files, base=audio_folder)
    import avmatch.core.manifest as m

    calls = []
    real = m.probe_audio
    monkeypatch.setattr(m, "probe_audio", lambda p: calls.append(p) or real(p))
    again = build_manifest(files, base=audio_folder, previous=first)
    ok = (first["status"] == "ok").sum()
    # only the bad files are probed again (they may have been fixed since)
    assert len(calls) == len(files) - ok
    assert list(again["content_hash"]) == list(first["content_hash"])


def test_ids_are_relative_paths_without_extension(audio_folder):
    df = build_manifest(scan_media(audio_folder), base=audio_folder)
    assert "bad/empty" in set(df["id"]) and "good_0" in set(df["id"])
    assert np.all(df["id"].str.len() > 0)
