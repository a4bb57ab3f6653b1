"""Prefect flow for the video-to-music retrieval pipeline: the stages of dvc.yaml, in DVC's order.

    python -m flows.vmr                               # whole pipeline with params.yaml
    python -m flows.vmr -S vmr.train.loss=hinge --stages train extract index evaluate

From the Prefect UI the `vmr` parameter is a form of the params.yaml section: fill in only what to
change. Values are validated before any stage starts. A run without overrides goes through DVC (flows/dvc_run.py): stale stages run and dvc.lock is updated as
`dvc repro` would, up-to-date ones end as Cached. A run with overrides is a DVC
experiment in a temporary workspace (flows/dvc_exp.py; `-n`/`experiment` names it): `dvc exp show` lists it,
the workspace is left as it was, `dvc exp apply <name>` promotes it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from avmatch.core.config import partial_model
from avmatch.vmr.params import VmrParams
from flows.pipeline import cli_main, merge_overrides, run_pipeline

VmrOverrides = partial_model(VmrParams, "VmrOverrides")


@flow(name="vmr", log_prints=True, validate_parameters=True)
def vmr_flow(vmr: VmrOverrides | None = None, overrides: dict[str, Any] | None = None,  # type: ignore[valid-type]
             stages: list[str] | None = None, root: str | None = None,
        experiment: str | None = None) -> dict:
    """Run the video-to-music retrieval stages (all, or the named ones in pipeline order); returns each
    stage's summary. `vmr`: values to change in the params.yaml section; `overrides`: dotted keys of any section."""
    return run_pipeline("vmr", merge_overrides("vmr", vmr, overrides), stages, root, experiment)


def main(argv: list[str] | None = None) -> None:
    cli_main("vmr", vmr_flow, __doc__, argv)


if __name__ == "__main__":
    main()
