"""`avmatch copydetect ...` (find copied segments of your videos) and the VSC22 metric commands
`avmatch metrics vsc-matching` / `vsc-descriptor`, which score any VSC22 submission."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Video copy detection: which parts of a video copy which parts of reference videos.",
                  no_args_is_help=True)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def vsc_matching(
    gt: Path = typer.Option(..., "--gt", help="ground truth CSV: query_id,ref_id,query_start,query_end,ref_start,ref_end"),
    pred: Path = typer.Option(..., "--pred", help="predictions CSV: the same columns plus score"),
    as_json: bool = typer.Option(False, "--json", help='print {"segment_uap": .., "pairwise_uap": ..}'),
) -> None:
    """VSC22 matching track: segment µAP (localisation) and pairwise µAP, exactly as the challenge defines them."""
    from avmatch.copydetect.metrics import (
        VscFormatError,
        matching_metrics,
        read_matches,
    )

    try:
        m = matching_metrics(read_matches(gt, is_gt=True), read_matches(pred))
    except (VscFormatError, FileNotFoundError) as exc:
        _fail(str(exc))
    out = {"segment_uap": m["segment"].ap, "pairwise_uap": m["pairwise"].ap}
    typer.echo(json.dumps(out) if as_json else "\n".join(f"{k:14s} {v:.4f}" for k, v in out.items()))


def vsc_descriptor(
    gt: Path = typer.Option(..., "--gt", help="matching ground truth CSV (pairs are taken from it)"),
    query: Path = typer.Option(..., "--query", help="query descriptors, VSC22 npz"),
    ref: Path = typer.Option(..., "--ref", help="reference descriptors, VSC22 npz"),
    as_json: bool = typer.Option(False, "--json", help='print {"descriptor_uap": ..}'),
) -> None:
    """VSC22 descriptor track: µAP of the pairs that a global k-NN over the descriptors ranks."""
    from avmatch.copydetect.metrics import VscFormatError, descriptor_ap, read_matches
    from avmatch.copydetect.vsc_npz import read_vsc_npz

    try:
        ap = descriptor_ap(read_matches(gt, is_gt=True), read_vsc_npz(query), read_vsc_npz(ref)).ap
    except (VscFormatError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"descriptor_uap": ap}) if as_json else f"descriptor_uap {ap:.4f}")


def build_corpus(size: Optional[str], seed: Optional[int], root: Optional[Path]) -> dict:
    """`avmatch corpus build copydetect`: the offline corpus with params.yaml defaults."""
    from avmatch.copydetect.corpus import build_copydetect_corpus
    from avmatch.core.config import ConfigError, load_params
    from avmatch.core.paths import project_root

    overrides: dict = {}
    if size:
        overrides["copydetect.corpus.size"] = size
    if seed is not None:
        overrides["copydetect.corpus.seed"] = seed
    try:
        cp = load_params(project_root() / "params.yaml", overrides).copydetect.corpus
    except ConfigError as exc:
        _fail(str(exc))
    info = build_copydetect_corpus(cp, Path(root) if root else project_root() / cp.root)
    return {k: v for k, v in info.items() if k != "sources"}


def register_metrics(metrics_app: typer.Typer) -> None:
    """Add the VSC22 commands to the `avmatch metrics` group."""
    metrics_app.command("vsc-matching")(vsc_matching)
    metrics_app.command("vsc-descriptor")(vsc_descriptor)


@app.command("query")
def query(
    videos: list[Path] = typer.Argument(..., help="query video files"),
    db: Path = typer.Option(Path("data/copydetect/db"), "--db",
                            help="reference database: the pipeline's db folder (made by the extract stage)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the matches as a VSC22 CSV"),
    min_score: Optional[float] = typer.Option(None, help="hide matches below this score (default: the db's)"),
) -> None:
    """Print the copied segments of each video: query_id,ref_id,query_start,query_end,ref_start,ref_end,score."""
    from avmatch.copydetect.database import CopyDB
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.core.video import MediaError

    try:
        cdb = CopyDB.load(db)
    except (FileNotFoundError, DamagedDatabase) as exc:
        _fail(str(exc))
    rows = []
    for v in videos:
        try:
            matches = cdb.query(v, min_score=min_score)
        except MediaError as exc:
            typer.secho(f"skipped {v}: {exc.reason}", fg=typer.colors.YELLOW, err=True)
            continue
        if not matches:
            typer.echo(f"# {v}: no copied segment found")
        rows += matches
        for m in matches:
            typer.echo(f"{m.query_id},{m.ref_id},{m.query_start:.1f},{m.query_end:.1f},{m.ref_start:.1f},"
                       f"{m.ref_end:.1f},{m.score:.4f}")
    if out:
        from avmatch.copydetect.metrics import write_matches

        write_matches(out, rows)


@app.command("repair")
def repair(db: Path = typer.Option(Path("data/copydetect/db"), "--db", help="reference database folder"),
           wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS",
                                                help="wait at most this long for another writer (default: until it "
                                                     "finishes)")) -> None:
    """Publish again the newest intact version of a damaged database (the previous version is kept for this).
    The pipeline's latest database comes back with `dvc checkout data/copydetect/db` or `dvc repro`."""
    from avmatch.copydetect.database import repair_database
    from avmatch.core.db_store import DatabaseBusy

    try:
        version, changed = repair_database(db, wait, lambda m: typer.secho(f"note: {m}", err=True))
    except (FileNotFoundError, DatabaseBusy) as exc:
        _fail(str(exc))
    typer.echo(f"{db}: version {version} " + ("published again (the damaged one is no longer read)" if changed
                                             else "is intact; nothing to repair"))
