"""`avmatch fingerprint ...`: build a database from your own music and identify excerpts against it.

Behaves as users of audfprint, Dejavu or Panako expect: it runs from any folder, one bad file is
reported and does not stop the others (the exit status says something failed), answers stream as
they are found, and the score and threshold are explained where the user looks (`--help`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperCommand

from avmatch.core.cli_io import (
    EXIT_SOME_FAILED,
    WAIT_HELP,
    exit_if_failed,
    paragraphs,
    stream_answers,
)
from avmatch.core.cli_io import fail as _fail
from avmatch.core.cli_io import report_error as _report
from avmatch.core.cli_io import waiting as _waiting

app = typer.Typer(help="Fingerprint your own music and identify recordings: `add` builds or extends a database, "
                       "`identify` tells which recording an excerpt comes from and where, `info` shows what a "
                       "database holds. Runs from any folder.", no_args_is_help=True)

COLUMNS = ["query_file", "rank", "ref_id", "ref_path", "offset_s", "score", "match"]

SCORE_HELP = """
Score: Each 1 s segment of the query (one every 0.5 s) is compared with the recording's segment at
the same position: cosine similarity of the two fingerprints, from -1 to 1 (1 = identical, about 0 =
unrelated); with `fingerprint.search.hub_weight` above 0 (off by default) minus that weight times the
recording segment's hub score, how much it resembles music in general (its mean similarity to the 10
nearest of the encoder's background fingerprints, excerpts of music in no database). The
score starts from the mean of these over the whole query (positions past the recording's end count
0). With the score `margin` it is that mean minus the same mean for the best other
recording: in practice 0 to about 1 for the best candidate and below 0 for the others, because music
that is not in the database still resembles something, but not more than everything else. With
`similarity` it is the mean itself (-1 to 1). Higher means more certain. With `either` the score
shown is the margin, and the decision also accepts a candidate whose
similarity passes the similarity's own threshold. With `verified` (the project's default and the
shipped encoder's) the score is the share (0 to 1) of the query's spectral peaks (the strongest local maxima of its spectrogram, 32 a second) that lie on a peak of
the recording at the candidate's alignment, speed and pitch changes of up to 4 % tried: music in the
same timbre but with other notes scores low even where the fingerprints are alike.

Threshold: A candidate is a match when its score is at least the threshold, which the encoder's
evaluation chose on out-of-database queries so that at most a target share of queries of music not in
the database (1 % by default: fingerprint.evaluate.target_false_match_rate) get an answer, one
threshold per query length (a query uses the one of its length). Decision `either`
(fingerprint.search.score): a match when the margin OR the similarity passes its own threshold, each
chosen for half the target, so together they stay within it. The database keeps the thresholds it was
built with; `--threshold` overrides them for one run with one number for the score shown (with
`either`: the margin, then tested alone).
"""


def _option_value(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def threshold_in_use(db: str | None) -> str:
    """One paragraph: the threshold of the `--db` given, else the one a new database would get."""
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.fingerprint.database import DatabaseError, FingerprintDB
    from avmatch.fingerprint.encoder_lookup import EncoderNotFound, locate_encoder

    try:
        if db and (Path(db) / "db.json").exists():
            d = FingerprintDB(db)
            return (f"Threshold in use for {db}: {d.thresholds.describe()} (score: {d.search_params.score}; "
                    f"from {d.meta.get('threshold_source', '?')}).")
        choice = locate_encoder()
        return (f"Threshold in use by a new database: {choice.thresholds.describe()} (score: "
                f"{choice.search.score}; from {choice.threshold_source}, for the encoder {choice.path}). "
                f"Give `--db DB` with `--help` to see a database's own.")
    except EncoderNotFound:
        return ("Threshold in use: none yet: no trained encoder was found (see `avmatch fingerprint add --help`); "
                "give `--db DB` with `--help` to see a database's threshold.")
    except (DatabaseError, DamagedDatabase, OSError, ValueError, KeyError) as exc:
        return f"Threshold in use: unknown ({exc})."


class ShowsThreshold(TyperCommand):
    """A command whose --help ends with the threshold in use, read when help is asked for (not at
    import, which every `avmatch` command pays) and from the `--db` on the same command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["raw_args"] = list(args)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.epilog = threshold_in_use(_option_value(ctx.meta.get("raw_args", []), "--db"))
        super().format_help(ctx, formatter)


