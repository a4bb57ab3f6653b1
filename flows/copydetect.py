"""Prefect flow for the copy detection (VSC22) pipeline: the stages of dvc.yaml, in DVC's order.

    python -m flows.copydetect                      # whole pipeline with params.yaml
    python -m flows.copydetect -S copydetect.candidates.beta=0.5 --stages candidates localise evaluate

From the Prefect UI (deployment `copydetect/avmatch`, served by `python -m flows.serve`) the
`copydetect` parameter is a form of the params.yaml section: fill in only what to change. Values are
validated before any stage starts (a wrong key or type fails the run at once, naming the key).
A run without overrides goes through DVC (flows/dvc_run.py): stale stages run and dvc.lock is updated as
`dvc repro` would, up-to-date ones end as Cached. A run with overrides is a DVC
experiment in a temporary workspace (flows/dvc_exp.py; `-n`/`experiment` names it): `dvc exp show` lists it,
the workspace is left as it was, `dvc exp apply <name>` promotes it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from avmatch.copydetect.params import CopydetectParams
from avmatch.core.config import partial_model
from flows.pipeline import cli_main, merge_overrides, run_pipeline

CopydetectOverrides = partial_model(CopydetectParams, "CopydetectOverrides")


@flow(name="copydetect", log_prints=True, validate_parameters=True)
def copydetect_flow(copydetect: CopydetectOverrides | None = None, overrides: dict[str, Any] | None = None,  # type: ignore[valid-type]
                    stages: list[str] | None = None, root: str | None = None,
        experiment: str | None = None) -> dict:
    """Run the copy detection (VSC22) stages (all, or the named ones in pipeline order); returns each stage's summary.

    `copydetect`: values to change in the params.yaml section; `overrides`: dotted keys of any section.
    """
    return run_pipeline("copydetect", merge_overrides("copydetect", copydetect, overrides), stages, root, experiment)


def main(argv: list[str] | None = None) -> None:
    cli_main("copydetect", copydetect_flow, __doc__, argv)


if __name__ == "__main__":
    main()
