"""Prefect flow for the voice-face association pipeline (EFT): the same stage functions `dvc repro` runs, in
order. The demo corpus is a SIMULATED cohort of expert embeddings (not real data).

    python -m flows.voiceface                               # whole pipeline with params.yaml
    python -m flows.voiceface -S voiceface.train.sbc.mode=off --stages train extract evaluate

From the Prefect UI the `voiceface` parameter is a form of the params.yaml section: fill in only what to
change. Values are validated before any stage starts. A run without overrides goes through DVC (flows/dvc_run.py): stale stages run and dvc.lock is updated as
`dvc repro` would, up-to-date ones end as Cached. A run with overrides is a DVC
experiment in a temporary workspace (flows/dvc_exp.py; `-n`/`experiment` names it): `dvc exp show` lists it,
the workspace is left as it was, `dvc exp apply <name>` promotes it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from avmatch.core.config import partial_model
from avmatch.voiceface.params import VoicefaceParams
from flows.pipeline import cli_main, merge_overrides, run_pipeline

VoicefaceOverrides = partial_model(VoicefaceParams, "VoicefaceOverrides")


@flow(name="voiceface", log_prints=True, validate_parameters=True)
def voiceface_flow(voiceface: VoicefaceOverrides | None = None, overrides: dict[str, Any] | None = None,  # type: ignore[valid-type]
                   stages: list[str] | None = None, root: str | None = None,
        experiment: str | None = None) -> dict:
    """Run the voice-face stages (all, or the named ones in pipeline order); returns each stage's summary. `voiceface`: values to change in the params.yaml section; `overrides`: dotted keys of any section."""
    return run_pipeline("voiceface", merge_overrides("voiceface", voiceface, overrides), stages, root, experiment)


def main(argv: list[str] | None = None) -> None:
    cli_main("voiceface", voiceface_flow, __doc__, argv)


if __name__ == "__main__":
    main()
