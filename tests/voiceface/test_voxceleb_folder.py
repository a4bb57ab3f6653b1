"""A VoxCeleb-style folder (id/video/clip.mp4 + vox1_meta.csv) built from packaged photos and speech
becomes identities.parquet + tracks.parquet, and its clips give real voice and face vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avmatch.core.audio import decode_audio
from avmatch.voiceface.clips import write_clip
from avmatch.voiceface.experts import extract_experts, read_expert_vectors
from avmatch.voiceface.voxceleb_folder import import_voxceleb_folder, read_meta
from tests.voiceface._vf_material import face_photos, speech

META = ("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
        "id10001\tBarack_Obama\tm\tUSA\tdev\n"
        "id10002\tJoe_Biden\tm\tUSA\tdev\n"
        "id10003\tEileen_Collins\tf\tUSA\ttest\n"
        "id10004\tNobody_Here\tf\tFrance\tdev\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    photos, voices = face_photos(), speech(per_speaker=1)
    src = tmp_path_factory.mktemp("vox")
    people = {"Barack_Obama": ("obama", "allison"), "Joe_Biden": ("biden", "june"),
              "Eileen_Collins": ("astronaut", "armelle")}
    for person, (photo, speaker) in people.items():
        img = Image.open(photos[photo]).convert("RGB")
        img.thumbnail((480, 480))
        audio = decode_audio(voices[speaker][0], 16000)
        write_clip(src / person / "yt1" / "00001.mp4", np.asarray(img), len(audio) / 16000, audio, 16000, fps=2)
    frames = src / "Eileen_Collins" / "yt1" / "1.6"          # VoxCeleb1's face track: a folder of frames
    frames.mkdir()
    for i in range(2):
        Image.open(photos["astronaut"]).convert("RGB").resize((224, 224)).save(frames / f"{i:04d}.jpg")
    (src / "Joe_Biden" / "yt2").mkdir()
    (src / "Joe_Biden" / "yt2" / "00001.wav").write_bytes(b"")                 # empty: skipped, named
    (src / "Joe_Biden" / "yt2" / "notes.txt").write_text("not media")
    (src / "vox1_meta.csv").write_text(META)
    return src


def test_meta_table_is_read_like_voxcelebs(folder):
    meta = read_meta(folder / "vox1_meta.csv")
    assert list(meta.columns) == ["vox_id", "vgg_id", "gender", "nationality", "set"]
    assert meta.set.tolist() == ["train", "train", "test", "train"] and meta.gender.tolist() == ["m", "m", "f", "f"]


def test_folder_becomes_a_corpus_and_clips_give_both_modalities(folder, tmp_path):
    r = import_voxceleb_folder(folder, tmp_path, folder / "vox1_meta.csv", seed=3)
    ids = pd.read_parquet(tmp_path / "identities.parquet")
    tracks = pd.read_parquet(tmp_path / "tracks.parquet")
    assert list(ids.columns) == ["identity", "gender", "nationality", "split"]
    assert list(tracks.columns) == ["track", "modality", "identity", "video", "path", "noisy"]
    assert dict(zip(ids.identity, ids.gender)) == {"Barack_Obama": "m", "Joe_Biden": "m", "Eileen_Collins": "f"}
    split = dict(zip(ids.identity, ids.split))
    assert split["Eileen_Collins"] == "test" and set(split.values()) <= {"train", "valid", "test"}
    assert r["tracks"] == {"voice": 3, "face": 4}
    assert "Eileen_Collins/yt1/1.6" in set(tracks.loc[tracks.modality == "face", "track"])
    assert sorted(s[1] for s in r["skipped"]) == ["file is empty (0 bytes)", "not a media file (.txt)"]
    assert set(tracks.loc[tracks.identity == "Joe_Biden", "video"]) == {"Joe_Biden/yt1"}

    out = tmp_path / "experts"
    res = extract_experts(tracks, ["v_mfcc", "f_dlib"], out)
    assert res["experts"]["v_mfcc"]["computed"] == 3 and res["experts"]["f_dlib"]["computed"] == 4
    faces = read_expert_vectors(out, "f_dlib")
    v = np.stack([faces[f"{p}/yt1/00001.mp4"] for p in ("Barack_Obama", "Joe_Biden", "Eileen_Collins")])
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4) and (v @ v.T)[0, 1] < 0.95

    again = import_voxceleb_folder(folder, tmp_path / "seeded", None, seed=3, split="seeded")
    ids2 = pd.read_parquet(tmp_path / "seeded" / "identities.parquet")
    assert again["identities"] == 3 and sorted(ids2.split) == ["test", "train", "valid"]
    assert set(ids2.gender) == {""}


def test_corpus_import_voiceface_command(folder, tmp_path):
    import json

    from typer.testing import CliRunner

    from avmatch.cli import app

    r = CliRunner().invoke(app, ["corpus", "import", "voiceface", str(folder), "--root", str(tmp_path / "c"),
                                 "--meta", str(folder / "vox1_meta.csv")])
    assert r.exit_code == 1, r.output                     # the empty wav and the notes file are named
    assert "file is empty" in r.stderr and "notes.txt" in r.stderr
    out = json.loads(r.stdout)
    assert out["identities"] == 3 and out["tracks"] == {"voice": 3, "face": 4} and out["bad_files"] == 2
    assert (tmp_path / "c" / "tracks.parquet").exists()
