"""A VoxCeleb-style folder of your own clips as a voiceface corpus (identities.parquet + tracks.parquet).

Layout read: `SOURCE/<identity>/<video>/<clip>.<ext>` as VoxCeleb ships it (`id10001/1zcIwhmdeo4/
00001.wav`, or the VGGFace1 names EFT uses, `A.J._Buckley/1zcIwhmdeo4/00001.wav`). A clip that is a
video gives one voice track (its soundtrack) and one face track (its frames); an audio file gives a
voice track; an image gives a face track, and a folder of images one level deeper
(`<identity>/<video>/<track>/<frame>.jpg`, VoxCeleb1's face-track frames) is one face track. Track ids
are the paths relative to SOURCE (unique within a modality, as EFT's ids are).

Identity facts come from an optional meta table like VoxCeleb's vox1_meta.csv (tab- or
comma-separated; columns `VoxCeleb1 ID`, `VGGFace1 ID`, `Gender`, `Nationality`, `Set`); a folder is
matched by either id. The split: `Set` values train/valid/test are used as they are; VoxCeleb's
dev/test become train/test with a seeded `valid_fraction` of the train identities held out for
validation; without a meta table (or with `split="seeded"`) identities are split by a seeded shuffle.
Without a meta table gender and nationality are "" (unknown): the gender- and nationality-constrained
evaluation lists then have nobody to constrain with, and say so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.audio import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from avmatch.voiceface.experts.media import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

META_COLUMNS = {"voxceleb1 id": "vox_id", "vggface1 id": "vgg_id", "gender": "gender",
                "nationality": "nationality", "set": "set"}
SET_NAMES = {"train": "train", "dev": "train", "valid": "valid", "val": "valid", "validation": "valid",
             "test": "test"}


def read_meta(path: str | Path) -> pd.DataFrame:
    """The meta table with columns vox_id, vgg_id, gender ("m"/"f"/""), nationality, set ("" if absent)."""
    df = pd.read_csv(path, sep=None, engine="python", dtype=str).fillna("")
    df.columns = [META_COLUMNS.get(c.strip().lower(), c.strip()) for c in df.columns]
    if "vox_id" not in df and "vgg_id" not in df:
        raise ValueError(f"{path}: no 'VoxCeleb1 ID' or 'VGGFace1 ID' column (columns: {list(df.columns)})")
    for col in ("vox_id", "vgg_id", "gender", "nationality", "set"):
        df[col] = df[col].str.strip() if col in df else ""
    df["gender"] = df["gender"].str.lower().str[:1].where(df["gender"].str.lower().str[:1].isin(["m", "f"]), "")
    df["set"] = df["set"].str.lower().map(SET_NAMES).fillna("")
    return df[["vox_id", "vgg_id", "gender", "nationality", "set"]]


def _seeded_split(ids: list[str], seed: int, fractions: tuple[float, float]) -> dict[str, str]:
    """valid / test fractions of `ids` by a seeded shuffle (at least one identity each when possible)."""
    order = sorted(ids)
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    n_test = max(1, int(round(fractions[1] * n))) if n >= 3 else 0
    n_valid = max(1, int(round(fractions[0] * n))) if n >= 3 else 0
    return {i: ("test" if k < n_test else "valid" if k < n_test + n_valid else "train") for k, i in enumerate(order)}


def scan_voxceleb_folder(source: str | Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """tracks (track, modality, identity, video, path, noisy) and [(file, why it was skipped)]."""
    source = Path(source)
    rows, skipped, frame_folders = [], [], set()
    for f in sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = f.relative_to(source)
        ext = f.suffix.lower()
        kinds = (["voice", "face"] if ext in VIDEO_EXTENSIONS else ["voice"] if ext in AUDIO_EXTENSIONS
                 else ["face"] if ext in IMAGE_EXTENSIONS else [])
        if not kinds:
            if rel.parts[0] != rel.name:      # a top-level file is the meta table or notes, not a clip
                skipped.append((str(f), f"not a media file ({ext or 'no extension'})"))
            continue
        if len(rel.parts) < 3:
            skipped.append((str(f), "not in an <identity>/<video>/ folder"))
            continue
        if f.stat().st_size == 0:
            skipped.append((str(f), "file is empty (0 bytes)"))
            continue
        if kinds == ["face"] and len(rel.parts) >= 4:       # a frame of a face track folder
            if f.parent not in frame_folders:
                frame_folders.add(f.parent)
                folder = rel.parent
                rows.append({"track": folder.as_posix(), "modality": "face", "identity": rel.parts[0],
                             "video": "/".join(rel.parts[:2]), "path": str(f.parent.resolve()), "noisy": False})
            continue
        for modality in kinds:
            rows.append({"track": rel.as_posix(), "modality": modality, "identity": rel.parts[0],
                         "video": "/".join(rel.parts[:2]), "path": str(f.resolve()), "noisy": False})
    cols = ["track", "modality", "identity", "video", "path", "noisy"]
    return pd.DataFrame(rows, columns=cols), skipped


def import_voxceleb_folder(source: str | Path, root: str | Path, meta: str | Path | None = None, *,
                           seed: int = 0, split: str = "meta", valid_fraction: float = 0.1,
                           test_fraction: float = 0.2) -> dict:
    """Write `root/identities.parquet` and `root/tracks.parquet` for the clips under `source`.

    Returns {"identities", "tracks": {modality: n}, "splits": {split: n identities}, "skipped": [(file,
    reason)], "unknown_meta": [identities the meta table does not list]}."""
    tracks, skipped = scan_voxceleb_folder(source)
    if tracks.empty:
        raise FileNotFoundError(f"{source}: no clips found in <identity>/<video>/<clip> folders")
    ids = sorted(tracks["identity"].unique())
    facts = {i: {"gender": "", "nationality": "", "set": ""} for i in ids}
    unknown: list[str] = []
    if meta is not None:
        table = read_meta(meta)
        by_id = {**{r.vgg_id: r for r in table.itertuples() if r.vgg_id},
                 **{r.vox_id: r for r in table.itertuples() if r.vox_id}}
        for i in ids:
            r = by_id.get(i)
            if r is None:
                unknown.append(i)
            else:
                facts[i] = {"gender": r.gender, "nationality": r.nationality, "set": r.set}
    if split == "meta" and meta is not None and all(facts[i]["set"] for i in ids):
        splits = {i: facts[i]["set"] for i in ids}
        if "valid" not in splits.values():
            train = [i for i in ids if splits[i] == "train"]
            held = _seeded_split(train, seed, (valid_fraction, 0.0))
            splits.update({i: "valid" for i, s in held.items() if s == "valid"})
    elif split in ("meta", "seeded"):
        if split == "meta" and meta is not None:
            log.warning("the meta table has no Set for every identity; splitting identities by seed %d", seed)
        splits = _seeded_split(ids, seed, (valid_fraction, test_fraction))
    else:
        raise ValueError(f"split must be 'meta' or 'seeded', not {split!r}")
    identities = pd.DataFrame({"identity": ids, "gender": [facts[i]["gender"] for i in ids],
                               "nationality": [facts[i]["nationality"] for i in ids],
                               "split": [splits[i] for i in ids]})
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, df in (("identities", identities), ("tracks", tracks)):
        tmp = root / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(root / f"{name}.parquet")
    return {"identities": len(ids), "tracks": tracks["modality"].value_counts().to_dict(),
            "splits": identities["split"].value_counts().to_dict(), "skipped": skipped, "unknown_meta": unknown}
