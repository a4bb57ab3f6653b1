"""The `avmatch` command line: run pipeline stages, build corpora, manage fingerprint databases."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

# FAISS's OpenMP threads busy-wait by default and starve the other work on small machines; this must
# be set before faiss is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from avmatch.core.config import ConfigError  # noqa: E402
from avmatch.core.progress import setup_logging  # noqa: E402

app = typer.Typer(
    help="avmatch: reproducible content matching and retrieval for audio and video.\n\n"
         "Pipelines run with `dvc repro` (or a Prefect flow; one stage: `python -m pipelines NAME`); this "
         "command builds the offline demo corpora, scores results and runs each system on your own media.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
corpus_app = typer.Typer(help="Build offline demo/test corpora from material that packages ship.", no_args_is_help=True)
params_app = typer.Typer(help="Inspect and validate params.yaml.", no_args_is_help=True)
metrics_app = typer.Typer(help="Show evaluation metrics.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
app.add_typer(params_app, name="params")
app.add_typer(metrics_app, name="metrics")


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@params_app.command("check")
def params_check(path: Path = typer.Argument(Path("params.yaml"), help="parameter file to validate")) -> None:
    """Validate a parameter file; print every wrong key or value with what is allowed."""
    from avmatch.core.config import load_params

    try:
        load_params(path)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"{path}: ok")


@params_app.command("show")
def params_show(path: Path = typer.Argument(Path("params.yaml"))) -> None:
    """Print the full, validated parameters including defaults not written in the file."""
    from avmatch.core.config import load_params

    try:
        typer.echo(yaml.safe_dump(load_params(path).model_dump(mode="json"), sort_keys=False))
    except ConfigError as exc:
        _fail(str(exc))


@corpus_app.command("import")
def corpus_import(
    system: str = typer.Argument(..., help="which corpus: vmr (your music videos: each soundtrack becomes its pair) | "
                                            "voiceface (EFT's released VoxCeleb1 features and lists, or a "
                                            "VoxCeleb-style folder of media: identity/video/clip.mp4|wav|jpg)"),
    source: Path = typer.Argument(..., help="folder of your files"),
    root: Optional[Path] = typer.Option(None, help="corpus folder to write (default: params.yaml)"),
    meta: Optional[Path] = typer.Option(None, help="voiceface: identities table like VoxCeleb's vox1_meta.csv "
                                                   "(VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set)"),
    seed: int = typer.Option(0, help="voiceface: seed of the identity split when the table gives none"),
) -> None:
    """Turn a folder of your own media into a corpus the pipeline reads; bad files are reported (exit 1)."""
    setup_logging()
    from avmatch.core.config import load_params
    from avmatch.core.paths import project_root

    if system == "voiceface":
        from avmatch.voiceface.eft_import import EftLayoutError, import_eft
        from avmatch.voiceface.voxceleb_folder import import_voxceleb_folder

        if root is None:
            try:
                root = project_root() / load_params(project_root() / "params.yaml",
                                                    systems=["voiceface"]).voiceface.corpus.root
            except (ConfigError, AttributeError, KeyError) as exc:
                _fail(f"pass --root (no voiceface.corpus.root in params.yaml: {exc})")
        if (source / "dataset" / "info").is_dir() or (source / "info").is_dir():     # EFT's released data
            try:
                info = import_eft(source, root)
            except (EftLayoutError, FileNotFoundError) as exc:
                _fail(str(exc))
            typer.echo(json.dumps(info, indent=2))
            return
        try:                                                                          # your own media
            r = import_voxceleb_folder(source, root, meta, seed=seed)
        except FileNotFoundError as exc:
            _fail(f"{exc}; and no EFT dataset here either (expected {source}/dataset/info/ or {source}/info/)")
        except ValueError as exc:
            _fail(str(exc))
        for f, reason in r["skipped"]:
            typer.secho(f"skipped {f}: {reason}", fg=typer.colors.YELLOW, err=True)
        typer.echo(json.dumps({**{k: v for k, v in r.items() if k != "skipped"}, "bad_files": len(r["skipped"]),
                               "root": str(root)}, indent=2))
        raise typer.Exit(1 if r["skipped"] else 0)
    if system != "vmr":
        _fail(f"unknown import '{system}'; available: vmr, voiceface")
    from avmatch.vmr.importer import import_music_videos

    if root is None:
        try:
            root = project_root() / load_params(project_root() / "params.yaml", systems=["vmr"]).vmr.corpus.root
        except ConfigError as exc:
            _fail(str(exc))
    try:
        pairs, bad = import_music_videos(source, root)
    except FileNotFoundError as exc:
        _fail(str(exc))
    for f, reason in bad:
        typer.secho(f"skipped {f}: {reason}", fg=typer.colors.YELLOW, err=True)
    splits = {s: sum(p["split"] == s for p in pairs) for s in ("train", "val", "test")}
    typer.echo(json.dumps({"pairs": len(pairs), **splits, "bad_files": len(bad), "root": str(root)}, indent=2))
    if bad:
        raise typer.Exit(1)


@corpus_app.command("build")
def corpus_build(
    system: str = typer.Argument(..., help="which corpus: fingerprint (offline demo) | nafp (import the NAFP dataset) "
                                         "| copydetect (video copy detection, VSC22 layout) "
                                         "| versions (chorale families + folk-tune versions) "
                                         "| vmr (music videos cut to real music)"),
    size: Optional[str] = typer.Option(None, help="tiny | demo | large (default: params.yaml)"),
    seed: Optional[int] = typer.Option(None, help="random seed (default: params.yaml)"),
    root: Optional[Path] = typer.Option(None, help="output folder (default: params.yaml)"),
    dataset_root: Optional[Path] = typer.Option(None, help="nafp: the neural-audio-fp-dataset folder (required)"),
    max_dummy_refs: Optional[int] = typer.Option(None, help="nafp: dummy-db tracks added to the references "
                                                            "(default: params.yaml)"),
) -> None:
    """Build a corpus deterministically from a seed: the offline demo corpus from real packaged material,
    or (nafp) the NAFP dataset linked into the corpus layout with synthesized queries."""
    setup_logging()
    from avmatch.core.config import load_params
    from avmatch.core.paths import project_root

    if system == "copydetect":  # the VSC22-layout video copy detection corpus (docs/datasets.md)
        from avmatch.copydetect.cli import build_corpus

        typer.echo(json.dumps(build_corpus(size, seed, root), indent=2, default=float))
        return
    if system == "vmr":  # music videos edited to real music (docs/datasets.md)
        from avmatch.vmr.cli import build_corpus as build_vmr_corpus

        typer.echo(json.dumps(build_vmr_corpus(size, seed, root), indent=2, default=float))
        return
    if system == "versions":
        from avmatch.versions.corpus import build_versions_corpus

        try:
            vc = load_params(project_root() / "params.yaml", systems=["versions"], overrides={k: v for k, v in (("versions.corpus.size", size),
                                 ("versions.corpus.seed", seed)) if v is not None}).versions.corpus
        except ConfigError as exc:
            _fail(str(exc))
        from avmatch.core.soundfonts import SoundfontUnavailable

        try:
            info = build_versions_corpus(vc.size, vc.seed, root or (project_root() / vc.root), vc.folk_tunes,
                                         vc.folk_versions, vc.chorale_versions, vc.reharm_versions,
                                         tuple(vc.train_soundfonts), tuple(vc.unseen_soundfonts), vc.unseen_val)
        except SoundfontUnavailable as exc:
            _fail(str(exc))
        typer.echo(json.dumps(info, indent=2, default=float))
        return
    if system not in ("fingerprint", "nafp"):
        _fail(f"unknown corpus '{system}'; available: fingerprint, nafp, copydetect, versions, vmr")
    if system == "nafp" and dataset_root is None:
        _fail("nafp needs --dataset-root PATH (the neural-audio-fp-dataset folder; see docs/datasets.md)")
    if system == "fingerprint" and (dataset_root is not None or max_dummy_refs is not None):
        _fail("--dataset-root / --max-dummy-refs only apply to the nafp corpus")
    overrides: dict = {"fingerprint.corpus.source": "nafp" if system == "nafp" else "builtin"}
    if system == "nafp":
        overrides["fingerprint.corpus.dataset_root"] = str(dataset_root.expanduser().resolve())
        if max_dummy_refs is not None:
            overrides["fingerprint.corpus.max_dummy_refs"] = max_dummy_refs
    if size:
        overrides["fingerprint.corpus.size"] = size
    if seed is not None:
        overrides["fingerprint.corpus.seed"] = seed
    try:
        params = load_params(project_root() / "params.yaml", overrides=overrides, systems=["fingerprint"])
    except ConfigError as exc:
        _fail(str(exc))
    cp = params.fingerprint.corpus
    out = root or (project_root() / cp.root)
    if system == "nafp":
        from avmatch.fingerprint.nafp import NafpLayoutError, import_nafp_corpus

        try:
            info = import_nafp_corpus(Path(cp.dataset_root), Path(out), cp, cp.max_dummy_refs)
        except NafpLayoutError as exc:
            _fail(str(exc))
    else:
        from avmatch.fingerprint.corpus import build_fingerprint_corpus

        info = build_fingerprint_corpus(cp, Path(out))
    typer.echo(json.dumps(info, indent=2, default=float))


@metrics_app.command("show")
def metrics_show(path: Path = typer.Argument(Path("metrics/fingerprint.json"))) -> None:
    """Print a fingerprint metrics file as a table (hit rates by query length)."""
    from avmatch.fingerprint.report import fingerprint_table

    if not path.exists():
        _fail(f"{path}: no metrics yet (run `dvc repro` first)")
    typer.echo(fingerprint_table(json.loads(path.read_text())))


def main() -> None:  # pragma: no cover
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


from avmatch.fingerprint import cli as fingerprint_cli  # noqa: E402  (registers `avmatch fingerprint ...`)

app.add_typer(fingerprint_cli.app, name="fingerprint")

from avmatch import runs_cli  # noqa: E402  (registers `avmatch runs ...`)

app.add_typer(runs_cli.app, name="runs")

from avmatch.copydetect import cli as copydetect_cli  # noqa: E402  (registers `avmatch copydetect ...` and the VSC22 metrics)

app.add_typer(copydetect_cli.app, name="copydetect")
copydetect_cli.register_metrics(metrics_app)

from avmatch.versions import cli as versions_cli  # noqa: E402  (registers `avmatch versions ...`)

app.add_typer(versions_cli.app, name="versions")

from avmatch.voiceface import metrics_cli as voiceface_metrics_cli  # noqa: E402  (`avmatch metrics voiceface`)

voiceface_metrics_cli.register_metrics(metrics_app)

from avmatch.vmr import cli as vmr_cli  # noqa: E402  (registers `avmatch vmr ...`)

app.add_typer(vmr_cli.app, name="vmr")

from avmatch.voiceface import cli as voiceface_cli  # noqa: E402  (registers `avmatch voiceface ...`)

app.add_typer(voiceface_cli.app, name="voiceface")
