"""Where a command finds the project's trained model, wherever it runs.

A user runs `avmatch ... add` from their music folder, not from the project: a default like
`models/<system>/encoder.pt` taken relative to the working directory fails there. The model is
looked for in `$AVMATCH_ROOT` when set (the user named the project), else in the project around the
working directory and in the checkout the `avmatch` package runs from (an editable install or
`PYTHONPATH=src`), first match wins. A `--model PATH` given by the user is relative to the working
directory, as any path argument.

A system may also ship an encoder with the package (`src/avmatch/shipped/<system>/`, laid out as a
small project: params.yaml, models/, metrics/ and lineage.json saying which pipeline run made it),
trained by a configuration a 2-core demo cannot afford. It is the default when the user names no
project (`shipped_project`, `default_projects`).
"""

from __future__ import annotations

import os
from pathlib import Path

from avmatch.core.paths import project_root


class ModelNotFound(RuntimeError):
    """No usable trained model; the message lists where it looked and what to do."""


def candidate_projects() -> list[Path]:
    """Project roots to look in, first match wins: `$AVMATCH_ROOT` alone when it is set, else the
    project around the working directory and the checkout `avmatch` runs from."""
    import avmatch

    if os.environ.get("AVMATCH_ROOT"):
        return [project_root()]
    found: list[Path] = []
    here = project_root()
    if (here / "params.yaml").exists():
        found.append(here)
    # the checkout `avmatch` runs from (an editable install or PYTHONPATH=src): src/avmatch/__init__.py
    checkout = Path(avmatch.__file__).resolve().parents[2]
    if (checkout / "params.yaml").exists() and checkout not in found:
        found.append(checkout)
    return found


SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "shipped"


def shipped_project(system: str, rel: Path) -> Path | None:
    """The folder of the encoder the package ships for `system` when it holds `rel`, else None."""
    folder = SHIPPED_ROOT / system
    return folder if (folder / rel).is_file() and (folder / "params.yaml").is_file() else None


def default_projects(system: str, rel: Path) -> list[Path]:
    """Where a command without `--model` looks, first match wins: the project `$AVMATCH_ROOT` names
    (the user chose it), else the shipped encoder, else the project around the working directory and
    the checkout `avmatch` runs from."""
    if os.environ.get("AVMATCH_ROOT"):
        return candidate_projects()
    shipped = shipped_project(system, rel)
    return ([shipped] if shipped is not None else []) + candidate_projects()


def project_of(model: Path) -> Path | None:
    """The project a model file belongs to: the nearest ancestor folder holding params.yaml."""
    for d in Path(model).resolve().parents:
        if (d / "params.yaml").exists():
            return d
    return None


def find_project_model(rel: Path, projects: list[Path] | None = None) -> tuple[Path | None, list[Path]]:
    """(the first of `projects` (default: the candidate projects) whose `rel` exists, or None; every path
    looked at)."""
    looked = [root / rel for root in (candidate_projects() if projects is None else projects)]
    return next((p for p in looked if p.exists()), None), looked


def not_found_message(what: str, looked: list[Path], train: str, command: str, model_note: str = "") -> str:
    """What a user reads when no trained `what` was found: where it looked and the three ways out
    (`train`: the command that trains one, as the user types it)."""
    where = "\n".join(f"  - {p}" for p in looked) or "  - (no avmatch project found: no params.yaml here or above)"
    return (f"no trained {what} found. Looked for:\n{where}\n"
            "Do one of:\n"
            f"  - train one: {train} in the avmatch project;\n"
            f"  - point at the project: AVMATCH_ROOT=/path/to/avmatch {command} ...;\n"
            f"  - pass an encoder: --model /path/to/encoder.pt{model_note}.")


def given_model(model: Path, rel: Path) -> Path:
    """A `--model` the user gave, resolved against the working directory; ModelNotFound when no file."""
    path = Path(model).expanduser().resolve()
    if not path.is_file():
        raise ModelNotFound(f"{model}: no such encoder file (resolved to {path}); pass the path of a trained "
                            f"encoder, e.g. /path/to/avmatch/{rel.as_posix()}")
    return path


def locate_model(model: Path | None, rel: Path, what: str, train: str, command: str,
                 system: str | None = None) -> Path:
    """The encoder a command should use: `--model` when given (relative to the working directory), else
    the first candidate project's trained `rel`, wherever the command runs; with `system`, the encoder the
    package ships for it comes before the projects nobody named (`default_projects`). ModelNotFound names
    where it looked and the three ways out (`what`, `train`, `command`: see `not_found_message`)."""
    if model is not None:
        return given_model(model, rel)
    found, looked = find_project_model(rel, default_projects(system, rel) if system else None)
    if found is None:
        raise ModelNotFound(not_found_message(what, looked, train, command))
    return found
