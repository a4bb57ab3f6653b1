"""Which encoder a new fingerprint database is built with, and the no-match threshold evaluated for it.

A threshold is only meaningful for the encoder (and score definition) it was chosen for on validation
queries, so the two are looked up together and stored together in the database's db.json; nothing
falls back silently to a made-up number. The encoder is found the same way wherever the command runs:
`--model PATH` (relative to the working directory), else the trained `models/fingerprint/encoder.pt`
of the project named by `$AVMATCH_ROOT`, or when that is unset the encoder the package ships
(`src/avmatch/shipped/fingerprint`: the pipeline's `large` configuration, stronger than the 2-core
demo's; its lineage.json names the DVC experiment and MLflow registry version that made it), else
the first of the project around the working directory and the checkout the `avmatch` package runs
from. Its threshold is that project's `metrics/fingerprint.json` (per query length when the file
has them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from avmatch.core.hashing import file_hash
from avmatch.core.model_lookup import (
    ModelNotFound,
    default_projects,
    find_project_model,
    given_model,
    not_found_message,
    project_of,
    shipped_project,
)
from avmatch.fingerprint.calibration import Thresholds
from avmatch.fingerprint.params import FpIndexParams, FpSearchParams

ENCODER_REL = Path("models") / "fingerprint" / "encoder.pt"
METRICS_REL = Path("metrics") / "fingerprint.json"


class EncoderNotFound(ModelNotFound):
    """No usable encoder, or no threshold evaluated for it; the message says what to do."""


@dataclass(frozen=True)
class EncoderChoice:
    path: Path
    model_hash: str
    thresholds: Thresholds
    threshold_source: str            # the metrics file, or "--threshold"
    index: FpIndexParams = field(default_factory=FpIndexParams)
    search: FpSearchParams = field(default_factory=FpSearchParams)
    warnings: tuple[str, ...] = ()


def project_thresholds(root: Path) -> tuple[Thresholds, Path] | None:
    """The thresholds the project's last evaluation chose, with the file they came from."""
    metrics = root / METRICS_REL
    if not metrics.exists():
        return None
    try:
        return Thresholds.from_json(json.loads(metrics.read_text())), metrics
    except (ValueError, KeyError, TypeError):
        return None


def _metrics_decision(metrics: Path) -> str | None:
    """The decision an evaluation's thresholds were calibrated for (None: a file from before it was recorded)."""
    try:
        value = json.loads(metrics.read_text()).get("decision_score")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def project_settings(root: Path | None) -> tuple[FpIndexParams, FpSearchParams, list[str]]:
    """The index and search settings the project evaluated with (its params.yaml), else the defaults.

    Only those two subsections are read, so a params.yaml written for another version of the
    pipeline still gives them.
    """
    import yaml

    if root is None or not (root / "params.yaml").exists():
        return FpIndexParams(), FpSearchParams(), []
    try:
        fp = (yaml.safe_load((root / "params.yaml").read_text()) or {}).get("fingerprint") or {}
        return FpIndexParams(**(fp.get("index") or {})), FpSearchParams(**(fp.get("search") or {})), []
    except Exception as exc:  # a broken params file must not block a user's database, but is reported
        why = f"{root / 'params.yaml'}: fingerprint.index/search unreadable ({type(exc).__name__}); using the defaults"
        return FpIndexParams(), FpSearchParams(), [why]


def _not_found_message(looked: list[Path]) -> str:
    return not_found_message("fingerprint encoder", looked, "`dvc repro fingerprint_evaluate` (or `make demo`)",
                             "avmatch fingerprint add", " (with --threshold T if its project has no "
                             "metrics/fingerprint.json)")


def locate_encoder(model: Path | None = None, threshold: float | None = None) -> EncoderChoice:
    """The encoder and threshold a new database should use; EncoderNotFound says what to do otherwise.

    `threshold` (from `--threshold`) overrides the evaluated one. A given `--model` takes its
    threshold from the project it lives in, or from any candidate project whose trained encoder is
    the same file (same hash); with neither, a threshold must be given.
    """
    projects = default_projects("fingerprint", ENCODER_REL)
    warnings: list[str] = []
    if model is None:
        path, looked = find_project_model(ENCODER_REL, projects)
        if path is None:
            raise EncoderNotFound(_not_found_message(looked))
        owners = [path.parents[2]]
    else:
        try:
            path = given_model(model, ENCODER_REL)
        except ModelNotFound as exc:
            raise EncoderNotFound(str(exc)) from None
        owners = [p for p in [project_of(path), *projects] if p is not None]
    digest = file_hash(path)
    owner = None
    for root in dict.fromkeys(owners):
        trained = root / ENCODER_REL
        if trained.exists() and (trained.resolve() == path or file_hash(trained) == digest):
            owner = root
            break
    index, search, more = project_settings(owner or (project_of(path) if model is not None else None))
    warnings += more
    if threshold is not None:
        return EncoderChoice(path, digest, Thresholds(float(threshold)), "--threshold", index, search, tuple(warnings))
    found = project_thresholds(owner) if owner is not None else None
    if found is None:
        where = owner / METRICS_REL if owner is not None else "no avmatch project holding this encoder"
        raise EncoderNotFound(
            f"no evaluated no-match threshold for the encoder {path} (looked in: {where}). Evaluate it with "
            f"`dvc repro fingerprint_evaluate` in its project, or pass --threshold T (the score is explained "
            f"in `avmatch fingerprint identify --help`).")
    thresholds, metrics = found
    scored = _metrics_decision(metrics)
    if scored is None and search.score == "verified":   # a file from before the decision: its thresholds are another score's
        scored = "unrecorded (older than the decision 'verified')"
    if scored is not None and scored != search.score:
        raise EncoderNotFound(
            f"{metrics} holds thresholds for the decision {scored!r}, but fingerprint.search.score is "
            f"{search.score!r} in {owner / 'params.yaml' if owner else 'the defaults'}: run `dvc repro "
            f"fingerprint_evaluate` there again, or pass --threshold T.")
    if not thresholds.fits(search.score):
        raise EncoderNotFound(
            f"{metrics} has no similarity thresholds (similarity_thresholds_by_length), which the decision "
            f"fingerprint.search.score: either needs: it predates that decision. Run `dvc repro fingerprint_evaluate` "
            f"in {owner} again, or pass --threshold T (the margin alone).")
    if owner is not None and owner != shipped_project("fingerprint", ENCODER_REL) \
            and metrics.stat().st_mtime < (owner / ENCODER_REL).stat().st_mtime:
        warnings.append(f"{owner / ENCODER_REL} is newer than {metrics}: the threshold may have been evaluated for "
                        f"an earlier encoder (run `dvc repro fingerprint_evaluate` there to re-evaluate)")
    return EncoderChoice(path, digest, thresholds, str(metrics), index, search, tuple(warnings))
