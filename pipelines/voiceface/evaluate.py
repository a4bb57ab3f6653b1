"""The voiceface pipeline's `evaluate` stage (dvc.yaml: voiceface_evaluate)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.voiceface.paths import VoicefacePaths
from pipelines.voiceface.shared import is_simulated, split_data

SIMULATED = "simulated expert embeddings (not real data)"
SCALARS = ("auc", "auc_g", "auc_n", "auc_gn", "ms_v2f", "ms_f2v", "ms_v2f_g", "ms_f2v_g", "map_v2f", "map_f2v")


def test_lists(paths: VoicefacePaths):
    """The test lists only (valid_verification served model selection during training)."""
    from avmatch.voiceface.evals import EvalLists, read_eval_lists

    lists = read_eval_lists(paths.evals)
    names = [n for n in lists.names() if n.startswith("test_")]
    return EvalLists({n: lists[n] for n in names}, {n: lists.source(n) for n in names})


def read_embeddings(paths: VoicefacePaths, model: str, modality: str) -> dict[str, np.ndarray]:
    from avmatch.voiceface.vectors import read_vectors

    out: dict[str, np.ndarray] = {}
    for f in sorted(paths.embedding_dir(model, modality).glob("part-*.parquet")):
        names, mat = read_vectors(f)
        out.update(zip(names, mat))
    return out


def flat_metrics(res: dict, prefix: str = "") -> dict[str, float]:
    """EFT's metrics as MLflow scalars: the percentages as they are, 1N_* as 1N_v2f_2 ... 1N_v2f_10."""
    out = {f"{prefix}{k}": float(res[k]) for k in SCALARS if k in res}
    for k in ("1N_v2f", "1N_f2v"):
        out.update({f"{prefix}{k}_{n}": float(v) for n, v in res.get(k, {}).items()})
    return out


def _labels(paths: VoicefacePaths) -> dict[str, str]:
    """model file stem -> the name the metrics use (main -> its kind, e.g. "fusion")."""
    table = json.loads((paths.model_dir / "variants.json").read_text())
    out = {}
    for name, row in table.items():
        if "file" not in row:
            continue
        stem = row["file"][:-3]
        if name == "main":
            out[stem] = row["kind"]
        elif name.startswith("main_sbc_"):
            out[stem] = f"{row['kind']}_sbc_{row['sbc']}"
        elif name.startswith("single:"):
            out[stem] = "single_best" if table["main"]["kind"] == "single" else "single"
        else:
            out[stem] = name
    return out


