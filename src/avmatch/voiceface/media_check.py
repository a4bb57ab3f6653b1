"""Run the real experts end to end on real speech and real face photos that packages ship, and measure.

Material (fetched once into the avmatch cache, `$AVMATCH_CACHE` or ~/.cache/avmatch, like the other
corpora; nothing is bundled in the repository):

- face photos: the test images of the `face_recognition` sdist from PyPI (Barack Obama in three photos
  and two partial-face crops, Joe Biden), scikit-image's `astronaut` (Eileen Collins); photos without
  a face: scikit-image's `coffee`, `rocket` and `chelsea` (a cat).
- speech: Asterisk voice prompts from Debian, one professional speaker per package: Allison Smith
  (asterisk-core-sounds-en-wav), June Wallack (asterisk-core-sounds-fr-wav), Armelle Desjardins
  (asterisk-prompt-fr-armelle), July E. Jimenez (asterisk-prompt-es-co), the it_IT Menardi voice
  (asterisk-prompt-it-menardi-wav). All five are women, so "different speaker" is never just
  "different sex", and the languages differ.

Numbers (`run_media_check`): faces found on the photos with a face (and on those without), the f_dlib
cosine of each face photo with its 90 % centre crop and with a JPEG quality-30 re-encoding, same- vs
different-person f_dlib cosines, and per voice expert the mean same-speaker and different-speaker
cosines and the fraction of (same-speaker pair, different-speaker pair) combinations where the
same-speaker pair is the closer one (an AUC), plus each expert's speed in ms per track.
Material that cannot be had (no apt, no PyPI) is skipped with the reason in the result, never faked.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from avmatch.core.debian import DebianUnavailable, cache_root, fetch_package

log = logging.getLogger(__name__)

FACE_RECOGNITION_SDIST = "face_recognition==1.3.0"
FACE_PHOTOS = {  # file in the sdist's tests/test_images -> person
    "obama.jpg": "obama", "obama2.jpg": "obama", "obama3.jpg": "obama", "obama_partial_face.jpg": "obama",
    "obama_partial_face2.jpg": "obama", "biden.jpg": "biden"}
SKIMAGE_FACES = {"astronaut": "collins"}
SKIMAGE_NO_FACE = ("coffee", "rocket", "chelsea")
SPEAKERS = {  # speaker -> (Debian package, folder glob inside it)
    "allison": ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/en_US_f_Allison/*.wav"),
    "june": ("asterisk-core-sounds-fr-wav", "usr/share/asterisk/sounds/fr_CA_f_June/*.wav"),
    "armelle": ("asterisk-prompt-fr-armelle", "usr/share/asterisk/sounds/fr/*.gsm"),
    "july": ("asterisk-prompt-es-co", "usr/share/asterisk/sounds/es/*.gsm"),
    "menardi": ("asterisk-prompt-it-menardi-wav", "usr/share/asterisk/sounds/it_IT_f_Menardi/*.wav"),
}


class MaterialUnavailable(RuntimeError):
    """The packaged material cannot be had here (no registry, no apt); the reason says which."""


def _cache(cache: Path | None) -> Path:
    return Path(cache) if cache else cache_root()


def face_recognition_images(cache: Path | None = None) -> Path:
    """The face_recognition sdist's test photos (downloaded with pip once, then read from the cache)."""
    folder = _cache(cache) / "sdists" / "face_recognition-test_images"
    if (folder / ".complete").exists():
        return folder
    sdists = _cache(cache) / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    found = sorted(sdists.glob("face_recognition-*.tar.gz"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
               "--quiet", FACE_RECOGNITION_SDIST, "-d", str(sdists)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MaterialUnavailable(f"pip download {FACE_RECOGNITION_SDIST} failed: {exc}") from None
        found = sorted(sdists.glob("face_recognition-*.tar.gz"))
        if proc.returncode != 0 or not found:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise MaterialUnavailable(f"pip download {FACE_RECOGNITION_SDIST} failed: {tail[-1] if tail else proc.returncode}")
    tmp = Path(tempfile.mkdtemp(prefix=".fr-", dir=sdists))
    with tarfile.open(found[-1]) as tar:
        for m in tar.getmembers():
            if "/tests/test_images/" in m.name and m.isfile() and Path(m.name).name in FACE_PHOTOS:
                (tmp / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    (tmp / ".complete").write_text(found[-1].name)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def skimage_photos(cache: Path | None = None) -> dict[str, Path]:
    """scikit-image's sample photos used here, saved as PNG files in the cache."""
    from PIL import Image
    from skimage import data

    folder = _cache(cache) / "skimage"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in (*SKIMAGE_FACES, *SKIMAGE_NO_FACE):
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(getattr(data, name)()).save(path.with_suffix(".tmp.png"))
            path.with_suffix(".tmp.png").rename(path)
        out[name] = path
    return out


def face_material(cache: Path | None = None) -> tuple[dict[Path, str], list[Path], list[str]]:
    """({photo: person} with a face, [photos without a face], [notes on material not available])."""
    notes: list[str] = []
    faces: dict[Path, str] = {}
    try:
        folder = face_recognition_images(cache)
        faces.update({folder / n: p for n, p in FACE_PHOTOS.items() if (folder / n).exists()})
    except MaterialUnavailable as exc:
        notes.append(str(exc))
    sk = skimage_photos(cache)
    faces.update({sk[n]: p for n, p in SKIMAGE_FACES.items()})
    return faces, [sk[n] for n in SKIMAGE_NO_FACE], notes


def speech_material(per_speaker: int = 8, min_seconds: float = 2.5, max_seconds: float = 8.0, speakers: list[str] | None = None,
                    cache: Path | None = None) -> tuple[dict[str, list[Path]], list[str]]:
    """({speaker: the first `per_speaker` prompts (sorted by name) `min_seconds` to `max_seconds` long},
    notes)."""
    from avmatch.core.audio import MediaError, decode_audio

    out: dict[str, list[Path]] = {}
    notes: list[str] = []
    for speaker in speakers or list(SPEAKERS):
        package, pattern = SPEAKERS[speaker]
        try:
            pkg = fetch_package(package, cache and Path(cache))
        except DebianUnavailable as exc:
            notes.append(f"speaker {speaker}: {exc}")
            continue
        chosen = []
        for f in sorted(pkg.root.glob(pattern)):
            try:
                if min_seconds * 8000 <= len(decode_audio(f, 8000)) <= max_seconds * 8000:
                    chosen.append(f)
            except MediaError:
                continue
            if len(chosen) == per_speaker:
                break
        out[speaker] = chosen
    return out, notes


def _variants(photo: Path, folder: Path) -> dict[str, Path]:
    """The photo's 90 % centre crop (lossless PNG) and its JPEG quality-30 re-encoding."""
    from PIL import Image

    with Image.open(photo) as im:
        im = im.convert("RGB")
        w, h = im.size
        dx, dy = int(round(w * 0.05)), int(round(h * 0.05))
        crop, jpeg = folder / f"{photo.stem}.crop90.png", folder / f"{photo.stem}.q30.jpg"
        im.crop((dx, dy, w - dx, h - dy)).save(crop)
        im.save(jpeg, quality=30)
    return {"crop90": crop, "jpeg30": jpeg}


def same_closer_fraction(vectors: dict[str, list[np.ndarray]]) -> dict:
    """Mean same- and different-speaker cosines, and the fraction of (same pair, different pair)
    combinations where the same pair has the higher cosine (ties count half): an AUC."""
    names = [n for n in vectors if len(vectors[n]) > 0]
    same, diff = [], []
    for i, a in enumerate(names):
        A = np.stack(vectors[a]).astype(np.float64)
        A /= np.linalg.norm(A, axis=1, keepdims=True)
        same.extend((A @ A.T)[np.triu_indices(len(A), 1)])
        for b in names[i + 1:]:
            B = np.stack(vectors[b]).astype(np.float64)
            B /= np.linalg.norm(B, axis=1, keepdims=True)
            diff.extend((A @ B.T).ravel())
    same_a, diff_a = np.asarray(same), np.asarray(diff)
    if not len(same_a) or not len(diff_a):
        return {"same_mean": float("nan"), "diff_mean": float("nan"), "same_closer": float("nan"),
                "same_pairs": len(same_a), "diff_pairs": len(diff_a)}
    order = np.sort(diff_a)
    below = np.searchsorted(order, same_a, "left")
    ties = np.searchsorted(order, same_a, "right") - below
    frac = float((below + 0.5 * ties).sum() / (len(same_a) * len(diff_a)))
    return {"same_mean": float(same_a.mean()), "diff_mean": float(diff_a.mean()), "same_closer": frac,
            "same_pairs": len(same_a), "diff_pairs": len(diff_a)}


def _timed(expert, path: Path, times: list[float]):
    t0 = time.perf_counter()
    try:
        return expert.embed(path)
    finally:
        times.append(time.perf_counter() - t0)


def run_media_check(voice_experts: tuple[str, ...] = ("v_resemblyzer", "v_mfcc"),
                    face_experts: tuple[str, ...] = ("f_dlib", "f_landmarks"),
                    per_speaker: int = 8, speakers: list[str] | None = None, photos: list[str] | None = None,
                    cache: Path | None = None, options: dict[str, dict] | None = None) -> dict:
    """Measure the real experts on the packaged photos and speech; see the module docstring.

    `photos` limits the face photos to these file stems (None: all); `speakers` the speakers."""
    from avmatch.voiceface.experts import ExpertUnavailable, load_expert

    options = options or {}
    result: dict = {"notes": [], "speed_ms": {}}
    times: dict[str, list[float]] = {}
    experts = {n: load_expert(n, options.get(n, {})) for n in (*voice_experts, *face_experts)}

    faces, no_face, notes = face_material(cache)
    result["notes"] += notes
    if photos is not None:
        faces = {p: who for p, who in faces.items() if p.stem in photos}
        no_face = [p for p in no_face if p.stem in photos]
    if faces and "f_dlib" in experts:
        dlib_expert = experts["f_dlib"]
        found, vec, cos = {}, {}, {"crop90": [], "jpeg30": []}
        with tempfile.TemporaryDirectory(prefix="avmatch-vf-check-") as tmp:
            for photo in sorted(faces):
                try:
                    vec[photo] = _timed(dlib_expert, photo, times.setdefault("f_dlib", []))
                    found[photo.name] = True
                except ExpertUnavailable:
                    found[photo.name] = False
                    continue
                for name in face_experts:
                    if name != "f_dlib":
                        try:
                            _timed(experts[name], photo, times.setdefault(name, []))
                        except ExpertUnavailable:
                            pass
                for kind, path in _variants(photo, Path(tmp)).items():
                    try:
                        cos[kind].append(float(vec[photo] @ dlib_expert.embed(path)))
                    except ExpertUnavailable:
                        cos[kind].append(float("nan"))     # the face was lost: counts as a failure
            false_faces = []
            for photo in no_face:
                try:
                    dlib_expert.embed(photo)
                    false_faces.append(photo.name)
                except ExpertUnavailable:
                    pass
        result["faces_found"] = sum(found.values())
        result["face_photos"] = len(faces)
        result["faces_missed"] = sorted(n for n, ok in found.items() if not ok)
        result["no_face_photos"] = len(no_face)
        result["false_faces"] = false_faces
        for kind, values in cos.items():
            v = np.asarray(values)
            result[f"f_dlib_cos_{kind}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            result[f"f_dlib_cos_{kind}_min"] = float(np.min(v)) if len(v) else float("nan")   # nan if a face was lost
        by_person: dict[str, list[np.ndarray]] = {}
        for photo, v in vec.items():
            by_person.setdefault(faces[photo], []).append(v)
        result["f_dlib_identity"] = same_closer_fraction(by_person)

    material, notes = speech_material(per_speaker, speakers=speakers, cache=cache)
    result["notes"] += notes
    result["speakers"] = {s: len(v) for s, v in material.items()}
    for name in voice_experts:
        vectors: dict[str, list[np.ndarray]] = {}
        unavailable = []
        for speaker, files in material.items():
            for f in files:
                try:
                    vectors.setdefault(speaker, []).append(_timed(experts[name], f, times.setdefault(name, [])))
                except ExpertUnavailable as exc:
                    unavailable.append(f"{f.name}: {exc.reason}")
        result[name] = {**same_closer_fraction(vectors), "unavailable": unavailable}
    # the first call of each expert warms it up (lazy model pieces, caches): left out of the speed
    result["speed_ms"] = {n: 1000 * float(np.mean(t[1:] if len(t) > 1 else t)) for n, t in times.items() if t}
    return result
