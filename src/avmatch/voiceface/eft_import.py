"""Convert EFT's released VoxCeleb1 data (ICME 2023, dataset.zip) once into our voice–face corpus layout, so
the pipeline trains and evaluates on EFT's expert features and lists without reading pickles again.

EFT's layout (its Readme and loaders/loader.py, utils/eval_util.py):

- dataset/info/train_valid_test_names.pkl: {"train": [...], "valid": [...], "test": [...]} identity names
  (VGGFace1 spelling, e.g. "Luke_Arnold"); 901 / 100 / 250 identities.
- dataset/info/name2tracks.pkl: {name: ["Name/1.6/<youtube id>/<clip>", ...]}: the face tracks; the voice of
  the same clip is "Name/<youtube id>/<clip as 5 digits>.wav" (VoxCeleb1's wav naming).
- dataset/info/name2movies.pkl: {name: [youtube ids]} (not needed: the video is in the track id).
- dataset/features/<Name>/<youtube id>/<clip>/compact.pkl: {expert name: vector} with the voice experts (v_*)
  and the face experts (f_*) of that clip.
- dataset/evals/<list>.pkl (see evals.py) and dataset/evals/vox1_meta.csv (VoxCeleb1's meta table: VGGFace1
  ID, Gender m/f, Nationality, tab separated).

Our layout (docs/datasets.md): identities.parquet, tracks.parquet, experts/<expert>.parquet,
experts/missing.parquet, evals/<list>.parquet.

Every file read here is a pickle from the folder the user named (unpickling can run code, so a warning is
logged and only builtin and numpy types are accepted). EFT's loader drops one corrupted training track
(Moon_Bloodgood/1.6/JBhcgwl2pO0/2); here any track whose compact.pkl is absent or unreadable is recorded in
experts/missing.parquet with the reason, never silently dropped.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from avmatch.core.progress import progress
from avmatch.voiceface.evals import (
    EvalListError,
    load_eft_pickle,
    read_eval_lists,
    write_eval_lists,
)

log = logging.getLogger(__name__)

SPLIT_KEYS = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
_BATCH = 2000


class EftLayoutError(ValueError):
    """The folder is not EFT's dataset layout; the message names what is missing."""


def _dataset_dir(source: Path) -> Path:
    source = Path(source).expanduser()
    for cand in (source / "dataset", source):
        if (cand / "info").is_dir():
            return cand
    raise EftLayoutError(f"{source}: no EFT dataset here (expected {source}/dataset/info/ or {source}/info/)")


def _meta(ds: Path) -> pd.DataFrame:
    for path in (ds / "evals" / "vox1_meta.csv", ds / "info" / "vox1_meta.csv", ds / "vox1_meta.csv"):
        if path.is_file():
            for sep in ("\t", ","):
                df = pd.read_csv(path, sep=sep, dtype=str)
                df.columns = [c.strip() for c in df.columns]
                if {"VGGFace1 ID", "Gender", "Nationality"} <= set(df.columns):
                    return pd.DataFrame({"identity": df["VGGFace1 ID"].str.strip(),
                                         "gender": df["Gender"].str.strip().str.lower(),
                                         "nationality": df["Nationality"].str.strip()})
            raise EftLayoutError(f"{path}: needs columns 'VGGFace1 ID', 'Gender', 'Nationality'")
    raise EftLayoutError(f"{ds}: no vox1_meta.csv (expected {ds}/evals/vox1_meta.csv); gender and nationality "
                         "are needed for the constrained lists")


def _load(path: Path) -> object:
    if not path.is_file():
        raise EftLayoutError(f"{path}: missing")
    try:
        return load_eft_pickle(path)
    except EvalListError as exc:
        raise EftLayoutError(str(exc)) from None


