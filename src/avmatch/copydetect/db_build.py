"""A copy detection database of a user's own reference videos: `avmatch copydetect add`.

The pipeline's extract stage writes a database of its corpus; users need one of their footage, grown
as videos arrive, without running the pipeline. `add_references` embeds only what is new or changed
(a file whose id and content hash are already in the database is skipped; a changed file replaces
its old descriptors) and publishes one new version (`CopyDB.create`, under the writer lock), so a
query running meanwhile reads the old or the new database, never half of one.

Ids are file names without extension, as in the VSC22 CSVs; two inputs with the same name are an
error for the second, not a silent overwrite. A file that cannot be decoded is reported with the
reason and the others are still added.

A new database is built with `--model`, else with a trained `models/copydetect/encoder.pt` found by
`avmatch.core.model_lookup` as the fingerprint `add` finds its encoder: the project `$AVMATCH_ROOT` names,
else the encoder the package ships (`src/avmatch/shipped/copydetect`, with its pipeline lineage), else the
project around the working directory or the checkout avmatch runs from. Its settings (1 fps frames,
frame descriptor, k, β, localisation) and its noise set come from the project's pipeline database when that was
built with the same encoder and descriptor (so user queries are answered as the evaluated ones were), else from
the project's params.yaml (and `--descriptor`), with the noise set from `--noise DIR`; without a noise set,
normalisation is off and the command says so. A database keeps its descriptor (`avmatch.copydetect.descriptor`):
references, noise and queries are all described with it, and asking for another one is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from avmatch.copydetect.database import CopyDB, settings_from
from avmatch.copydetect.descriptor import DescriptorSpec, check_same
from avmatch.copydetect.metrics import VideoFeatures
from avmatch.core.db_store import DamagedDatabase
from avmatch.core.hashing import file_hash
from avmatch.core.model_lookup import (
    ModelNotFound,
    locate_model,
    project_of,
)

ENCODER_REL = Path("models") / "copydetect" / "encoder.pt"
PIPELINE_DB_REL = Path("data") / "copydetect" / "db"
WHITENING_REL = Path("data") / "copydetect" / "descriptors" / "whitening.npz"   # the extract stage's fit


EncoderNotFound = ModelNotFound   # no encoder for a new database, or another one than the database's


@dataclass
class AddReport:
    """What one `add` did: ids embedded, ids unchanged, (input, reason) errors, the database's size."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)     # added ids that replaced another file's descriptors
    unchanged: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    refs: int = 0
    ref_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def locate_default_encoder(model: Path | None = None) -> Path:
    """`model` when given, else the encoder `$AVMATCH_ROOT`'s project trained, else the one the package ships
    (`src/avmatch/shipped/copydetect`), else the project around the working directory or the checkout;
    EncoderNotFound says what to do otherwise."""
    return locate_model(model, ENCODER_REL, "copy detection encoder",
                        "`dvc repro copydetect_evaluate` (or `make demo-copydetect`)", "avmatch copydetect add",
                        system="copydetect")


def _descriptor_section(cd: dict) -> dict:
    """params.yaml's copydetect.descriptor; a section written before the post-processing options (e.g. the
    params.yaml shipped with an encoder evaluated without them) describes the descriptor without them."""
    section = dict(cd.get("descriptor") or {})
    if section and "mirror" not in section and "whiten_power" not in section:
        section.update(mirror=False, whiten_power=0.0)
    return section


def _project_settings(project: Path | None) -> dict:
    """The project's copydetect frames/candidates/localise/descriptor/verify params (only those subsections are
    read, so a params.yaml of another pipeline version still gives them); the defaults when there is none."""
    import yaml

    from avmatch.copydetect.params import (
        CdCandidatesParams,
        CdDescriptorParams,
        CdFramesParams,
        CdLocaliseParams,
        CdVerifyParams,
    )

    cd: dict = {}
    if project is not None and (project / "params.yaml").exists():
        cd = (yaml.safe_load((project / "params.yaml").read_text()) or {}).get("copydetect") or {}
    frames = CdFramesParams(**(cd.get("frames") or {}))
    cand = CdCandidatesParams(**(cd.get("candidates") or {}))
    return settings_from(fps=frames.fps, frame_size=frames.size, beta=cand.beta, k=cand.k,
                         max_pairs_per_query=cand.max_pairs_per_query,
                         localise=CdLocaliseParams(**(cd.get("localise") or {})).model_dump(),
                         descriptor=DescriptorSpec.from_params(CdDescriptorParams(**_descriptor_section(cd))),
                         verify=CdVerifyParams(**(cd.get("verify") or {})).model_dump())


