"""Prefect flow for the copy detection (VSC22) pipeline: the same stage functions `dvc repro` runs, in order.

    python -m flows.copydetect                      # whole pipeline with params.yaml
    python -m flows.copydetect -S copydetect.candidates.beta=0.5 --stages candidates localise evaluate

Overrides are validated before any stage starts (an unknown key or bad value fails the flow at
once, naming the key). Stages whose inputs did not change are NOT skipped here (use `dvc repro` for
that); each stage's own caches (metadata, decoded frames, shards, checkpoints) still make reruns cheap.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import cli_main, run_pipeline


@flow(name="copydetect", log_prints=True)
def copydetect_flow(overrides: dict[str, Any] | None = None, stages: list[str] | None = None,
                     root: str | None = None) -> dict:
    """Run the copy detection (VSC22) stages (all, or the named ones in pipeline order); returns each stage's summary."""
    return run_pipeline("copydetect", overrides, stages, root)


def main(argv: list[str] | None = None) -> None:
    cli_main("copydetect", copydetect_flow, __doc__, argv)


if __name__ == "__main__":
    main()