def voice_of(face_track: str) -> str:
    """'Name/1.6/ytid/13' -> 'Name/ytid/00013.wav' (the voice of the same clip, as EFT names it)."""
    parts = face_track.split("/")
    if len(parts) != 4 or parts[1] != "1.6":
        raise EftLayoutError(f"unexpected EFT face track id {face_track!r} (expected Name/1.6/<video>/<clip>)")
    return f"{parts[0]}/{parts[2]}/{int(parts[3]):05d}.wav"


def features_dir(track: str) -> Path:
    """The features folder of a voice or face track, relative to dataset/ (EFT's eval_util mapping)."""
    parts = track.split("/")
    if track.endswith(".wav"):
        return Path("features", parts[0], parts[1], str(int(parts[-1][:-4])))
    return Path("features", *track.replace("/1.6/", "/").split("/"))


class _ExpertWriter:
    """Streams one expert's (track, vector) rows to Parquet in batches (EFT has ~150k tracks)."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_suffix(".parquet.tmp")
        self.rows: list[tuple[str, np.ndarray]] = []
        self.writer: pq.ParquetWriter | None = None
        self.dim: int | None = None
        self.count = 0

    def add(self, track: str, vec: np.ndarray) -> None:
        if self.dim is None:
            self.dim = vec.size
        elif vec.size != self.dim:
            raise ValueError(f"dimension {vec.size}, the expert's first vector has {self.dim}")
        self.rows.append((track, vec))
        if len(self.rows) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.table({"track": pa.array([t for t, _ in self.rows], pa.string()),
                          "vector": pa.array([v for _, v in self.rows], pa.list_(pa.float32()))})
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        self.count += len(self.rows)
        self.rows = []

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.tmp.replace(self.path)


def import_eft(source: Path | str, root: Path | str) -> dict:
    """Convert the EFT dataset under `source` (the EFT project root or its dataset/ folder) into the corpus
    folder `root`. Returns counts; tracks without features are listed in experts/missing.parquet."""
    ds = _dataset_dir(Path(source))
    root = Path(root)
    log.warning("importing EFT's pickles from %s: unpickling can execute code; they are read only because "
                "you named this folder (only builtin and numpy types are accepted)", ds)
    names = _load(ds / "info" / "train_valid_test_names.pkl")
    name2tracks = _load(ds / "info" / "name2tracks.pkl")
    if not isinstance(names, dict) or not isinstance(name2tracks, dict):
        raise EftLayoutError(f"{ds / 'info'}: train_valid_test_names.pkl and name2tracks.pkl must hold dicts")
    split_of: dict[str, str] = {}
    for split, keys in SPLIT_KEYS.items():
        key = next((k for k in keys if k in names), None)
        if key is None:
            raise EftLayoutError(f"{ds / 'info' / 'train_valid_test_names.pkl'}: no {split!r} names")
        split_of.update({str(n): split for n in names[key]})

    meta = _meta(ds).drop_duplicates("identity").set_index("identity")
    unknown = sorted(set(split_of) - set(meta.index))
    if unknown:
        log.warning("%d identities are not in vox1_meta.csv (gender/nationality 'unknown'), e.g. %s",
                    len(unknown), unknown[0])
    identities = pd.DataFrame({
        "identity": list(split_of),
        "gender": [meta["gender"].get(n, "unknown") for n in split_of],
        "nationality": [meta["nationality"].get(n, "unknown") for n in split_of],
        "split": list(split_of.values()),
    }).sort_values("identity").reset_index(drop=True)

    # evaluation lists first: their tracks join the corpus even if name2tracks lacks them
    evals = None
    if (ds / "evals").is_dir():
        try:
            evals = read_eval_lists(ds / "evals", allow_pickle=True)
        except FileNotFoundError:
            log.warning("%s: no evaluation lists", ds / "evals")
    face_tracks = {str(t) for n in split_of for t in name2tracks.get(n, [])}
    voice_tracks = {voice_of(t) for t in face_tracks}
    if evals is not None:
        face_tracks |= evals.tracks("face")
        voice_tracks |= evals.tracks("voice")
    rows = []
    for modality, ts in (("voice", voice_tracks), ("face", face_tracks)):
        for t in sorted(ts):
            parts = t.split("/")
            video = parts[1] if modality == "voice" else (parts[2] if len(parts) > 2 else "")
            rows.append((t, modality, parts[0], video, "", False))
    tracks = pd.DataFrame(rows, columns=["track", "modality", "identity", "video", "path", "noisy"])
    outside = tracks[~tracks["identity"].isin(split_of)]
    if len(outside):
        raise EftLayoutError(f"{len(outside)} tracks belong to no split's identity, e.g. {outside['track'].iloc[0]}")

    # features: one compact.pkl per clip holds both modalities' experts
    expert_dir = root / "experts"
    tmp_dir = root / "experts.importing"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    writers: dict[str, _ExpertWriter] = {}
    present: dict[str, set[str]] = {}
    failed: dict[str, str] = {}
    clips: dict[Path, list[str]] = {}
    for t in tracks["track"]:
        clips.setdefault(features_dir(t), []).append(t)
    for rel in progress(sorted(clips), "EFT features", total=len(clips), unit="clip"):
        path = ds / rel / "compact.pkl"
        if not path.is_file():
            for t in clips[rel]:
                failed[t] = f"no features file {path}"
            continue
        try:
            feats = load_eft_pickle(path)
            if not isinstance(feats, dict):
                raise ValueError(f"holds {type(feats).__name__}, not a dict")
        except (EvalListError, ValueError) as exc:
            for t in clips[rel]:
                failed[t] = f"unreadable {path}: {exc}"
            continue
        for t in clips[rel]:
            prefix = "v_" if t.endswith(".wav") else "f_"
            for name, vec in feats.items():
                name = str(name)
                if not name.startswith(prefix):
                    continue
                v = np.asarray(vec, dtype=np.float32).reshape(-1)
                if not np.isfinite(v).all():
                    continue  # counted as missing below
                w = writers.get(name) or writers.setdefault(name, _ExpertWriter(tmp_dir / f"{name}.parquet"))
                try:
                    w.add(t, v)
                except ValueError as exc:
                    raise EftLayoutError(f"{path}: expert {name}: {exc}") from None
                present.setdefault(t, set()).add(name)
    for w in writers.values():
        w.close()
    if clips and not writers:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        first = next(iter(failed.values()), "no v_* / f_* entries in any compact.pkl")
        raise EftLayoutError(f"{ds / 'features'}: no expert vector could be read from {len(clips)} clips; "
                             f"e.g. {first}")

    missing = []
    for r in tracks.itertuples():
        prefix = "v_" if r.modality == "voice" else "f_"
        for name in sorted(n for n in writers if n.startswith(prefix)):
            if name not in present.get(r.track, ()):
                missing.append((r.track, name, failed.get(r.track, "expert absent or not finite in compact.pkl")))
    pd.DataFrame(missing, columns=["track", "expert", "reason"]).to_parquet(tmp_dir / "missing.parquet", index=False)

    root.mkdir(parents=True, exist_ok=True)
    identities.to_parquet(root / "identities.parquet", index=False)
    tracks.to_parquet(root / "tracks.parquet", index=False)
    shutil.rmtree(expert_dir, ignore_errors=True)
    tmp_dir.replace(expert_dir)
    if evals is not None:
        write_eval_lists(evals, root / "evals")
    return {
        "identities": {s: int((identities["split"] == s).sum()) for s in SPLIT_KEYS},
        "tracks": {m: int((tracks["modality"] == m).sum()) for m in ("voice", "face")},
        "experts": {n: w.count for n, w in sorted(writers.items())},
        "missing": len(missing),
        "tracks_without_features": len(failed),
        "evals": evals.names() if evals is not None else [],
        "root": str(root),
    }
