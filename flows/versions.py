"""Prefect flow for the versions pipeline: the same stage functions `dvc repro` runs, in order.

    python -m flows.versions                                   # whole pipeline with params.yaml
    python -m flows.versions -S versions.evaluate.reduction=min --stages evaluate

Overrides are validated before any stage starts. Stages are not skipped here when their inputs did
not change (use `dvc repro` for that); the PCM / CQT caches and shards still make reruns cheap.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import cli_main, run_pipeline


@flow(name="versions", log_prints=True)
def versions_flow(overrides: dict[str, Any] | None = None, stages: list[str] | None = None,
                  root: str | None = None) -> dict:
    """Run the versions stages (all, or the named ones in pipeline order); returns each stage's summary."""
    return run_pipeline("versions", overrides, stages, root)


def main(argv: list[str] | None = None) -> None:
    cli_main("versions", versions_flow, __doc__, argv)


if __name__ == "__main__":
    main()