# ---------------------------------------------------------------------------------------------- add
def _open_or_create(db: Path, model: Path | None, threshold: float | None, wait: float | None):
    """The database at `db`, created when new: under the writer lock, so of two `add`s on a new
    folder one creates it and the other opens it."""
    from avmatch.fingerprint.database import DatabaseError

    if db.exists() and not db.is_dir():
        raise DatabaseError(f"{db} exists and is not a fingerprint database (a file): give --db a new or empty folder")
    new_folder = not db.exists()
    try:
        return _open_or_create_locked(db, model, threshold, wait)
    except BaseException:
        if new_folder:   # a failed creation leaves no folder behind (unless another writer is now using it)
            from avmatch.core.db_store import LOCK_FILE

            (db / LOCK_FILE).unlink(missing_ok=True)
            try:
                db.rmdir()
            except OSError:
                pass
        raise


def _open_or_create_locked(db: Path, model: Path | None, threshold: float | None, wait: float | None):
    from avmatch.core.db_store import writer_lock
    from avmatch.fingerprint.database import FingerprintDB
    from avmatch.fingerprint.encoder_lookup import locate_encoder

    with writer_lock(db, wait, _waiting):
        if (db / "db.json").exists() or (db / "CURRENT").exists():
            fdb = FingerprintDB(db)
            if model is not None:
                fdb.check_encoder(model)
            if threshold is not None:
                fdb.check_threshold(threshold)
            return fdb
        choice = locate_encoder(model, threshold)
        for w in choice.warnings:
            typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
        fdb = FingerprintDB.create(db, choice)
        typer.echo(f"new database {db}: encoder {choice.path} (hash {choice.model_hash}), threshold "
                   f"{choice.thresholds.describe()} for the score '{choice.search.score}' (from "
                   f"{choice.threshold_source})", err=True)
        return fdb


