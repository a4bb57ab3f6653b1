"""A user's voice-face database: enrol faces (photos, videos) or voices, then find, for a voice, the
enrolled faces it most likely belongs to -- or, for a face, the enrolled voices.

Each enrolled item keeps its expert vectors (one per expert of its modality; an expert that had
nothing to say about it -- no face found, too little speech -- is absent and masked in the fusion)
and its fused embedding from the trained model, so the model can be swapped later by re-fusing the
stored expert vectors without decoding media again.

The model must have been trained on the REAL experts this database computes (`avmatch.voiceface.
experts`, names and sizes checked); a model trained on the simulated demo cohort (`meta.simulated`)
is refused: its inputs were random vectors, not what any expert computes from a file, so its answers
on real media would mean nothing.

Layout of `--db DB` (`avmatch.core.db_store`, as the other systems' databases): `model.pt`,
`settings.json` and `items.parquet` form one version `snapshots/NNNNNN/`, published by replacing the
pointer `CURRENT`; `enrol` holds the writer lock from reading the published version to publishing
the next, so two enrols never lose each other's items; `match` reads one whole version.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.audio import MediaError
from avmatch.core.db_store import (
    DamagedDatabase,
    Snapshot,
    SnapshotStore,
    read_json,
    read_table,
    write_json_atomic,
    writer_lock,
)

MODALITIES = ("voice", "face")
ITEM_COLUMNS = ["item", "modality", "path", "vector", "experts"]
SIMULATED_REFUSAL = ("{path}: this model was trained on simulated expert embeddings (the demo cohort), not on "
                     "what the experts compute from real media, so it cannot match real voices and faces; "
                     "train on a real corpus: avmatch corpus import voiceface / a VoxCeleb-style folder")


class ModelRefused(ValueError):
    """The model cannot serve this database (simulated, other experts, or not a voiceface model)."""


def repair_command(root: Path) -> str:
    return f"move {root} aside and enrol the files again (avmatch voiceface enrol ... --db {root})"


def snapshots(root: Path) -> SnapshotStore:
    return SnapshotStore(root, repair_command(root))


def other(modality: str) -> str:
    return "face" if modality == "voice" else "voice"


def check_model(path: str | Path, experts: dict[str, list[str]] | None = None):
    """The model at `path`, loaded, after checking it was trained on the real experts (and on exactly
    `experts` when given: the experts a database already holds). Raises ModelRefused with the reason."""
    from avmatch.voiceface.experts import available_experts, load_expert
    from avmatch.voiceface.experts.base import ExpertLoadError
    from avmatch.voiceface.model import load_pair

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained voiceface model (train one: dvc repro voiceface_train, on a "
                                f"real corpus)")
    try:
        pair = load_pair(path)
    except Exception as exc:       # torch.load and the format check raise several kinds
        raise ModelRefused(f"{path}: not a readable voiceface model ({type(exc).__name__}: {exc})") from None
    if pair.simulated:
        raise ModelRefused(SIMULATED_REFUSAL.format(path=path))
    names = {"voice": pair.voice_experts, "face": pair.face_experts}
    unknown = [n for m in MODALITIES for n in names[m] if n not in available_experts()]
    if unknown:
        raise ModelRefused(f"{path}: the model was trained on expert(s) {unknown} that this installation does not "
                           f"compute (available: {', '.join(available_experts())}); "
                           + SIMULATED_REFUSAL.format(path=path).split("; ", 1)[1])
    if experts is not None and {m: list(experts[m]) for m in MODALITIES} != names:
        raise ModelRefused(f"{path}: the model was trained on experts {names}, but this database holds vectors of "
                           f"{experts}; use a model trained on the database's experts, or a new database")
    options = pair.meta.get("expert_options", {}) or {}
    dims = dict(pair.config["voice_experts"] + pair.config["face_experts"])
    for n, d in dims.items():
        try:
            got = load_expert(n, options.get(n, {})).dim
        except ExpertLoadError as exc:
            raise ModelRefused(f"{path}: {exc}") from None
        if got != d:
            raise ModelRefused(f"{path}: the model takes {d}-d vectors from expert {n}, which computes {got}-d here "
                               f"(trained with other expert options?)")
    return pair


@dataclass
class Match:
    item: str
    path: str
    score: float


class VoiceFaceDB:
    def __init__(self, root: Path, pair, items: pd.DataFrame, settings: dict, model: Path | None = None):
        self.root, self.pair, self.items, self.settings, self.model = root, pair, items, settings, model

    @classmethod
    def create(cls, root: str | Path, model: str | Path) -> "VoiceFaceDB":
        pair = check_model(model)
        settings = {"experts": {"voice": pair.voice_experts, "face": pair.face_experts},
                    "expert_options": pair.meta.get("expert_options", {}) or {}}
        return cls(Path(root), pair, pd.DataFrame(columns=ITEM_COLUMNS), settings, Path(model))

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        return snapshots(Path(root)).current() is not None

    @classmethod
    def load(cls, root: str | Path) -> "VoiceFaceDB":
        root = Path(root)
        store = snapshots(root)
        if store.current() is None:
            raise FileNotFoundError(f"{root}: no voiceface database (make one with `avmatch voiceface enrol FILES "
                                    f"--db {root} --model MODEL`)")
        return store.read(lambda snap: cls._read(root, snap))

    @classmethod
    def _read(cls, root: Path, snap: Snapshot | None) -> "VoiceFaceDB":
        assert snap is not None
        repair = repair_command(root)
        settings = read_json(snap.path("settings.json"), repair)
        items = read_table(snap.path("items.parquet"), pd.read_parquet, repair)
        pair = check_model(snap.path("model.pt"), settings["experts"])
        return cls(root, pair, items, settings, snap.path("model.pt"))

    def publish(self) -> int:
        store = snapshots(self.root)
        with store.publish() as staging:
            shutil.copy2(self.model, staging / "model.pt")
            write_json_atomic(staging / "settings.json", self.settings)
            self.items.to_parquet(staging / "items.parquet", index=False)
        self.model = store.current(check=False).path("model.pt")
        return int(store.published_version() or 0)

    def expert_vectors(self, path: Path, modality: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """({expert: vector} for the experts that could describe the file, {expert: why not} for the rest).
        Raises MediaError when no expert could (the reasons joined)."""
        from avmatch.voiceface.experts import ExpertUnavailable, load_expert

        vecs, why = {}, {}
        for name in self.settings["experts"][modality]:
            try:
                vecs[name] = load_expert(name, self.settings["expert_options"].get(name, {})).embed(path)
            except ExpertUnavailable as exc:
                why[name] = exc.reason
        if not vecs:
            raise MediaError(path, "; ".join(f"{n}: {r}" for n, r in why.items()))
        return vecs, why

    def fuse(self, modality: str, vecs: dict[str, np.ndarray]) -> np.ndarray:
        dims = dict(self.pair.config[f"{modality}_experts"])
        x = {n: (vecs[n] if n in vecs else np.zeros(d, np.float32))[None, :] for n, d in dims.items()}
        present = {n: np.array([n in vecs]) for n in dims}
        return self.pair.embed(modality, x, present)[0]

    def enrol(self, path: Path, item: str, modality: str) -> bool:
        """Add one file as an item of `modality`; False when it is there already."""
        if modality not in MODALITIES:
            raise ValueError(f"modality {modality!r}: use 'voice' or 'face'")
        same = self.items[(self.items["item"] == item) & (self.items["modality"] == modality)]
        if len(same):
            if Path(same["path"].iloc[0]).resolve() != Path(path).resolve():
                raise MediaError(path, f"another file is enrolled as {modality} item {item!r} "
                                       f"({same['path'].iloc[0]}); enrol it from a folder that tells them apart")
            return False
        vecs, _ = self.expert_vectors(Path(path), modality)
        row = {"item": item, "modality": modality, "path": str(path), "vector": self.fuse(modality, vecs).tolist(),
               "experts": {n: v.tolist() for n, v in vecs.items()}}
        self.items = pd.concat([self.items, pd.DataFrame([row])], ignore_index=True)
        return True

    def match(self, path: Path, modality: str = "voice", top: int = 10) -> list[Match]:
        """The enrolled items of the OTHER modality ranked by cosine with the file (of `modality`)."""
        vecs, _ = self.expert_vectors(Path(path), modality)
        q = self.fuse(modality, vecs)
        gallery = self.items[self.items["modality"] == other(modality)]
        if gallery.empty:
            return []
        g = np.stack([np.asarray(v, np.float32) for v in gallery["vector"]])
        scores = g @ q
        order = np.argsort(-scores, kind="stable")[:top]
        return [Match(str(gallery["item"].iloc[i]), str(gallery["path"].iloc[i]), float(scores[i])) for i in order]


def enrol_files(root: str | Path, files: Iterable[Path], base: Path, modality: str, model: Path | None,
                wait: float | None = None, say: Callable[[str], None] | None = None,
                skipped: Callable[[Path, str], None] | None = None) -> dict:
    """Enrol `files` (ids relative to `base`) as `modality` items and publish a new version. A new
    database needs `model`; an existing one keeps its own (a different `model` is refused: its fused
    vectors would not be comparable with the stored ones). Returns {"added", "failed", "items", "version"}."""
    from avmatch.core.manifest import item_id_for

    root = Path(root)
    with writer_lock(root, wait, say):
        if VoiceFaceDB.exists(root):
            db = VoiceFaceDB.load(root)
            if model is not None and Path(model).read_bytes() != Path(db.model).read_bytes():
                raise ModelRefused(f"{root}: the database fuses with its own model; {model} is another one, whose "
                                   f"vectors would not be comparable with the enrolled ones (use a new database)")
        elif model is None:
            raise FileNotFoundError(f"{root}: a new database needs --model (a trained voiceface model)")
        else:
            db = VoiceFaceDB.create(root, model)
        added = failed = 0
        for f in files:
            try:
                added += db.enrol(f, item_id_for(f, base), modality)
            except (MediaError, OSError) as exc:
                failed += 1
                if skipped:
                    skipped(f, str(getattr(exc, "reason", exc)))
        version = db.publish()
    return {"added": added, "failed": failed, "items": len(db.items), "version": version}
