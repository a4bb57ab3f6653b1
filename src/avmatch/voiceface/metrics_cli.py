"""`avmatch metrics voiceface`: score any voice and face embeddings on evaluation lists with EFT's metrics,
so embeddings from another system (or EFT's own) can be compared with ours on the same lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer


class EmbeddingFileError(ValueError):
    """An embeddings file is missing or malformed; the message names the file."""


def read_embeddings(path: Path | str) -> dict[str, np.ndarray]:
    """track -> vector (float32) from a Parquet file with columns track, vector (one row per track)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise EmbeddingFileError(f"{path}: embeddings file does not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise EmbeddingFileError(f"{path}: not a readable Parquet file: {exc}") from None
    if not {"track", "vector"} <= set(df.columns):
        raise EmbeddingFileError(f"{path}: needs columns track, vector; has {list(df.columns)}")
    if df.empty:
        raise EmbeddingFileError(f"{path}: no embeddings")
    dup = df["track"][df["track"].duplicated()]
    if len(dup):
        raise EmbeddingFileError(f"{path}: track {dup.iloc[0]!r} appears more than once")
    out: dict[str, np.ndarray] = {}
    dim = None
    for track, vec in zip(df["track"].astype(str), df["vector"]):
        try:
            v = np.asarray(vec, dtype=np.float32)
        except (TypeError, ValueError):
            raise EmbeddingFileError(f"{path}: vector of track {track!r} is not numeric") from None
        if v.ndim != 1 or v.size == 0:
            raise EmbeddingFileError(f"{path}: vector of track {track!r} is not a non-empty 1-d list")
        if dim is None:
            dim = v.size
        elif v.size != dim:
            raise EmbeddingFileError(f"{path}: inconsistent vector dimensions: track {track!r} has {v.size}, "
                                     f"the first track has {dim}")
        if not np.isfinite(v).all():
            raise EmbeddingFileError(f"{path}: vector of track {track!r} has NaN or infinite values")
        out[track] = v
    return out


def format_table(m: dict) -> str:
    """The metrics as aligned lines (percent metrics with 2 decimals, 1:N as fractions)."""
    ci = m.get("ci", {})
    lines = []
    for k, v in m.items():
        if k == "ci":
            continue
        if isinstance(v, dict):
            for n, x in v.items():
                extra = f"  [{ci[k][n][0]:.3f}, {ci[k][n][1]:.3f}]" if k in ci and n in ci[k] else ""
                lines.append(f"{k + ' N=' + str(n):14s} {x:7.3f}{extra}")
        else:
            extra = f"  [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" if k in ci else ""
            lines.append(f"{k:14s} {v:7.2f}{extra}")
    return "\n".join(lines)


def voiceface(
    evals: Path = typer.Option(..., "--evals", help="folder of evaluation lists (<name>.parquet; EFT <name>.pkl "
                                                    "only with --allow-pickle)"),
    voice: Path = typer.Option(..., "--voice", help="voice embeddings, Parquet with columns track, vector"),
    face: Path = typer.Option(..., "--face", help="face embeddings, Parquet with columns track, vector"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line"),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="bootstrap resamples for 95 % intervals"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="also read EFT's pickled lists in --evals (unpickling can run code)"),
) -> None:
    """Voice–face association metrics as EFT reports them: verification AUC (U/G/N/GN), 1:2 and 1:N matching,
    retrieval mAP (percent; 1:N as fractions)."""
    from avmatch.core.progress import setup_logging
    from avmatch.voiceface.evals import EvalListError, read_eval_lists
    from avmatch.voiceface.metrics import MissingEmbeddings, evaluate

    setup_logging()
    try:
        lists = read_eval_lists(evals, allow_pickle=allow_pickle)
        m = evaluate(read_embeddings(voice), read_embeddings(face), lists, bootstrap=bootstrap, seed=seed)
    except (EvalListError, EmbeddingFileError, MissingEmbeddings, FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(m) if as_json else format_table(m))


def register_metrics(metrics_app: typer.Typer) -> None:
    """Add `voiceface` to the `avmatch metrics` group."""
    metrics_app.command("voiceface")(voiceface)