@app.command("add", cls=ShowsThreshold, help=paragraphs(f"""Build or extend a database from audio files and folders (searched
recursively). Unchanged files are skipped; files that cannot be used are reported on stderr with the
reason and the rest are stored; the exit status is {EXIT_SOME_FAILED} when any input failed.

Each recording gets a stable id, its file name without extension (with as many parent folders as
make it unique), or the id given in `--manifest`; `identify` reports it as `ref_id`.

Encoder: A new database is built with `--model`, else with the trained
`models/fingerprint/encoder.pt` of the project `$AVMATCH_ROOT` names (when set), else with the
encoder avmatch ships (`src/avmatch/shipped/fingerprint`: the pipeline's `large` configuration,
6000 training steps; its lineage.json names the DVC experiment and MLflow registry version that
made it), else with the project's around the current folder or the checkout avmatch runs from.
Its threshold is the one that encoder's evaluation chose (its `metrics/fingerprint.json`). The
database keeps both (db.json), so later commands need neither. To use the encoder your own `make
demo` trained, give `--model /path/to/avmatch/models/fingerprint/encoder.pt` or set
`AVMATCH_ROOT`.
"""))
def add(
    inputs: Optional[list[str]] = typer.Argument(None, metavar="FILE_OR_FOLDER", help="audio files or folders", show_default=False),
    db: Path = typer.Option(..., "--db", help="database folder (created if missing)"),
    model: Optional[Path] = typer.Option(None, help="encoder for a new database (default: $AVMATCH_ROOT's trained "
                                         "encoder, else the shipped one); for an existing one it must be the encoder "
                                         "it was built with"),
    threshold: Optional[float] = typer.Option(None, help="no-match threshold of a new database (default: the one "
                                              "evaluated for the encoder)"),
    manifest: Optional[Path] = typer.Option(None, help="CSV (or Parquet) with columns path,id: files to add "
                                            "and the ids to report them by (paths relative to the manifest's folder)"),
    keep_pcm: bool = typer.Option(False, "--keep-pcm", help="also keep a decoded 8 kHz copy of each new file in "
                                  "DB/pcm (about 58 MB per hour of audio)"),
    workers: int = typer.Option(2, min=1, help="decoding processes"),
    wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP),
) -> None:
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.fingerprint.database import DatabaseError
    from avmatch.fingerprint.db_inputs import collect_sources
    from avmatch.fingerprint.encoder_lookup import EncoderNotFound

    if not inputs and manifest is None:
        _fail("nothing to add: give audio files or folders, or --manifest FILE")
    try:
        sources, bad_inputs = collect_sources(inputs or [], manifest)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    try:
        fdb = _open_or_create(db, model, threshold, wait)
        report = fdb.add(sources, workers=workers, keep_pcm=keep_pcm, wait=wait, say=_waiting)
    except (DatabaseError, EncoderNotFound, DamagedDatabase, DatabaseBusy) as exc:
        _fail(str(exc))
    errors = bad_inputs + report.errors
    for path, reason in errors:
        _report(path, reason)
    typer.echo(f"{report.embedded} file(s) fingerprinted, {report.unchanged} unchanged, {len(errors)} unusable; "
               f"the database holds {report.recordings} recording(s), {report.audio_s / 3600:.2f} h of audio")
    if errors:
        raise typer.Exit(EXIT_SOME_FAILED)


# ----------------------------------------------------------------------------------------- identify
def _answer_rows(answer, top: int) -> list[list]:
    """Top 1: the answer, ref columns empty when it is no match. Top N: the N best candidates."""
    def fmt(c) -> list:
        return [answer.query_file, c.rank, c.ref_id, c.ref_path, f"{c.offset_s:.2f}", f"{c.score:.4f}", int(c.match)]

    if not answer.candidates:
        return [[answer.query_file, "", "", "", "", "", 0]]
    if top == 1:
        best = answer.candidates[0]
        return [fmt(best)] if best.match else [[answer.query_file, "", "", "", "", f"{best.score:.4f}", 0]]
    return [fmt(c) for c in answer.candidates]


