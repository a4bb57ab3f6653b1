"""`avmatch voiceface ...`: enrol faces or voices, then match a voice to the enrolled faces (or a face to
the enrolled voices) with a trained voice-face model over real expert embeddings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="Voice-face association: which enrolled face does this voice belong to (and the reverse).\n\n"
         "1. enrol faces: `avmatch voiceface enrol PHOTOS_OR_VIDEOS... --db DB --model MODEL`\n"
         "2. match a voice: `avmatch voiceface match VOICE.wav --db DB`\n"
         "Reverse: `enrol --modality voice RECORDINGS...` then `match --modality face PHOTO.jpg`.\n"
         "The model is a trained voiceface model (models/voiceface/model.pt after `dvc repro voiceface_train`) "
         "trained on a REAL corpus (the real experts v_resemblyzer, v_mfcc, f_dlib, f_landmarks); one "
         "trained on the simulated demo cohort is refused.",
    no_args_is_help=True)

WAIT_HELP = ("when another command is writing to the database, wait at most this many seconds for it, then "
             "fail without changing anything (default: wait until it finishes)")
MODALITY_HELP = "what the files are enrolled as: face (photos, videos: their frames) or voice (audio, videos: their soundtrack)"


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _collect(inputs: list[Path]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """[(file, base for its id)] for files and folders (searched recursively), and [(input, why not)]."""
    from avmatch.core.audio import MEDIA_EXTENSIONS
    from avmatch.voiceface.experts.media import IMAGE_EXTENSIONS

    import os

    known = MEDIA_EXTENSIONS | IMAGE_EXTENSIONS
    files, bad = [], []
    singles = [p for p in inputs if p.is_file()]
    # files given one by one: ids relative to their common folder, so equal names in two folders differ
    common = Path(os.path.commonpath([str(p.resolve().parent) for p in singles])) if singles else None
    for inp in inputs:
        if inp.is_file():
            files.append((inp, common))
        elif inp.is_dir():
            found = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in known)
            if not found:
                bad.append((inp, "no media or image files in this folder"))
            files.extend((p, inp) for p in found)
        else:
            bad.append((inp, "no such file or directory"))
    return files, bad


def _skipped(path: Path, why: str) -> None:
    typer.secho(f"skipped {path}: {why}", fg=typer.colors.YELLOW, err=True)


@app.command("enrol")
def enrol(
    inputs: list[Path] = typer.Argument(..., help="photos, videos or recordings, or folders of them"),
    db: Path = typer.Option(Path("data/voiceface/db"), "--db", help="the database folder (created if missing)"),
    model: Optional[Path] = typer.Option(None, "--model", help="trained voiceface model (needed when the "
                                         "database is new; default models/voiceface/model.pt)"),
    modality: str = typer.Option("face", "--modality", help=MODALITY_HELP),
    wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP),
) -> None:
    """Enrol each file as a face (default) or a voice: its expert vectors and fused embedding are stored.
    A file no expert can describe (no face found, no speech, unreadable) is named with the reason and
    the others are enrolled; the exit status is then 1."""
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.core.progress import progress, setup_logging
    from avmatch.voiceface.database import ModelRefused, VoiceFaceDB, enrol_files
    from avmatch.voiceface.experts import ExpertLoadError

    setup_logging()
    if modality not in ("face", "voice"):
        _fail(f"--modality {modality!r}: use face or voice")
    files, bad = _collect(inputs)
    for path, why in bad:
        _skipped(path, why)
    if model is None and not VoiceFaceDB.exists(db):
        model = Path("models/voiceface/model.pt")
    added = failed = 0
    by_base: dict[Path, list[Path]] = {}
    for f, base in files:
        by_base.setdefault(base, []).append(f)
    try:
        for base, group in by_base.items():
            r = enrol_files(db, progress(group, f"enrol {modality}", len(group), "file"), base, modality, model,
                            wait, lambda m: typer.secho(f"note: {m}", fg=typer.colors.YELLOW, err=True), _skipped)
            added, failed, model = added + r["added"], failed + r["failed"], None
    except (FileNotFoundError, ModelRefused, DamagedDatabase, DatabaseBusy, ExpertLoadError) as exc:
        _fail(str(exc))
    failed += len(bad)
    n = len(VoiceFaceDB.load(db).items) if VoiceFaceDB.exists(db) else 0
    typer.echo(f"{added} {modality}(s) enrolled, {failed} failed; {n} item(s) in {db}")
    if failed:
        raise typer.Exit(1)


@app.command("match")
def match(
    queries: list[Path] = typer.Argument(..., help="voice recordings (or, with --modality face, photos/videos)"),
    db: Path = typer.Option(Path("data/voiceface/db"), "--db", help="the database folder"),
    modality: str = typer.Option("voice", "--modality", help="what the query files are: voice (matched against "
                                 "the enrolled faces) or face (matched against the enrolled voices)"),
    top: int = typer.Option(5, "--top", min=1, help="enrolled items listed per query"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per query instead of CSV lines"),
) -> None:
    """Rank the enrolled items of the other modality for each query by cosine similarity of the fused
    embeddings (higher = more likely the same person). CSV: query,rank,item,score,path. Unreadable
    queries, or ones no expert can describe, are named with the reason; the exit status is then 1."""
    from avmatch.core.audio import MediaError
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.voiceface.database import ModelRefused, VoiceFaceDB
    from avmatch.voiceface.experts import ExpertLoadError

    if modality not in ("face", "voice"):
        _fail(f"--modality {modality!r}: use voice or face")
    try:
        vdb = VoiceFaceDB.load(db)
    except (FileNotFoundError, ModelRefused, DamagedDatabase, ExpertLoadError) as exc:
        _fail(str(exc))
    failed = 0
    if not as_json:
        typer.echo("query,rank,item,score,path")
    for q in queries:
        try:
            ranked = vdb.match(q, modality, top)
        except (MediaError, OSError) as exc:
            failed += 1
            _skipped(q, str(getattr(exc, "reason", exc)))
            continue
        if as_json:
            typer.echo(json.dumps({"query": str(q), "modality": modality,
                                   "matches": [{"rank": r, "item": m.item, "score": round(m.score, 6), "path": m.path}
                                               for r, m in enumerate(ranked, 1)]}))
        else:
            for r, m in enumerate(ranked, 1):
                typer.echo(f"{q},{r},{m.item},{m.score:.4f},{m.path}")
    if failed:
        raise typer.Exit(1)
