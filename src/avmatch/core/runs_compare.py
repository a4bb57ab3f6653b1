"""Side-by-side comparison of MLflow runs: the params that differ and the metrics, plus a plot.

Reads the same store the pipelines write (and `mlflow ui` shows), so its numbers are the ones in
the MLflow UI; the evaluate runs' metrics are the values DVC tracks in `metrics/*.json`
(flattened with dots), so `dvc exp show` agrees too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Comparison:
    runs: pd.DataFrame      # one row per run: run_id, name, stage, start, status, orchestrator
    params: pd.DataFrame    # rows = params that differ between the runs, columns = run labels
    metrics: pd.DataFrame   # rows = metrics, columns = run labels

    def to_text(self, max_metrics: int = 40) -> str:
        labels = ", ".join(f"{r.label} = {r.run_id} ({r.stage}, {r.start}, {r.orchestrator})"
                           for r in self.runs.itertuples())
        parts = [f"runs: {labels}", "", "params that differ:",
                 self.params.to_string() if len(self.params) else "  (none: the runs used the same params)", "",
                 "metrics:", self.metrics.head(max_metrics).to_string(float_format=lambda v: f"{v:.4f}")
                 if len(self.metrics) else "  (no metrics)"]
        if len(self.metrics) > max_metrics:
            parts.append(f"  ... {len(self.metrics) - max_metrics} more (use --metric to choose)")
        return "\n".join(parts)


def find_runs(client, experiment: str, stage: str | None, last: int) -> list[str]:
    """The newest `last` finished runs of an experiment (optionally one stage), newest first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment '{experiment}' (run a pipeline first)")
    query = "attributes.status = 'FINISHED'" + (f" and tags.stage = '{stage}'" if stage else "")
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=last)
    if not runs:
        raise LookupError(f"no finished runs in '{experiment}'" + (f" for stage '{stage}'" if stage else ""))
    return [r.info.run_id for r in runs]


def compare_runs(client, run_ids: list[str], metric_filter: list[str] | None = None) -> Comparison:
    """Fetch the runs and line up their params (only those that differ) and metrics."""
    if len(run_ids) < 1:
        raise ValueError("give at least one run id")
    rows, params, metrics = [], {}, {}
    for i, run_id in enumerate(run_ids):
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            raise LookupError(f"run {run_id}: not found in the MLflow store ({exc})") from None
        label = f"run{i + 1}"
        rows.append({"label": label, "run_id": run_id, "stage": run.data.tags.get("stage", "?"),
                     "start": pd.Timestamp(run.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
                     "status": run.info.status, "orchestrator": run.data.tags.get("orchestrator", "?")})
        params[label] = run.data.params
        metrics[label] = run.data.metrics
    p = pd.DataFrame(params)
    if len(p.columns) > 1:
        p = p[p.astype(str).nunique(axis=1, dropna=False) > 1]
    m = pd.DataFrame(metrics)
    if metric_filter:
        m = m[[any(f in k for f in metric_filter) for k in m.index]]
    return Comparison(pd.DataFrame(rows), p.sort_index(), m.sort_index())


def plot_comparison(cmp: Comparison, out: Path, max_metrics: int = 12) -> Path:
    """Grouped bars: one group per metric (those the runs share, most different first), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = cmp.metrics.dropna()
    if len(m.columns) > 1:
        m = m.loc[(m.max(axis=1) - m.min(axis=1)).sort_values(ascending=False).index]
    m = m.head(max_metrics)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(m) * max(1, len(m.columns)) ** 0.5 + 2), 4.5))
    if len(m):
        m.plot.bar(ax=ax, width=0.8)
        ax.set_ylabel("value")
        ax.legend([f"{r.label} {r.run_id[:8]}" for r in cmp.runs.itertuples()], fontsize=8)
    else:
        ax.text(0.5, 0.5, "no shared metrics", ha="center")
    ax.set_title("metrics by run (largest differences first)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
