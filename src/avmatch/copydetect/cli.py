"""`avmatch copydetect ...` (find copied segments of your videos) and the VSC22 metric commands
`avmatch metrics vsc-matching` / `vsc-descriptor`, which score any VSC22 submission."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from avmatch.copydetect.descriptor import KINDS as DESCRIPTOR_KINDS
from avmatch.core.cli_io import (
    EXIT_SOME_FAILED,
    WAIT_HELP,
    fail,
    paragraphs,
    report_error,
    waiting,
)

app = typer.Typer(help="Video copy detection: which parts of a video copy which parts of reference videos.",
                  no_args_is_help=True)


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
        fail(str(exc))
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
        fail(str(exc))
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
        fail(str(exc))
    info = build_copydetect_corpus(cp, Path(root) if root else project_root() / cp.root)
    return {k: v for k, v in info.items() if k != "sources"}


def register_metrics(metrics_app: typer.Typer) -> None:
    """Add the VSC22 commands to the `avmatch metrics` group."""
    metrics_app.command("vsc-matching")(vsc_matching)
    metrics_app.command("vsc-descriptor")(vsc_descriptor)


ADD_HELP = f"""Build or extend a reference database from your own videos (files or folders, searched
recursively). Each video's id is its file name without extension (as in VSC22 CSVs); `query` reports it
as `ref_id`. Videos already in the database unchanged are skipped, a changed file replaces its old
descriptors, and files that cannot be used are reported on stderr with the reason while the rest are
added; the exit status is {EXIT_SOME_FAILED} when any input failed.