def _plots(paths: VoicefacePaths, roc: pd.DataFrame, one_n: pd.DataFrame, simulated: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    note = " (SIMULATED cohort)" if simulated else ""
    lists = [m for m in ("auc", "auc_g", "auc_n", "auc_gn") if m in set(roc["list"])]
    fig, axes = plt.subplots(1, len(lists), figsize=(4 * len(lists), 4), squeeze=False)
    for ax, lst in zip(axes[0], lists):
        for model, g in roc[roc["list"] == lst].groupby("model", sort=False):
            ax.plot(g["fpr"], g["tpr"], label=model)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set_title(f"verification {lst.replace('auc', 'U') if lst == 'auc' else lst[4:].upper()}")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7)
    fig.suptitle(f"Voice-face verification ROC{note}")
    fig.tight_layout()
    fig.savefig(paths.plots / "roc.png", dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, d in zip(axes, ("v2f", "f2v")):
        for model, g in one_n[one_n["direction"] == d].groupby("model", sort=False):
            ax.plot(g["n"], g["accuracy"], marker="o", label=model)
        ax.plot(sorted(set(one_n["n"])), [1 / n for n in sorted(set(one_n["n"]))], color="grey", ls="--", label="chance")
        ax.set_title(f"1:N matching {d}")
        ax.set_xlabel("N")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.suptitle(f"Voice-face 1:N matching{note}")
    fig.tight_layout()
    fig.savefig(paths.plots / "one_to_n.png", dpi=90)
    plt.close(fig)


def evaluate(params: Params, paths: VoicefacePaths, tracker: StageTracker) -> dict:
    """EFT's metrics (verification AUC U/G/N/GN, 1:2 and 1:N matching, retrieval mAP) with bootstrap 95 %
    intervals for the configured model and every model it is compared with, the SBC on/off comparison, ROC and
    1:N plots. On the simulated cohort every output says so."""
    from avmatch.voiceface.metrics import evaluate as eft_metrics
    from avmatch.voiceface.metrics import paired_auc_differences, roc_points

    ep = params.voiceface.evaluate
    lists = test_lists(paths)
    simulated = is_simulated(paths)
    labels = _labels(paths)
    full: dict[str, dict] = {}
    embeddings: dict[str, tuple[dict, dict]] = {}
    roc_rows, one_rows = [], []
    for stem, label in labels.items():
        voice, face = read_embeddings(paths, stem, "voice"), read_embeddings(paths, stem, "face")
        embeddings[label] = (voice, face)
        res = eft_metrics(voice, face, lists, bootstrap=ep.bootstrap, seed=ep.seed)
        full[label] = res
        for lst, pts in roc_points(voice, face, lists).items():
            roc_rows += [{"model": label, "list": lst, "fpr": a, "tpr": b} for a, b in zip(pts["fpr"], pts["tpr"])]
        for d in ("v2f", "f2v"):
            one_rows += [{"model": label, "direction": d, "n": int(n), "accuracy": float(v)}
                         for n, v in res.get(f"1N_{d}", {}).items()]
    main = labels["main"]
    table = json.loads((paths.model_dir / "variants.json").read_text())
    single_name = next((n for n, r in table.items() if r.get("file") == "single.pt"), None)
    metrics: dict = {"corpus": SIMULATED if simulated else str(params.voiceface.corpus.root), "model": main,
                     "sbc": table["main"]["sbc"], **{k: v for k, v in full[main].items()},
                     "variants": {k: {m: v for m, v in r.items() if m != "ci"} for k, r in full.items()}}
    if single_name:
        metrics["best_single"] = single_name.split(":", 1)[1]
    # the configured model minus each other model, AUC on the same resampled pairs (paired bootstrap)
    metrics["paired_differences"] = {
        label: paired_auc_differences(embeddings[main], embeddings[label], lists, bootstrap=ep.bootstrap,
                                      seed=ep.seed)
        for label in full if label != main}
    ablation = next((labels[s] for s in labels if s.startswith("main_sbc_")), None)
    if ablation:
        on, off = (main, ablation) if table["main"]["sbc"] != "off" else (ablation, main)
        metrics["sbc_comparison"] = {"noisy_tracks": json.loads(paths.ingest_summary.read_text()).get("noisy_tracks"),
                                     "on": {k: full[on][k] for k in SCALARS if k in full[on]},
                                     "off": {k: full[off][k] for k in SCALARS if k in full[off]},
                                     "on_model": on, "off_model": off}
    write_json(paths.metrics / "voiceface.json", metrics)
    write_json(paths.metrics / "voiceface_compare.json",
               {"corpus": metrics["corpus"], "lists": lists.counts(), **full})
    paths.plots.mkdir(parents=True, exist_ok=True)
    roc, one_n = pd.DataFrame(roc_rows), pd.DataFrame(one_rows)
    write_csv(paths.plots / "roc.csv", roc)
    write_csv(paths.plots / "one_to_n.csv", one_n)
    _plots(paths, roc, one_n, simulated)
    tracker.set_tags({"corpus": metrics["corpus"]})
    tracker.log_dict(metrics, "voiceface.json")
    for f in ("roc.png", "one_to_n.png", "roc.csv", "one_to_n.csv"):
        tracker.log_artifact(paths.plots / f, "plots")
    summary = {"simulated": int(simulated), **flat_metrics(full[main])}
    for label, rows in metrics["paired_differences"].items():
        summary.update({f"{main}_minus_{label}_{m}": float(r["diff"]) for m, r in rows.items()})
    for label, res in full.items():
        if label != main:
            summary.update(flat_metrics(res, f"{label}_"))
    return summary


def reevaluate(params: Params, paths: VoicefacePaths, tracker: StageTracker, model_file) -> dict:
    """A given (registered) model on the current test lists (scheduled runs): EFT's metrics, flat."""
    from avmatch.voiceface.metrics import evaluate as eft_metrics
    from avmatch.voiceface.model import fill_unembedded, load_pair

    pair = load_pair(model_file)
    data = split_data(paths, "test", pair.voice_experts, pair.face_experts)
    voice = dict(zip(data.voice_tracks, fill_unembedded(data.voice_tracks, pair.embed(
        "voice", data.voice, data.voice_present))[0]))
    face = dict(zip(data.face_tracks, fill_unembedded(data.face_tracks, pair.embed(
        "face", data.face, data.face_present))[0]))
    out = flat_metrics(eft_metrics(voice, face, test_lists(paths)))
    tracker.log_dict(out, "reevaluate_metrics.json")
    return out