@app.command("identify", cls=ShowsThreshold, help=paragraphs(f"""Which recording of the database each query comes from, and
where. Prints CSV on stdout (and to `--out`), one query at a time as soon as it is answered, with a
progress bar on stderr: `query_file,rank,ref_id,ref_path,offset_s,score,match`.

`ref_id` is the recording's id (see `add --help`), `ref_path` its file, `offset_s` where in it the
query starts, `match` 1 when the score reaches the threshold. By default one row per query, its
ref columns empty when nothing matches (the score is then the best candidate's); with `--top N`
the N best candidates, ranked, whether they match or not.

A query that cannot be read (missing, not audio, a folder without audio) is an error line on
stderr naming it and the reason, and has no row; the others are still answered and the exit
status is {EXIT_SOME_FAILED}. The encoder and the index are loaded once for all the queries.

{SCORE_HELP}"""))
def identify(
    files: list[str] = typer.Argument(..., metavar="QUERY", help="query audio files, folders (their audio files, recursively), "
                                      "or - to read query paths from stdin, one per line", show_default=False),
    db: Path = typer.Option(..., "--db", help="database folder made by `avmatch fingerprint add`"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the CSV here"),
    top: int = typer.Option(1, "--top", min=1, help="list the N best candidates per query (rows ranked 1..N)"),
    threshold: Optional[float] = typer.Option(None, help="override the database's no-match threshold for this run"),
) -> None:
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.fingerprint.database import DatabaseError, FingerprintDB

    try:
        fdb = FingerprintDB(db)
        searcher = fdb.searcher()
    except (DatabaseError, DamagedDatabase) as exc:
        _fail(str(exc))
    used = f"{threshold:.4f} (--threshold)" if threshold is not None else fdb.thresholds.describe()
    typer.echo(f"{db}: {len(searcher.index.item_ids)} recording(s), score '{fdb.search_params.score}', threshold {used}; "
               f"loaded in {searcher.timings['model_s'] + searcher.timings['index_s']:.2f} s", err=True)
    def one(path: str) -> tuple[list[list], str]:
        answer = searcher.identify(path, top, threshold)
        return ([], answer.error) if answer.error else (_answer_rows(answer, top), "")

    exit_if_failed(stream_answers(files, COLUMNS, out, one, desc="identify"))


# --------------------------------------------------------------------------------------------- info
@app.command("info", cls=ShowsThreshold)
def info(db: Path = typer.Option(..., "--db", help="database folder"),
         as_json: bool = typer.Option(False, "--json", help="print JSON instead of text")) -> None:
    """What a database holds: recordings, hours of audio, the encoder and threshold it was built with,
    and its size on disk, per part and per hour of audio."""
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.fingerprint.database import DatabaseError, FingerprintDB

    try:
        facts = FingerprintDB(db).info()
    except (DatabaseError, DamagedDatabase) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    mb = 1e6
    per_hour = facts["bytes_per_audio_hour"]
    typer.echo("\n".join([
        f"database      {facts['root']}",
        (f"recordings    {facts['recordings']} ({facts['audio_hours']:.2f} h of audio); "
         f"{facts['unusable_files']} unusable file(s) on record"),
        f"encoder       {facts['model_hash']} (copied from {facts['model_source'] or '?'})",
        f"threshold     {facts['threshold']} for the score '{facts['score']}' (from {facts['threshold_source']})",
        f"index         {facts['index']}" + (" (built in memory from the shards when searching)"
                                             if facts["index"] == "flat" else " (trained codes in index/)"),
        f"on disk       {facts['bytes_total'] / mb:.2f} MB"
        + (f" ({per_hour / mb:.2f} MB per hour of audio besides the encoder copy)" if per_hour else "") + ": "
        + ", ".join(f"{k} {v / mb:.2f} MB" for k, v in facts["bytes"].items()),
    ]))


# ------------------------------------------------------------------------------------------- repair
@app.command("repair")
def repair(db: Path = typer.Option(..., "--db", help="database folder"),
           wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP)) -> None:
    """Rebuild a damaged database's manifest and index from its fingerprint shards (the source of truth),
    after a disk error, a full disk or a file deleted by hand. Shards that cannot be read are moved to
    shards/damaged/; recordings whose fingerprints are lost are listed (add those files again)."""
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.fingerprint.database import DatabaseError
    from avmatch.fingerprint.db_repair import repair_database

    try:
        rep = repair_database(db, wait, _waiting)
    except (DatabaseError, DamagedDatabase, DatabaseBusy) as exc:
        _fail(str(exc))
    if rep.restored_meta:
        typer.echo("db.json restored from the copy the database keeps", err=True)
    for path in rep.damaged_shards:
        _report(str(path), "unreadable shard, moved aside")
    for path in rep.lost:
        _report(path, "its fingerprints were lost: add this file again")
    if rep.adopted:
        typer.echo(f"{len(rep.adopted)} recording(s) found in the shards only, kept without their file path "
                   f"(add their files again to record it): {', '.join(rep.adopted[:10])}", err=True)
    typer.echo(f"repaired {db}: {rep.recordings} recording(s); {len(rep.lost)} lost")
    if rep.lost or rep.damaged_shards:
        raise typer.Exit(EXIT_SOME_FAILED)
