"""`avmatch runs ...`: look at the MLflow runs the pipelines recorded, from the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Compare the MLflow runs of the pipelines (params that differ, metrics side by side).",
                  no_args_is_help=True)


@app.command("compare")
def compare(
    run_ids: list[str] = typer.Argument(None, help="MLflow run ids; or leave out and use --pipeline"),
    pipeline: Optional[str] = typer.Option(None, help="compare the newest runs of this pipeline's experiment"),
    stage: Optional[str] = typer.Option("evaluate", help="with --pipeline: only runs of this stage ('' = any)"),
    last: int = typer.Option(2, min=1, help="with --pipeline: how many of the newest runs"),
    metric: list[str] = typer.Option([], help="only metrics whose name contains this (repeatable)"),
    plot: Optional[Path] = typer.Option(None, help="where to write the comparison plot "
                                                   "(default results/compare/<first run>.png)"),
    params: Path = typer.Option(Path("params.yaml"), help="project parameters (for the MLflow store location)"),
) -> None:
    """Print the params that differ and the metrics of several runs side by side, and plot them.

    Examples: `avmatch runs compare 3f2a... 9b41...`;
    `avmatch runs compare --pipeline fingerprint --last 3 --metric track_hit_rate`.
    """
    from mlflow.tracking import MlflowClient

    from avmatch.core.config import load_params
    from avmatch.core.paths import project_root
    from avmatch.core.runs_compare import compare_runs, find_runs, plot_comparison
    from avmatch.core.tracking import tracking_uri

    root = project_root()
    cfg = load_params(params if params.is_absolute() else root / params)
    client = MlflowClient(tracking_uri(cfg.common, root))
    try:
        if not run_ids:
            if not pipeline:
                raise typer.BadParameter("give run ids or --pipeline NAME")
            run_ids = find_runs(client, f"{cfg.common.mlflow.experiment_prefix}-{pipeline}", stage or None, last)
        cmp = compare_runs(client, list(run_ids), metric or None)
    except LookupError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(cmp.to_text())
    out = plot or root / "results" / "compare" / f"{run_ids[0][:12]}.png"
    plot_comparison(cmp, out)
    typer.echo(f"\nplot: {out}")
