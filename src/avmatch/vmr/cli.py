"""`avmatch vmr ...`: suggest music for your videos from your own music collection."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Video-to-music retrieval: rank the tracks of a music database for a video.",
                  no_args_is_help=True)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("add")
def add(
    music_dir: Path = typer.Argument(..., help="a music file or a folder of them (searched recursively)"),
    db: Path = typer.Option(Path("data/vmr/music_db"), "--db", help="the music database folder (created if missing)"),
    encoder: Path = typer.Option(Path("models/vmr/encoder.pt"), help="trained encoder (used when creating the db)"),
) -> None:
    """Add every music file under MUSIC_DIR; unreadable files are reported and make the exit status 1."""
    from avmatch.core.audio import MediaError
    from avmatch.core.manifest import item_id_for, scan_media
    from avmatch.core.progress import progress
    from avmatch.vmr.database import MusicDB

    try:
        files = scan_media(music_dir)
    except FileNotFoundError as exc:
        _fail(str(exc))
    if (db / "settings.json").exists():
        mdb = MusicDB.load(db)
    elif encoder.exists():
        mdb = MusicDB.create(db, encoder)
    else:
        _fail(f"{encoder}: no trained encoder (run `dvc repro vmr_train` or pass --encoder)")
    base = music_dir if music_dir.is_dir() else music_dir.parent
    added, failed = 0, 0
    for f in progress(files, "add music", len(files), "file"):
        try:
            n = mdb.add(f, item_id_for(f, base))
            added += n > 0
        except (MediaError, OSError) as exc:
            failed += 1
            typer.secho(f"skipped {f}: {getattr(exc, 'reason', exc)}", fg=typer.colors.YELLOW, err=True)
    mdb.save()
    typer.echo(f"{added} track(s) added, {failed} failed; {len(mdb.tracks)} in {db}")
    if failed:
        raise typer.Exit(1)


@app.command("suggest")
def suggest(
    videos: list[Path] = typer.Argument(..., help="video files"),
    db: Path = typer.Option(Path("data/vmr/music_db"), "--db", help="the music database folder"),
    top: int = typer.Option(10, "--top", min=1, help="tracks listed per video"),
) -> None:
    """Print, per video, the best-fitting tracks: video,rank,track_id,score,offset_s,path (offset_s: the
    second of the track the video's start fits best). Unreadable videos are reported; exit status 1."""
    from avmatch.core.audio import MediaError
    from avmatch.vmr.database import MusicDB

    try:
        mdb = MusicDB.load(db)
    except FileNotFoundError as exc:
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