A new database is built with `--model`, else with a trained `models/copydetect/encoder.pt`: the one of
the project `$AVMATCH_ROOT` names (when set), else the encoder avmatch ships (trained by the pipeline; its
lineage.json says which run), else the one of the avmatch project around the current folder or the checkout
avmatch runs from. Its settings (1 fps frames, frame descriptor, k, β, localisation) and noise
set are those of the project's pipeline database (`data/copydetect/db`) when it was built with the same
encoder and descriptor, else the project's params.yaml and `--noise DIR`. Without a noise set, score
normalisation is off and the command says so. The database keeps its encoder, descriptor and settings, so
`query` needs none of them; `--descriptor` for an existing database must be the one it was built with.
Give `--db` a folder of your own: the pipeline's `data/copydetect/db` is a DVC output that `dvc repro`
rewrites."""

QUERY_HELP = f"""Find the parts of each query video that copy parts of the database's reference videos.
Prints the VSC22 matching CSV on stdout (and writes it to `--out`), best first per query, with a
progress bar on stderr: `query_id,ref_id,query_start,query_end,ref_start,ref_end,score` (ids are file
names without extension, times in seconds). A query that cannot be read is an error line on stderr
naming it and the reason; the others are still answered and the exit status is {EXIT_SOME_FAILED}.
The score is the segment's best frame similarity minus the noise-set bias (when the database has a
noise set): about 1 for an untouched copy, lower for heavy edits, near 0 for unrelated footage.
With verification (the database's setting, recorded from params.yaml's copydetect.verify when it was
built; `--verify/--no-verify` overrides it) each match is checked with keypoints against the reference
video file: a match that verifies gains the bonus (+1 by default) and gets bounds re-drawn from its frames.
With verification the query frames are also searched as 3 x 3 crops of half their size (`views_crop`), which
finds picture-in-picture copies that a whole frame hides; such a segment is kept only when it verifies, and
gains views_bonus (+0.5) instead. The views cost about 3.4 s of CPU per 15-second query (9 more descriptors
per frame, docs/benchmarks.md); a database built with copydetect.verify.views_crop 0 skips them."""


# the choices of --descriptor: the library's kinds, so that a new kind needs no change here
DescriptorKind = Enum("DescriptorKind", {k: k for k in DESCRIPTOR_KINDS}, type=str)


DESCRIPTOR_HELP = ("frame descriptor of a new database (default: the pipeline database's, else params.yaml's "
                   "copydetect.descriptor, mirror-averaged and whitened by default): trained = the encoder alone, "
                   "trained_dct = encoder + DCT/colour, both as they are (no mirror averaging, no whitening); an "
                   "existing database refuses another one than its own")
DCT_WEIGHT_HELP = "trained_dct: weight of the DCT/colour similarity (default 0.5, params.yaml's)"


def _verify_params(db: Path, recorded: dict | None):
    """The verification settings the database recorded when it was built; for a database built before they were
    recorded, the project's `copydetect.verify` (params.yaml of $AVMATCH_ROOT or the folder around), else the
    defaults (verification on)."""
    import yaml

    from avmatch.copydetect.params import CdVerifyParams
    from avmatch.core.paths import project_root

    if recorded is not None:
        try:
            return CdVerifyParams(**recorded)
        except ValueError as exc:
            fail(f"{db}: settings.json's verify: {exc} (rebuild the database with `avmatch copydetect add`)")
    f = project_root() / "params.yaml"
    cd = ((yaml.safe_load(f.read_text()) or {}).get("copydetect") or {}) if f.exists() else {}
    try:
        return CdVerifyParams(**(cd.get("verify") or {}))
    except ValueError as exc:
        fail(f"{f}: copydetect.verify: {exc}")


def _descriptor_option(kind: Optional[DescriptorKind], dct_weight: Optional[float]):
    """The DescriptorSpec the options ask for (None when neither is given)."""
    from avmatch.copydetect.descriptor import DescriptorSpec
    from avmatch.copydetect.params import CdDescriptorParams

    if kind is None and dct_weight is None:
        return None
    if kind is None or kind.value == "trained" and dct_weight is not None:
        fail("--dct-weight needs --descriptor trained_dct")
    try:
        return DescriptorSpec(kind.value, dct_weight if dct_weight is not None else CdDescriptorParams().dct_weight)
    except ValueError as exc:
        fail(str(exc))


@app.command("add", help=paragraphs(ADD_HELP))
def add(
    videos: list[str] = typer.Argument(..., metavar="REF_VIDEO_OR_FOLDER", help="reference videos or folders",
                                       show_default=False),
    db: Path = typer.Option(..., "--db", help="database folder (created if missing)"),
    model: Optional[Path] = typer.Option(None, help="encoder of a new database (default: the project's trained "
                                         "encoder); for an existing one it must be the encoder it was built with"),
    noise: Optional[Path] = typer.Option(None, "--noise", help="folder of videos that are certainly NOT references: "
                                         "(re)places the noise set used for score normalisation"),
    wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS", help=WAIT_HELP),
    descriptor: Optional[DescriptorKind] = typer.Option(None, "--descriptor", help=DESCRIPTOR_HELP),
    dct_weight: Optional[float] = typer.Option(None, "--dct-weight", min=0, help=DCT_WEIGHT_HELP),
) -> None:
    from avmatch.copydetect.db_build import EncoderNotFound, add_references
    from avmatch.copydetect.descriptor import DescriptorMismatch
    from avmatch.core.db_store import DamagedDatabase, DatabaseBusy

    try:
        report = add_references(db, videos, model, noise, wait, waiting, report_error,
                                _descriptor_option(descriptor, dct_weight))
    except (EncoderNotFound, DamagedDatabase, DatabaseBusy, FileNotFoundError, DescriptorMismatch) as exc:
        fail(str(exc))
    for note in report.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    for vid in report.replaced:
        typer.secho(f"note: {vid}: replaced the descriptors of the earlier file with this id", err=True)
    typer.echo(f"{len(report.added)} video(s) added, {len(report.unchanged)} unchanged, {len(report.errors)} "
               f"unusable; the database holds {report.refs} reference video(s), {report.ref_seconds / 60:.1f} min")
    if report.errors:
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command("query", help=paragraphs(QUERY_HELP))
def query(
    videos: list[str] = typer.Argument(..., metavar="QUERY_VIDEO_OR_FOLDER", help="query videos or folders",
                                       show_default=False),
    db: Path = typer.Option(..., "--db", help="database folder: made by `avmatch copydetect add`, or the "
                            "pipeline's data/copydetect/db"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the matches here (VSC22 matching CSV)"),
    min_score: Optional[float] = typer.Option(None, help="hide matches below this score (default: the db's)"),
    descriptor: Optional[DescriptorKind] = typer.Option(None, "--descriptor", help="refuse to run unless the "
                                                        "database was built with this descriptor (default: any)"),
    dct_weight: Optional[float] = typer.Option(None, "--dct-weight", min=0, help=DCT_WEIGHT_HELP),
    verify: Optional[bool] = typer.Option(None, "--verify/--no-verify", help="verify every match with keypoints + "
                                          "RANSAC against the reference videos (re-scores them, refines their bounds; "
                                          "default and settings: the database's, recorded from "
                                          "copydetect.verify when it was built)"),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help="--verify: folder of the reference videos "
                                           "(<ref_id>.*; default: the files `add` recorded)"),
) -> None:
    from avmatch.copydetect.database import CopyDB
    from avmatch.copydetect.descriptor import DescriptorMismatch, check_same
    from avmatch.copydetect.metrics import MATCH_COLUMNS
    from avmatch.core.cli_io import CsvRows
    from avmatch.core.db_store import DamagedDatabase
    from avmatch.core.progress import progress
    from avmatch.core.query_inputs import expand_queries
    from avmatch.core.video import MediaError

    try:
        cdb = CopyDB.load(db)
    except (FileNotFoundError, DamagedDatabase) as exc:
        fail(str(exc))
    try:
        check_same(db, cdb.descriptor, _descriptor_option(descriptor, dct_weight))
    except DescriptorMismatch as exc:
        fail(str(exc))
    if cdb.settings.get("beta", 0) > 0 and len(cdb.noise) == 0:
        waiting(f"{db} has no noise set: score normalisation is OFF (add one with `avmatch copydetect add --noise DIR`)")
    verifier = None
    vparams = _verify_params(db, cdb.settings.get("verify"))
    if verify if verify is not None else vparams.enabled:
        from avmatch.copydetect.verify import VerifyParams

        if ref_dir is None and not cdb.settings.get("ref_sources"):
            msg = (f"{db} does not record its reference video files, which verification needs: give --ref-dir "
                   "(or build the database with `avmatch copydetect add`)")
            if verify:
                fail(msg)
            waiting(msg + "; verification is OFF")
        else:
            verifier = cdb.verifier(VerifyParams.from_params(vparams), ref_dir)
    queries = list(expand_queries(videos))
    try:
        out_rows = CsvRows(MATCH_COLUMNS, out)
    except OSError as exc:
        fail(f"--out {out}: cannot write ({exc.strerror or exc})")
    found, failed = 0, 0
    try:
        for path, reason in progress(queries, desc="copydetect query", unit="video"):
            if not reason:
                try:
                    matches = cdb.query(path, min_score=min_score, verifier=verifier)
                except MediaError as exc:
                    if verifier is not None and Path(exc.path) != Path(path):   # a reference video
                        fail(f"{exc.path}: reference video unreadable for verification ({exc.reason})")
                    reason = exc.reason
                except FileNotFoundError as exc:   # a reference video needed by the verification
                    fail(str(exc))
                except DescriptorMismatch as exc:
                    fail(str(exc))
            if reason:
                failed += 1
                report_error(path, reason)
                continue
            found += len(matches)
            for m in matches:
                out_rows.write([m.query_id, m.ref_id, m.query_start, m.query_end, m.ref_start, m.ref_end, m.score])
    finally:
        out_rows.close()
    typer.echo(f"{len(queries) - failed} query video(s) answered, {found} copied segment(s)"
               + (f", written to {out}" if out is not None else ""), err=True)
    if failed:
        typer.secho(f"{failed} query video(s) could not be read (see the errors above)", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command("repair")
def repair(db: Optional[Path] = typer.Option(None, "--db", help="database folder (default: the pipeline's "
                                             "data/copydetect/db of the avmatch project around, or $AVMATCH_ROOT)"),
           wait: Optional[float] = typer.Option(None, "--wait", min=0, metavar="SECONDS",
                                                help="wait at most this long for another writer (default: until it "
                                                     "finishes)")) -> None:
    """Publish again the newest intact version of a damaged database (the previous version is kept for this).
    The pipeline's latest database comes back with `dvc checkout data/copydetect/db` or `dvc repro`."""
    from avmatch.copydetect.database import repair_database
    from avmatch.core.db_store import DatabaseBusy
    from avmatch.core.paths import project_root

    if db is None:   # never a folder relative to wherever the command happens to run
        db = project_root() / "data" / "copydetect" / "db"
    try:
        version, changed = repair_database(db, wait, lambda m: typer.secho(f"note: {m}", err=True))
    except (FileNotFoundError, DatabaseBusy) as exc:
        fail(str(exc))
    typer.echo(f"{db}: version {version} " + ("published again (the damaged one is no longer read)" if changed
                                             else "is intact; nothing to repair"))
