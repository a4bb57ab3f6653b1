"""Prefect flow for the fingerprint pipeline: the stages of dvc.yaml, in DVC's order.

    python -m flows.fingerprint                      # whole pipeline with params.yaml
    python -m flows.fingerprint -S fingerprint.train.max_steps=200 --stages extract index evaluate

From the Prefect UI (deployment `fingerprint/avmatch`, served by `python -m flows.serve`) the
`fingerprint` parameter is a form of the params.yaml section: fill in only what to change. Either
way the values are validated before any stage starts (a wrong key or type fails the run at once,
naming the key). A run without overrides goes through DVC (flows/dvc_run.py): stale stages run and dvc.lock is updated as
`dvc repro` would, up-to-date ones end as Cached. A run with overrides is a DVC
experiment in a temporary workspace (flows/dvc_exp.py; `-n`/`experiment` names it): `dvc exp show` lists it,
the workspace is left as it was, `dvc exp apply <name>` promotes it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from avmatch.core.config import partial_model
from avmatch.fingerprint.params import FingerprintParams
from flows.pipeline import cli_main, merge_overrides, run_pipeline

FingerprintOverrides = partial_model(FingerprintParams, "FingerprintOverrides")


@flow(name="fingerprint", log_prints=True, validate_parameters=True)
def fingerprint_flow(fingerprint: FingerprintOverrides | None = None, overrides: dict[str, Any] | None = None,  # type: ignore[valid-type]
                     stages: list[str] | None = None, root: str | None = None,
        experiment: str | None = None) -> dict:
    """Run the fingerprint stages (all, or the named ones in pipeline order); returns each stage's summary.

    `fingerprint`: values to change in the params.yaml section; `overrides`: dotted keys of any
    section (`common.seed: 3`), as `dvc exp run -S` takes them.
    """
    return run_pipeline("fingerprint", merge_overrides("fingerprint", fingerprint, overrides), stages, root, experiment)


def main(argv: list[str] | None = None) -> None:
    cli_main("fingerprint", fingerprint_flow, __doc__, argv)


if __name__ == "__main__":
    main()
