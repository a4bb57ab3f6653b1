"""The packaged real material the voiceface tests use (fetched once into the avmatch cache)."""

from __future__ import annotations

import pytest


def face_photos() -> dict:
    from avmatch.voiceface.media_check import face_material

    faces, no_face, notes = face_material()
    by_stem = {p.stem: p for p in faces}
    if "obama" not in by_stem:
        pytest.skip(f"face_recognition test photos unavailable: {notes}")
    return {**by_stem, **{p.stem: p for p in no_face}}


def speech(per_speaker: int = 3, speakers: tuple[str, ...] = ("allison", "june", "armelle")) -> dict:
    from avmatch.voiceface.media_check import speech_material

    material, notes = speech_material(per_speaker, speakers=list(speakers))
    if len(material) < len(speakers) or min(len(v) for v in material.values()) < per_speaker:
        pytest.skip(f"Debian voice prompts unavailable: {notes}")
    return material
