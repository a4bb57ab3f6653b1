"""`avmatch versions ...`: find other versions of a piece in your own music, and embed folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Musical version identification with the trained encoder: build a database of your "
                       "music, ask which tracks are versions of a file (and where), or embed a folder tree.",
                  no_args_is_help=True)
DEFAULT_MODEL = Path("models/versions/encoder.pt")


WAIT_HELP = ("when another command is writing to the database, wait at most this many seconds for it, then "
             "fail without changing anything (default: wait until it finishes)")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _waiting(message: str) -> None:
    typer.secho(f"note: {message}", fg=typer.colors.YELLOW, err=True)


@app.command("add")
def add(folder: Path = typer.Argument(..., help="audio folder (searched recursively) or one file"),
        db: Path = typer.Option(..., "--db", help="database folder (created if missing)"),
        model: Path = typer.Option(DEFAULT_MODEL, help="trained encoder (models/versions/encoder.pt after dvc repro)"),
        wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP),
        ) -> None:
    """Embed new or changed tracks into the database; unreadable or too short files are reported and skipped.
    Another command writing to the same database is waited for (see --wait)."""
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.versions.database import add_folder

    if not model.exists():
        _fail(f"{model}: no trained encoder (run `dvc repro versions_train` or pass --model)")
    try:
        s = add_folder(folder, db, model, wait, _waiting)
    except (FileNotFoundError, DamagedDatabase, DatabaseBusy) as exc:
        _fail(str(exc))
    for b in s["bad"]:
        typer.secho(f"skipped {b['path']}: {b['error']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{s['added']} track(s) embedded, {len(s['bad'])} unusable; the database holds {s['tracks']} track(s)")


@app.command("query")
def query(file: Path = typer.Argument(..., help="an audio file: which tracks of the database are versions of it?"),
          db: Path = typer.Option(..., "--db", help="database made with `avmatch versions add`"),
          top: int = typer.Option(10, help="how many tracks to list"),
          reduction: str = typer.Option("bpwr-3", help="track distance from segment distances: min | mean | bpwr-k"),
          ) -> None:
    """List the closest tracks (distance: lower = more likely a version) with the best-matching segment pair:
    which seconds of the query match which seconds of the track."""
    from avmatch.core.audio import MediaError
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.versions.database import TooShort, query_file

    if not (db / "db.json").exists() and not (db / "CURRENT").exists():
        _fail(f"{db}: not a versions database (create it with `avmatch versions add FOLDER --db {db}`)")
    try:
        res = query_file(file, db, top, reduction)
    except DamagedDatabase as exc:
        _fail(str(exc))
    except MediaError as exc:
        _fail(f"{file}: {exc.reason}")
    except (TooShort, ValueError) as exc:
        _fail(f"{file}: {exc}")
    typer.echo("rank,distance,track_id,query_segment_s,track_segment_s,path")
    for r in res.itertuples():
        typer.echo(f"{r.rank},{r.distance:.4f},{r.track_id},{r.query_start_s:.1f}-{r.query_end_s:.1f},"
                   f"{r.track_start_s:.1f}-{r.track_end_s:.1f},{r.path}")


@app.command("repair")
def repair(db: Path = typer.Option(..., "--db", help="database folder"),
           wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP)) -> None:
    """Rebuild a damaged database's track list from its embedding shards (the source of truth). Unreadable
    shards are moved to shards/damaged/; tracks whose embeddings are lost are listed (add them again)."""
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.versions.database import repair_database

    try:
        r = repair_database(db, wait, _waiting)
    except (FileNotFoundError, DamagedDatabase, DatabaseBusy) as exc:
        _fail(str(exc))
    if r["restored_meta"]:
        typer.echo("db.json restored from the copy the database keeps", err=True)
    for path in r["damaged_shards"]:
        typer.secho(f"moved aside {path}: unreadable shard", fg=typer.colors.YELLOW, err=True)
    for path in r["lost"]:
        typer.secho(f"lost {path}: its embeddings are gone: add this file again", fg=typer.colors.YELLOW, err=True)
    if r["adopted"]:
        typer.echo(f"{len(r['adopted'])} track(s) found in the shards only, kept without their file path: "
                   f"{', '.join(r['adopted'][:10])}", err=True)
    typer.echo(f"repaired {db}: {r['tracks']} track(s); {len(r['lost'])} lost")
    if r["lost"] or r["damaged_shards"]:
        raise typer.Exit(1)


@app.command("embed")
def embed(src: Path = typer.Argument(..., help="input folder tree of audio files"),
          dst: Path = typer.Argument(..., help="output folder: the same tree with one embedding file per input"),
          model: Path = typer.Option(DEFAULT_MODEL, help="trained encoder"),
          fmt: str = typer.Option("npy", "--format", help="npy ([segments, dim] float32) or pt (torch tensor)"),
          ) -> None:
    """Mirror a folder tree to per-file segment embeddings (+ a .json of segment times), as CLEWS's inference
    script does; files already embedded are skipped, bad ones reported."""
    from avmatch.versions.database import mirror_embeddings

    if fmt not in ("npy", "pt"):
        _fail("--format must be npy or pt")
    if not model.exists():
        _fail(f"{model}: no trained encoder")
    s = mirror_embeddings(src, dst, model, fmt)
    for b in s["bad"]:
        typer.secho(f"skipped {b['path']}: {b['reason']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{s['written']} file(s) embedded, {s['up_to_date']} up to date, {len(s['bad'])} unusable")
