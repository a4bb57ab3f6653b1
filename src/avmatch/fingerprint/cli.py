"""`avmatch fingerprint ...`: build a database from your own music and identify excerpts against it."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Fingerprint your own music and identify recordings (needs a trained encoder).",
                  no_args_is_help=True)


def _project_settings():
    """Search/index settings and the no-match threshold the project's evaluation chose, so a new
    database answers exactly as the evaluated pipeline (defaults outside a project)."""
    from avmatch.core.config import ConfigError, load_params
    from avmatch.core.paths import project_root
    from avmatch.fingerprint.params import FpIndexParams, FpSearchParams

    root = project_root()
    try:
        fp = load_params(root / "params.yaml").fingerprint
        index, search = fp.index, fp.search
    except ConfigError:
        index, search = FpIndexParams(), FpSearchParams()
    m = root / "metrics" / "fingerprint.json"
    threshold = float(json.loads(m.read_text()).get("threshold", 0.1)) if m.exists() else 0.1
    return index, search, threshold


@app.command("add")
def add(
    inputs: list[Path] = typer.Argument(..., help="audio files or folders (searched recursively)"),
    db: Path = typer.Option(..., "--db", help="database folder (created if missing)"),
    model: Path = typer.Option(Path("models/fingerprint/encoder.pt"), help="trained encoder, used when creating the db"),
    threshold: Optional[float] = typer.Option(None, help="no-match threshold stored in a new db "
                                              "(default: the one chosen by the pipeline's evaluation)"),
    workers: int = typer.Option(2, help="decoding processes"),
) -> None:
    """Build or extend a database; unchanged files are skipped, unreadable ones reported and skipped."""
    from avmatch.fingerprint.database import FingerprintDB

    try:
        if (db / "db.json").exists():
            fdb = FingerprintDB(db)
        else:
            index, search, chosen = _project_settings()
            fdb = FingerprintDB.create(db, model, threshold if threshold is not None else chosen, index, search)
        summary = fdb.add(list(inputs), workers=workers)
    except FileNotFoundError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    for e in summary["errors"]:
        typer.secho(f"skipped {e['path']}: {e['reason']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{summary['embedded']} file(s) fingerprinted, {summary['skipped_unchanged']} unchanged, "
               f"{len(summary['errors'])} unusable; the database holds {summary['items_in_db']} recording(s)")


@app.command("identify")
def identify(
    files: list[Path] = typer.Argument(..., help="query audio files"),
    db: Path = typer.Option(..., "--db", help="database folder made by `avmatch fingerprint add`"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the CSV here"),
    threshold: Optional[float] = typer.Option(None, help="override the database's no-match threshold"),
) -> None:
    """Print CSV rows query_file,ref_id,ref_path,offset_s,score (empty ref = no match)."""
    from avmatch.fingerprint.database import FingerprintDB

    try:
        rows = FingerprintDB(db).identify(list(files), threshold)
    except FileNotFoundError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    header = ["query_file", "ref_id", "ref_path", "offset_s", "score"]
    sinks = [sys.stdout]
    fh = open(out, "w", newline="") if out else None
    if fh:
        sinks.append(fh)
    for sink in sinks:
        w = csv.writer(sink)
        w.writerow(header)
        for r in rows:
            w.writerow([r.query_file, r.ref_id, r.ref_path, "" if r.offset_s is None else f"{r.offset_s:.2f}",
                        "" if r.score is None else f"{r.score:.4f}"])
    if fh:
        fh.close()
    for r in rows:
        if r.error:
            typer.secho(f"could not read {r.query_file}: {r.error}", fg=typer.colors.YELLOW, err=True)