def new_database_setup(encoder: Path, descriptor: DescriptorSpec | None = None) -> tuple[dict, list[VideoFeatures], str]:
    """(settings, noise descriptors, where they came from) for a new database built with `encoder`: the
    project's pipeline database when it holds the same encoder and descriptor, else the project's params.yaml,
    no noise. `descriptor` (None: the pipeline database's, else params.yaml's) overrides the descriptor."""
    project = project_of(encoder)
    if project is not None and (project / PIPELINE_DB_REL).exists():
        try:
            pipeline = CopyDB.load(project / PIPELINE_DB_REL)
        except (DamagedDatabase, FileNotFoundError, OSError, ValueError):
            pipeline = None     # a damaged pipeline database only costs its noise set; params.yaml has the settings
        if (pipeline is not None and pipeline.encoder is not None and file_hash(pipeline.encoder) == file_hash(encoder)
                and (descriptor is None or descriptor.record() == pipeline.descriptor.record())):
            settings = {k: v for k, v in pipeline.settings.items() if k != "ref_sources"}
            settings["descriptor"] = pipeline.descriptor.record()     # explicit, also for an older pipeline database
            return settings, pipeline.noise_videos, str(project / PIPELINE_DB_REL)
    settings = _project_settings(project)
    if descriptor is not None:   # the pipeline's noise set is in another descriptor: not usable
        settings["descriptor"] = descriptor.record()
    return settings, [], str(project / "params.yaml") if project else "the default parameters"


def whitening_for(encoder: Path, spec: DescriptorSpec) -> Path | None:
    """The fitted whitening a new database of `encoder` with the whitened descriptor `spec` takes (None when
    `spec` does not whiten): the one the extract stage of the encoder's project fitted for this encoder and
    descriptor (`data/copydetect/descriptors/whitening.npz`, also shipped with the encoder). WhiteningMissing
    when there is none."""
    from avmatch.copydetect.descriptor import Whitening, WhiteningMissing

    if not spec.whitens:
        return None
    project = project_of(encoder)
    f = project / WHITENING_REL if project is not None else None
    if f is None or not f.exists():
        raise WhiteningMissing(f"the {spec.label} descriptor needs the whitening fitted on the references and noise "
                               f"set of {encoder}'s project ({WHITENING_REL}: `dvc repro copydetect_extract` there); "
                               "none found: give --descriptor (a descriptor without post-processing), or run the pipeline there")
    try:
        fit = Whitening.load(f)
    except ValueError as exc:
        raise WhiteningMissing(f"{exc}: run `dvc repro copydetect_extract` in {project} to fit it again, or give "
                               "--descriptor (a descriptor without post-processing)") from None
    fit.check(f, spec, file_hash(encoder))
    return f


def embed_videos(files: Iterable[tuple[str, Path]], encoder: Path, settings: dict,
                 on_error: Callable[[str, str], None], desc: str,
                 whitening: Path | None = None) -> list[tuple[VideoFeatures, str]]:
    """(descriptors, content hash) of each (id, file) at the database's frame rate and size, with its
    descriptor and a progress bar; a file that cannot be decoded (or has no frame) goes to
    `on_error(path, reason)` and is left out."""
    from avmatch.copydetect.descriptor import frame_describer
    from avmatch.copydetect.model import load_frame_encoder
    from avmatch.core.progress import progress
    from avmatch.core.video import MediaError, decode_frames

    files = list(files)
    if not files:
        return []
    from avmatch.copydetect.descriptor import Whitening

    spec = DescriptorSpec.from_record(settings.get("descriptor"))
    describe = frame_describer(spec, load_frame_encoder(encoder),
                               whitening=Whitening.load(whitening).check(whitening, spec) if spec.whitens else None)
    out = []
    for vid, path in progress(files, desc=desc, unit="video"):
        try:
            dec = decode_frames(path, fps=settings["fps"], size=settings["frame_size"])
        except MediaError as exc:
            on_error(str(path), exc.reason)
            continue
        if len(dec.frames) == 0:
            on_error(str(path), "no frame could be decoded")
            continue
        out.append((VideoFeatures(vid, dec.timestamps, describe(dec.frames)), file_hash(path)))
    return out


