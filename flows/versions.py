"""Prefect flow for the versions pipeline: the stages of dvc.yaml, in DVC's order.

    python -m flows.versions                                   # whole pipeline with params.yaml
    python -m flows.versions -S versions.evaluate.reduction=min --stages evaluate

Overrides are validated before any stage starts. A run without overrides goes through DVC
(flows/dvc_run.py): stale stages run and dvc.lock is updated as `dvc repro` would, up-to-date ones end
as Cached. A run with overrides is a DVC
experiment in a temporary workspace (flows/dvc_exp.py; `-n`/`experiment` names it): `dvc exp show` lists it,
the workspace is left as it was, `dvc exp apply <name>` promotes it.

From the Prefect UI (deployment `versions/avmatch`, served by `python -m flows.serve`) the `versions`
parameter is a form of the params.yaml section: fill in only what to change.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from avmatch.core.config import partial_model
from avmatch.versions.params import VersionsParams
from flows.pipeline import cli_main, merge_overrides, run_pipeline

VersionsOverrides = partial_model(VersionsParams, "VersionsOverrides")


@flow(name="versions", log_prints=True, validate_parameters=True)
def versions_flow(versions: VersionsOverrides | None = None, overrides: dict[str, Any] | None = None,  # type: ignore[valid-type]
                  stages: list[str] | None = None, root: str | None = None,
        experiment: str | None = None) -> dict:
    """Run the version identification stages (all, or the named ones in pipeline order); returns each stage's summary.

    `versions`: values to change in the params.yaml section; `overrides`: dotted keys of any section.
    """
    return run_pipeline("versions", merge_overrides("versions", versions, overrides), stages, root, experiment)


def main(argv: list[str] | None = None) -> None:
    cli_main("versions", versions_flow, __doc__, argv)


if __name__ == "__main__":
    main()
