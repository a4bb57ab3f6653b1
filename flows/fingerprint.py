"""Prefect flow for the fingerprint pipeline: the same stage functions `dvc repro` runs, in order.

    python -m flows.fingerprint                      # whole pipeline with params.yaml
    python -m flows.fingerprint -S fingerprint.train.max_steps=200 --stages extract index evaluate

Overrides are validated before any stage starts (an unknown key or bad value fails the flow at
once, naming the key). Stages whose inputs did not change are NOT skipped here (use `dvc repro` for
that); each stage's own caches (metadata, decoded audio, shards, checkpoints) still make reruns cheap.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import cli_main, run_pipeline


@flow(name="fingerprint", log_prints=True)
def fingerprint_flow(overrides: dict[str, Any] | None = None, stages: list[str] | None = None,
                     root: str | None = None) -> dict:
    """Run the fingerprint stages (all, or the named ones in pipeline order); returns each stage's summary."""
    return run_pipeline("fingerprint", overrides, stages, root)


def main(argv: list[str] | None = None) -> None:
    cli_main("fingerprint", fingerprint_flow, __doc__, argv)


if __name__ == "__main__":
    main()