def add_references(db: Path, inputs: Iterable[str], model: Path | None = None, noise_dir: Path | None = None,
                   wait: float | None = None, say=None, on_error: Callable[[str, str], None] | None = None,
                   descriptor: DescriptorSpec | None = None) -> AddReport:
    """Add (or update) reference videos in the database at `db`, creating it when new; see the module
    docstring. `noise_dir` (re)places the noise set; errors go to `on_error` as they happen. `descriptor`:
    the frame descriptor of a new database (None: see `new_database_setup`); an existing database refuses
    another one than its own (DescriptorMismatch)."""
    from avmatch.copydetect.database import snapshots
    from avmatch.core.query_inputs import expand

    report = AddReport()

    def error(path: str, reason: str) -> None:
        report.errors.append((path, reason))
        if on_error:
            on_error(path, reason)

    files: dict[str, Path] = {}
    for arg in inputs:
        found, reason = expand(arg)
        if reason:
            error(str(arg), reason)
        for f in found:
            f = f.resolve()
            if f.stem in files and files[f.stem] != f:
                error(str(f), f"id {f.stem} is already the file {files[f.stem]} (ids are file names without "
                              "extension; rename one)")
            else:
                files.setdefault(f.stem, f)
    db = Path(db)
    new_folder = not db.exists()
    try:
        _add_locked(db, files, model, noise_dir, wait, say, error, report, descriptor)
    finally:
        if new_folder and db.exists() and snapshots(db).current() is None:   # leave no empty database behind
            from avmatch.core.db_store import LOCK_FILE

            (db / LOCK_FILE).unlink(missing_ok=True)
            try:
                db.rmdir()
            except OSError:
                pass
    return report


def _add_locked(db: Path, files: dict[str, Path], model: Path | None, noise_dir: Path | None, wait: float | None,
                say, error: Callable[[str, str], None], report: AddReport, descriptor: DescriptorSpec | None) -> None:
    """Read the database, embed what is new and publish, all under the writer lock."""
    from avmatch.copydetect.database import snapshots
    from avmatch.core.db_store import writer_lock
    from avmatch.core.query_inputs import expand

    with writer_lock(db, wait, say):
        new = snapshots(db).current() is None
        if not new:
            current = CopyDB.load(db)
            encoder, settings = current.encoder, dict(current.settings)
            refs = {r.video_id: r for r in current.refs}
            noise = current.noise_videos
            if model is not None and file_hash(Path(model)) != file_hash(encoder):
                raise EncoderNotFound(f"{db} was built with another encoder than {model}; a database keeps one "
                                      "encoder (omit --model, or give a new --db)")
            check_same(db, current.descriptor, descriptor)
            settings["descriptor"] = current.descriptor.record()    # explicit, also for a database older than the option
            whitening = current.whitening
        else:
            encoder = locate_default_encoder(model)
            settings, noise, source = new_database_setup(encoder, descriptor)
            whitening = whitening_for(encoder, DescriptorSpec.from_record(settings["descriptor"]))
            report.notes.append(f"new database {db}: encoder {encoder}, "
                                f"{DescriptorSpec.from_record(settings['descriptor']).label} descriptor; settings and "
                                f"noise set from {source}")
            refs = {}
        sources = dict(settings.get("ref_sources") or {})
        todo = []
        for vid, path in files.items():
            known = sources.get(vid)
            if known and vid in refs and known.get("hash") == file_hash(path):
                report.unchanged.append(vid)
            else:
                todo.append((vid, path))
        if noise_dir is not None:
            noise_files, reason = expand(noise_dir)
            if reason:
                raise FileNotFoundError(f"--noise {noise_dir}: {reason}")
            noise = [v for v, _ in embed_videos(((p.stem, p) for p in noise_files), encoder, settings, error,
                                                "copydetect add: noise", whitening)]
        for vf, digest in embed_videos(todo, encoder, settings, error, "copydetect add: references", whitening):
            if vf.video_id in refs:
                report.replaced.append(vf.video_id)
            refs[vf.video_id] = vf
            sources[vf.video_id] = {"path": str(files[vf.video_id]), "hash": digest}
            report.added.append(vf.video_id)
        if settings.get("beta", 0) > 0 and not noise:
            report.notes.append("score normalisation is OFF for this database: it has no noise set (give --noise "
                                "DIR: videos that are certainly not references)")
        report.refs = len(refs)
        report.ref_seconds = float(sum(r.timestamps[:, 1].max() - r.timestamps[:, 0].min()
                                       for r in refs.values() if len(r)))
        if report.added or noise_dir is not None:
            settings["ref_sources"] = sources
            CopyDB.publish_locked(db, encoder, list(refs.values()), noise, settings, whitening)
