"""Which encoder a versions database uses, and how a file becomes segment embeddings with it.

Segment embeddings of two encoders cannot be compared, so a database is bound to one: the first
`add` finds it (`--model`, else the project's trained `models/versions/encoder.pt` wherever the
command runs: `avmatch.core.model_lookup`), keeps a copy (`DB/model.pt`) with its hash and source in
db.json, and every later command uses that copy: retraining the project's encoder does not change
what an existing database answers. A `--model` that is not the database's encoder is an error
naming both.

A file shorter than one segment (20 s by default) is not refused: its CQT is looped to one segment's
length and embedded as one segment spanning the whole file. On the demo corpus, a 10 s excerpt
embedded this way is closest to its own full track as often as with a shorter, unpadded segment and
much more often than zero-padded (docs/versions_cli.md, "Short files").
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avmatch.core.audio import MediaError, decode_audio
from avmatch.core.db_store import read_json, write_json_atomic
from avmatch.core.hashing import file_hash
from avmatch.core.model_lookup import (
    ModelNotFound,
    given_model,
    locate_model,
)
from avmatch.core.pcm_cache import silence_reason
from avmatch.versions.cqt import cqt, frames_per_second, segment_frames
from avmatch.versions.model import VersionEncoder, load_encoder
from avmatch.versions.params import CQTParams, VerAudioParams
from avmatch.versions.training import embed_windows

ENCODER_REL = Path("models") / "versions" / "encoder.pt"
META = "db.json"
MODEL_COPY = "model.pt"
MIN_AUDIO_S = 1.0     # below this there is too little music to compare


class TooShort(ValueError):
    """The audio is too short to embed (less than MIN_AUDIO_S)."""


class EncoderMismatch(RuntimeError):
    """A `--model` that is not the encoder the database was built with; the message names both."""


def loop_to(feat: np.ndarray, frames: int) -> np.ndarray:
    """[n, bins] features repeated (looped) to exactly `frames` frames."""
    return feat[np.arange(frames) % len(feat)]


@dataclass
class Embedder:
    model: VersionEncoder
    audio: VerAudioParams
    cqt: CQTParams
    device: torch.device
    model_hash: str

    @classmethod
    def load(cls, encoder: Path, device: torch.device | str = "cpu") -> Embedder:
        model, cfg = load_encoder(encoder, device)
        return cls(model, VerAudioParams(**cfg["audio"]), CQTParams(**cfg["cqt"]), torch.device(device),
                   file_hash(encoder))

    def embed_file(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors [n, d], start_s, end_s) of one audio file; MediaError (also for silence) / TooShort
        with a reason.
        A file shorter than one segment gives one segment, 0 s to its end, its CQT looped to length."""
        sr = self.audio.sample_rate
        audio = decode_audio(path, sr)
        duration = len(audio) / sr
        if duration < MIN_AUDIO_S:
            raise TooShort(f"too short to compare ({duration:.2f} s of audio < {MIN_AUDIO_S:g} s)")
        if silence_reason(audio):
            raise MediaError(path, silence_reason(audio))
        fps = frames_per_second(self.cqt)
        seg = int(round(self.audio.segment_s * fps))
        feat = cqt(audio, sr, self.cqt)
        if len(feat) < seg:
            vecs = embed_windows(self.model, loop_to(feat, seg).T[None].astype(np.float32), self.device)
            return vecs, np.zeros(1, np.float32), np.full(1, duration, np.float32)
        win, starts = segment_frames(feat, seg, max(1, int(round(self.audio.hop_s * fps))))
        vecs = embed_windows(self.model, win, self.device)
        return vecs, (starts / fps).astype(np.float32), ((starts + seg) / fps).astype(np.float32)


def locate_encoder(model: Path | None) -> Path:
    """The encoder a new database is built with: `--model` (relative to the working directory), else
    the project's trained encoder wherever the command runs; ModelNotFound says what to do."""
    return locate_model(model, ENCODER_REL, "versions encoder", "`dvc repro versions_train` (or `make demo-versions`)",
                        "avmatch versions add")


def database_encoder(db: Path, repair: str) -> tuple[Path, dict]:
    """(the encoder file an existing database uses, its db.json): its own copy, or for a database made
    before copies were kept the file it recorded, which must still have the recorded hash."""
    meta = read_json(db / META, repair)
    copy = db / meta.get("model", MODEL_COPY)
    if copy.is_file():
        return copy, meta
    recorded = Path(meta["encoder"])
    if not recorded.is_file() or file_hash(recorded) != meta["model_hash"]:
        raise ModelNotFound(f"{db} was built with the encoder {recorded} (hash {meta['model_hash']}), which is "
                            f"{'changed' if recorded.is_file() else 'gone'} and the database keeps no copy; pass "
                            f"that encoder with --model, or build a new database")
    return recorded, meta


def check_encoder(db: Path, meta: dict, model: Path) -> None:
    """EncoderMismatch unless `model` is the encoder the database was built with."""
    path = given_model(model, ENCODER_REL)
    given = file_hash(path)
    if given != meta["model_hash"]:
        raise EncoderMismatch(
            f"--model {model} (hash {given}) is not the encoder of the database {db}, which was built with "
            f"{meta.get('encoder', 'an unrecorded file')} (hash {meta['model_hash']}). Leave out --model to use the "
            f"database's own copy, or build a new database (another --db) with this encoder.")


def encoder_for(db: Path, model: Path | None, repair: str) -> Path:
    """The encoder `add` uses on `db`: the database's own once it has one (`model` must then be the
    same encoder), else the one `locate_encoder` finds."""
    if (db / META).exists():
        path, meta = database_encoder(db, repair)
        if model is not None:
            check_encoder(db, meta, model)
        return path
    return locate_encoder(model)


def record_encoder(db: Path, encoder: Path, model_hash: str) -> None:
    """Keep a copy of the encoder in the database and its source and hash in db.json (once)."""
    copy = db / MODEL_COPY
    if Path(encoder).resolve() != copy.resolve() and not (copy.is_file() and file_hash(copy) == model_hash):
        tmp = copy.with_name(f".{MODEL_COPY}.tmp-{os.getpid()}")
        shutil.copy2(encoder, tmp)
        os.replace(tmp, copy)
    source = str(Path(encoder).resolve()) if Path(encoder).resolve() != copy.resolve() else None
    old = json.loads((db / META).read_text()) if (db / META).exists() else {}
    meta = {"encoder": source or old.get("encoder", str(copy)), "model_hash": model_hash, "model": MODEL_COPY}
    if old != meta:
        write_json_atomic(db / META, meta)
