"""`avmatch versions ...`: find other versions of a piece in your own music, and embed folders.

Behaves as users of CLEWS, CoverHunter or Essentia's cover-song tools expect: it runs from any folder
(the trained encoder is found from the project, the database keeps its own copy), files shorter than
one segment are embedded rather than refused, many queries are answered in one process with answers
streamed as CSV, one bad file is reported and does not stop the others (the exit status says
something failed), and the distance is explained where the user looks (`--help`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avmatch.core.cli_io import (
    EXIT_SOME_FAILED,
    WAIT_HELP,
    exit_if_failed,
    fail,
    paragraphs,
    report_error,
    stream_answers,
    waiting,
)

app = typer.Typer(help="Musical version identification with the trained encoder: build a database of your "
                       "music, ask which tracks are versions of some files (and where), write the query x "
                       "collection distance matrix, or embed a folder tree. Runs from any folder.",
                  no_args_is_help=True)

ENCODER_HELP = """
Encoder: A new database is built with `--model`, else with the project's trained
`models/versions/encoder.pt`, found from `$AVMATCH_ROOT` (when set), else from the avmatch project
around the current folder or the checkout avmatch runs from. The database keeps a copy (DB/model.pt)
and records its source and hash (db.json), so later commands need no `--model` and run from anywhere;
a `--model` that is not the database's encoder is an error naming both.
"""

SHORT_HELP = """
Short files: A file shorter than one segment (20 s with the default encoder) is embedded as one
segment spanning the whole file, its CQT looped to the segment's length; only files under 1 s are
refused.
"""

DISTANCE_HELP = """
Distance: Each query and track is a set of segment embeddings (unit vectors; 20 s segments every
5 s with the default encoder). Two segments are compared by the Euclidean distance of their embeddings, from 0
(identical) to 2 (opposite; unrelated music is typically around 1); `--reduction` makes one track
distance of the segment-pair distances: bpwr-k (default bpwr-3) averages the k closest pairs taken
without reusing a segment, min takes the closest pair, mean all pairs. So the distance also lies in
0..2, and lower = more likely a version. It is printed in full precision (Python's repr of the
float): equal printed values are equal distances. A file compared with itself gives about 0.0002.
"""


def _model_errors() -> tuple[type[Exception], ...]:
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.core.model_lookup import ModelNotFound
    from avmatch.core.shards import StoreMismatch
    from avmatch.versions.db_encoder import EncoderMismatch

    return FileNotFoundError, DamagedDatabase, DatabaseBusy, ModelNotFound, EncoderMismatch, StoreMismatch


# ---------------------------------------------------------------------------------------------- add
@app.command("add", help=paragraphs(f"""Embed the new or changed tracks of an audio folder (searched
recursively) or file into a database, with progress bars on stderr while scanning and embedding.
Unreadable files are reported on stderr (`error: FILE: reason`) and skipped; the others are stored
and the exit status is {EXIT_SOME_FAILED}. Another command writing to the same database is waited
for (see --wait).

{ENCODER_HELP}

{SHORT_HELP}"""))
def add(folder: Path = typer.Argument(..., help="audio folder (searched recursively) or one file"),
        db: Path = typer.Option(..., "--db", help="database folder (created if missing)"),
        model: Optional[Path] = typer.Option(None, help="encoder for a new database (default: the project's "
                                             "trained encoder, found from any folder); for an existing database "
                                             "it must be the encoder it was built with"),
        wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP),
        ) -> None:
    from avmatch.versions.database import add_folder

    try:
        s = add_folder(folder, db, model, wait, waiting)
    except _model_errors() as exc:
        fail(str(exc))
    for b in s["bad"]:
        report_error(b["path"], b["error"])
    typer.echo(f"{s['added']} track(s) embedded, {len(s['bad'])} unusable; the database holds {s['tracks']} track(s)")
    if s["bad"]:
        raise typer.Exit(EXIT_SOME_FAILED)


# -------------------------------------------------------------------------------------------- query
@app.command("query", help=paragraphs(f"""Which tracks of the database are versions of each query file,
and where they match. Loads the encoder and the database once and answers every query in one process.
Prints CSV on stdout (and to `--out`), each query's rows as soon as it is answered, with a progress
bar on stderr: `query_file,rank,track_id,distance,query_segment_s,track_segment_s,path`.

Rows are ranked by distance (rank 1 = closest). `--top N` (default 10) lists the N closest tracks;
`--all` lists every track of the database, which gives every distance. `query_segment_s` and
`track_segment_s` are the best-matching segment pair (seconds in the query and in the track), `path`
the track's file.

The query itself: a query file that is in the database, the same bytes (content hash) or the same
file (resolved path), is left out of its own rows, so rank 1 is the closest other track;
`--include-self` keeps it.

`--matrix FILE.npz` or `FILE.csv` also writes the full query x collection distance matrix (every
track, the query itself included): `.npz` holds `distances` (queries x tracks, float32), `queries`,
`track_ids` and `paths`; `.csv` one row per query (`query_file` then one column per track id).
Queries that failed have no row.

A query that cannot be used (missing, not audio, under 1 s, a folder without audio) is an error
line on stderr naming it and the reason, and has no row; the others are still answered and the exit
status is {EXIT_SOME_FAILED}.

{DISTANCE_HELP}

