"""`avmatch vmr ...`: suggest music for your videos from your own music collection."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Video-to-music retrieval: rank the tracks of a music database for a video.",
                  no_args_is_help=True)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


WAIT_HELP = ("when another command is writing to the database, wait at most this many seconds for it, then "
             "fail without changing anything (default: wait until it finishes)")


def _waiting(message: str) -> None:
    typer.secho(f"note: {message}", fg=typer.colors.YELLOW, err=True)


@app.command("add")
def add(
    music_dir: Path = typer.Argument(..., help="a music file or a folder of them (searched recursively)"),
    db: Path = typer.Option(Path("data/vmr/music_db"), "--db", help="the music database folder (created if missing)"),
    encoder: Path = typer.Option(Path("models/vmr/encoder.pt"), help="trained encoder (used when creating the db)"),
    wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP),
) -> None:
    """Add every music file under MUSIC_DIR; unreadable files are reported and make the exit status 1.
    Another command writing to the same database is waited for (see --wait); the tracks are published
    as a new version of the database at the end, so `suggest` sees all of them or none."""
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.core.manifest import scan_media
    from avmatch.core.progress import progress
    from avmatch.vmr.database import MusicDB, add_files

    try:
        files = scan_media(music_dir)
        if not encoder.exists() and not MusicDB.exists(db):
            _fail(f"{encoder}: no trained encoder (run `dvc repro vmr_train` or pass --encoder)")
        base = music_dir if music_dir.is_dir() else music_dir.parent
        r = add_files(db, progress(files, "add music", len(files), "file"), base, encoder, wait, _waiting,
                      lambda f, why: typer.secho(f"skipped {f}: {why}", fg=typer.colors.YELLOW, err=True))
    except (FileNotFoundError, DamagedDatabase, DatabaseBusy) as exc:
        _fail(str(exc))
    typer.echo(f"{r['added']} track(s) added, {r['failed']} failed; {r['tracks']} in {db}")
    if r["failed"]:
        raise typer.Exit(1)


@app.command("suggest")
def suggest(
    videos: list[Path] = typer.Argument(..., help="video files"),
    db: Path = typer.Option(Path("data/vmr/music_db"), "--db", help="the music database folder"),
    top: int = typer.Option(10, "--top", min=1, help="tracks listed per video"),
) -> None:
    """Print, per video, the best-fitting tracks: video,rank,track_id,score,offset_s,path (offset_s: the
    second of the track the video's start fits best). Unreadable videos are reported; exit status 1.
    The database is read once: an `add` running meanwhile is seen entirely or not at all."""
    from avmatch.core.audio import MediaError
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.vmr.database import MusicDB

    try:
        mdb = MusicDB.load(db)
    except (FileNotFoundError, DamagedDatabase) as exc:
        _fail(str(exc))
    failed = 0
    typer.echo("video,rank,track_id,score,offset_s,path")
    for v in videos:
        try:
            ranked = mdb.suggest(v, top)
        except (MediaError, OSError) as exc:
            failed += 1
            typer.secho(f"skipped {v}: {getattr(exc, 'reason', exc)}", fg=typer.colors.YELLOW, err=True)
            continue
        for r, s in enumerate(ranked, 1):
            typer.echo(f"{v},{r},{s.track_id},{s.score:.4f},{s.offset_s:.1f},{s.path}")
    if failed:
        raise typer.Exit(1)


@app.command("repair")
def repair(
    db: Path = typer.Option(Path("data/vmr/music_db"), "--db", help="the music database folder"),
    wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP),
) -> None:
    """Publish again the newest intact version of a damaged database. The window embeddings are kept only
    inside the versions (no separate store to rebuild the index from), so this republishes the newest
    version whose files are whole and whose track table agrees with its index, as `copydetect repair`
    does. Tracks of later adds are listed (exit 1): add their files again with `avmatch vmr add` (tracks
    already present are skipped)."""
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.vmr.database import repair_database

    try:
        r = repair_database(db, wait, _waiting)
    except (FileNotFoundError, DamagedDatabase, DatabaseBusy) as exc:
        _fail(str(exc))
    if not r["changed"]:
        typer.echo(f"{db}: version {r['version']} is intact; nothing to repair")
        return
    for path in r["lost"]:
        typer.secho(f"lost {path}: its windows were only in the damaged version: add this file again",
                    fg=typer.colors.YELLOW, err=True)
    typer.echo(f"repaired {db}: version {r['version']} published again; {len(r['lost'])} track(s) lost")
    if r["lost"]:
        raise typer.Exit(1)


def build_corpus(size: str | None, seed: int | None, root: Path | None) -> dict:
    """`avmatch corpus build vmr`: the offline music-video corpus with params.yaml defaults."""
    from avmatch.core.config import ConfigError, load_params
    from avmatch.core.paths import project_root
    from avmatch.vmr.corpus import build_vmr_corpus

    overrides: dict = {}
    if size:
        overrides["vmr.corpus.size"] = size
    if seed is not None:
        overrides["vmr.corpus.seed"] = seed
    try:
        cp = load_params(project_root() / "params.yaml", overrides, systems=["vmr"]).vmr.corpus
    except ConfigError as exc:
        _fail(str(exc))
    info = build_vmr_corpus(cp, Path(root) if root else project_root() / cp.root)
    return {k: v for k, v in info.items() if k != "sources"}
