"""The voiceface pipeline's `train` stage (dvc.yaml: voiceface_train)."""

from __future__ import annotations

import logging

import pandas as pd

from avmatch.core.config import Params
from avmatch.core.tracking import StageTracker
from pipelines.io import write_csv, write_json
from pipelines.voiceface.paths import VoicefacePaths
from pipelines.voiceface.shared import is_simulated, split_data

log = logging.getLogger(__name__)


def variants(params: Params) -> list[dict]:
    """The models this stage trains besides the single-expert ones (`single_pairs`): name, kind, experts, batch
    construction. The first is the configured one."""
    vp = params.voiceface
    tp = vp.train
    kind = vp.model.kind
    voice = list(vp.experts.voice)
    face = list(vp.experts.face)
    out = [{"name": "main", "kind": kind, "voice": voice, "face": face, "sbc": tp.sbc.mode}]
    if tp.sbc_ablation:
        other = "off" if tp.sbc.mode != "off" else "sbc"
        out.append({"name": f"main_sbc_{other}", "kind": kind, "voice": voice, "face": face, "sbc": other})
    if "concat" in tp.baselines and kind != "concat":
        out.append({"name": "concat", "kind": "concat", "voice": voice, "face": face, "sbc": tp.sbc.mode})
    return out


def single_pairs(voice: list[str], face: list[str], trained: dict[tuple[str, str], float]) -> list[tuple[str, str]]:
    """The next single-expert pairs to train, by coordinate search: first every voice expert with the first face
    expert, then the best of those voice experts with every other face expert ((|V| + |F| - 1) models instead of
    |V| x |F|). `trained`: validation AUC of the pairs trained so far. Empty when the search is done."""
    first = [(v, face[0]) for v in voice]
    if not all(p in trained for p in first):
        return [p for p in first if p not in trained]
    best_voice = max(first, key=lambda p: trained[p])[0]
    return [(best_voice, f) for f in face[1:] if (best_voice, f) not in trained]


def train(params: Params, paths: VoicefacePaths, tracker: StageTracker) -> dict:
    """Train the configured model and, with the same training, what it is compared with: the same model with the
    other batch construction (SBC ablation), the concatenation baseline, and one single-expert model per (voice
    expert, face expert) pair found by `single_pairs`, of which the best on the validation list is kept (single.pt).
    Each model is the step of its best validation AUC (EFT's model selection)."""
    from avmatch.core.device import resolve_device, set_threads
    from avmatch.voiceface.evals import read_eval_lists
    from avmatch.voiceface.model import save_pair
    from avmatch.voiceface.training import model_configs, train_pair

    vp = params.voiceface
    tp = vp.train
    set_threads(tp.threads or params.common.num_threads)
    device = resolve_device(tp.device)
    voice = list(vp.experts.voice)
    face = list(vp.experts.face)
    train_data = split_data(paths, "train", voice, face)
    valid_data = split_data(paths, "valid", voice, face)
    valid_list = read_eval_lists(paths.evals)["valid_verification"]
    dims = train_data.dims()
    simulated = is_simulated(paths)
    meta = {"simulated": simulated, "params": {"model": vp.model.model_dump(mode="json"),
                                                "train": tp.model_dump(mode="json")},
            "corpus": "simulated expert embeddings (not real data)" if simulated else str(paths.corpus)}
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    for old in paths.model_dir.glob("*.pt"):
        old.unlink()
    history, table = [], {}
    best_single: tuple[float, str, object] | None = None
    todo = variants(params)
    singles: dict[tuple[str, str], float] = {}
    while todo:
        var = todo.pop(0)
        name = var["name"]
        cfg = model_configs(var["voice"], var["face"], dims, vp.model, var["kind"])
        ckpt = paths.checkpoints / f"{name.replace(':', '_').replace('+', '__')}.ckpt"
        res = train_pair(cfg, train_data, tp, valid=(valid_data, valid_list), checkpoint=ckpt,
                         meta={**meta, "variant": name}, sbc_mode=var["sbc"], device=device, name=name,
                         log_fn=lambda m, step: tracker.log_metrics(
                             {k.replace(":", "_").replace("+", "__"): v for k, v in m.items()}, step=step))
        log.info("%s: best valid AUC %.2f at step %d of %d (%.0f s)", name, res.best_valid_auc, res.best_step,
                 res.steps, res.seconds)
        history += [{"model": name, **h} for h in res.history]
        table[name] = {"kind": var["kind"], "sbc": var["sbc"], "voice_experts": var["voice"],
                       "face_experts": var["face"], "valid_auc": res.best_valid_auc, "best_step": res.best_step,
                       "steps": res.steps, "seconds": round(res.seconds, 1), **res.batch_stats,
                       "resumed_from_step": -1 if res.resumed_from_step is None else res.resumed_from_step}
        if var["kind"] == "single" and name != "main":
            singles[(var["voice"][0], var["face"][0])] = res.best_valid_auc
            if best_single is None or res.best_valid_auc > best_single[0]:
                best_single = (res.best_valid_auc, name, res.pair.cpu())
        else:
            file = "main" if name == "main" else name
            save_pair(paths.model_file(file), res.pair.cpu())
            table[name]["file"] = f"{file}.pt"
        if not todo and "single" in tp.baselines:
            todo = [{"name": f"single:{v}+{f}", "kind": "single", "voice": [v], "face": [f], "sbc": tp.sbc.mode}
                    for v, f in single_pairs(voice, face, singles)]
    if best_single is not None:
        auc, name, pair = best_single
        pair.meta["variant"] = "single"
        pair.meta["chosen_from"] = {k: v["valid_auc"] for k, v in table.items() if k.startswith("single:")}
        save_pair(paths.model_file("single"), pair)
        table[name]["file"] = "single.pt"
    write_json(paths.model_dir / "variants.json", table)
    write_csv(paths.plots / "train_history.csv", pd.DataFrame(history))
    summary = {"simulated": int(simulated), "max_steps": tp.max_steps, "train_pairs": len(train_data.pairs),
               "models": len(table)}
    for name, row in table.items():
        key = name.replace(":", "_").replace("+", "__")
        summary[f"{key}_valid_auc"] = row["valid_auc"]
        summary[f"{key}_best_step"] = row["best_step"]
    write_json(paths.metrics / "voiceface_train.json", {**summary, "models": table})
    tracker.log_artifact(paths.plots / "train_history.csv", "plots")
    tracker.log_dict(table, "variants.json")
    return summary