{SHORT_HELP}"""))
def query(files: list[str] = typer.Argument(..., metavar="QUERY", show_default=False,
                                            help="query audio files, folders (their audio files, recursively), "
                                                 "or - to read query paths from stdin, one per line"),
          db: Path = typer.Option(..., "--db", help="database made with `avmatch versions add`"),
          top: Optional[int] = typer.Option(None, "--top", min=1, show_default=False,
                                            help="list the N closest tracks per query (default 10)"),
          all_tracks: bool = typer.Option(False, "--all", help="list every track of the database (every distance)"),
          out: Optional[Path] = typer.Option(None, "--out", help="also write the CSV here"),
          matrix: Optional[Path] = typer.Option(None, "--matrix", help="also write the query x collection "
                                                "distance matrix here (.npz or .csv)"),
          include_self: bool = typer.Option(False, "--include-self", help="keep a query that is in the database "
                                            "in its own rows"),
          reduction: str = typer.Option("bpwr-3", help="track distance from segment distances: min | mean | bpwr-k"),
          ) -> None:
    import time

    from avmatch.versions.db_search import COLUMNS, Searcher, csv_row, write_matrix
    from avmatch.versions.params import parse_reduction

    if top is not None and all_tracks:
        fail("give --top N or --all, not both")
    if matrix is not None and matrix.suffix not in (".npz", ".csv"):
        fail(f"--matrix {matrix}: the file name must end in .npz or .csv")
    try:
        parse_reduction(reduction)
    except ValueError as exc:
        fail(f"--reduction {reduction}: {exc}")
    if not (db / "db.json").exists() and not (db / "CURRENT").exists():
        fail(f"{db}: not a versions database (create it with `avmatch versions add FOLDER --db {db}`)")
    t0 = time.perf_counter()
    try:
        searcher = Searcher(db, reduction)
    except (*_model_errors(), ValueError) as exc:
        fail(str(exc))
    typer.echo(f"{db}: {len(searcher.track_ids)} track(s), encoder {searcher.encoder} (hash "
               f"{searcher.emb.model_hash}); loaded in {time.perf_counter() - t0:.2f} s", err=True)
    n = None if all_tracks else (top or 10)
    answered, dists = [], []

    def one(path: str) -> tuple[list[list], str]:
        answer = searcher.answer(path, n, include_self, every_track=matrix is not None)
        if answer.error:
            return [], answer.error
        if matrix is not None:
            answered.append(answer.query_file)
            dists.append(answer.distances)
        return [csv_row(answer.query_file, r) for r in answer.rows], ""

    failed = stream_answers(files, COLUMNS, out, one)
    if matrix is not None:
        import numpy as np

        write_matrix(matrix, answered, np.asarray(dists, np.float32).reshape(len(answered), len(searcher.track_ids)),
                     searcher.track_ids, searcher.paths)
        typer.echo(f"distance matrix {len(answered)} x {len(searcher.track_ids)} written to {matrix}", err=True)
    exit_if_failed(failed)


# ------------------------------------------------------------------------------------------- repair
@app.command("repair")
def repair(db: Path = typer.Option(..., "--db", help="database folder"),
           wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP)) -> None:
    """Rebuild a damaged database's track list from its embedding shards (the source of truth). Unreadable
    shards are moved to shards/damaged/; tracks whose embeddings are lost are listed (add them again)."""
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy
    from avmatch.versions.database import repair_database

    try:
        r = repair_database(db, wait, waiting)
    except (FileNotFoundError, DamagedDatabase, DatabaseBusy) as exc:
        fail(str(exc))
    if r["restored_meta"]:
        typer.echo("db.json restored from the copy the database keeps", err=True)
    for path in r["damaged_shards"]:
        report_error(path, "unreadable shard, moved aside")
    for path in r["lost"]:
        report_error(path, "its embeddings are gone: add this file again")
    if r["adopted"]:
        typer.echo(f"{len(r['adopted'])} track(s) found in the shards only, kept without their file path: "
                   f"{', '.join(r['adopted'][:10])}", err=True)
    typer.echo(f"repaired {db}: {r['tracks']} track(s); {len(r['lost'])} lost")
    if r["lost"] or r["damaged_shards"]:
        raise typer.Exit(EXIT_SOME_FAILED)


# -------------------------------------------------------------------------------------------- embed
@app.command("embed", help=paragraphs(f"""Mirror a folder tree to per-file segment embeddings (+ a .json
of segment times), as CLEWS's inference script does, with a progress bar on stderr; files already
embedded are skipped, unusable ones reported on stderr (exit status {EXIT_SOME_FAILED}).

Encoder: `--model`, else the project's trained `models/versions/encoder.pt`, found from any folder
(as for `add`).

{SHORT_HELP}"""))
def embed(src: Path = typer.Argument(..., help="input folder tree of audio files"),
          dst: Path = typer.Argument(..., help="output folder: the same tree with one embedding file per input"),
          model: Optional[Path] = typer.Option(None, help="trained encoder (default: the project's, found from "
                                               "any folder)"),
          fmt: str = typer.Option("npy", "--format", help="npy ([segments, dim] float32) or pt (torch tensor)"),
          ) -> None:
    from avmatch.core.model_lookup import ModelNotFound
    from avmatch.versions.database import mirror_embeddings
    from avmatch.versions.db_encoder import locate_encoder

    if fmt not in ("npy", "pt"):
        fail("--format must be npy or pt")
    try:
        s = mirror_embeddings(src, dst, locate_encoder(model), fmt)
    except (ModelNotFound, FileNotFoundError) as exc:
        fail(str(exc))
    for b in s["bad"]:
        report_error(b["path"], b["reason"])
    typer.echo(f"{s['written']} file(s) embedded, {s['up_to_date']} up to date, {len(s['bad'])} unusable")
    if s["bad"]:
        raise typer.Exit(EXIT_SOME_FAILED)
