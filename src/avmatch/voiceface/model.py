"""Voice and face encoders over expert embeddings (EFT, ICME 2023) and the two baselines they are compared with.

A voice track and a face track are each described by several pretrained "expert" embeddings of different
sizes (names start with `v_` / `f_`). Three ways to turn them into one unit vector per track:

- `fusion` (EFT): per expert dropout + linear to `d`; the projected experts are the tokens of a transformer
  encoder (post-norm, `layers` layers, `heads` heads, feed-forward width `feedforward`) that is SHARED by
  the voice and the face encoder, as in EFT where one `transformer_encoder` serves both modalities; the
  output is the mean of the tokens of the experts present, L2-normalised. A track that lacks an expert
  (missing.parquet) has that token masked (key-padding mask) and left out of the mean, so missing
  experts are neither zeros nor guesses.
- `single`: one expert per modality through dropout + a two-layer MLP (the "best single expert" baseline).
- `concat`: the experts concatenated (a missing expert contributes zeros) through the same MLP.

Every input vector is standardised with the training tracks' per-expert mean and overall scale (kept in
the model as buffers, so a saved pair carries its own normalisation; experts from different networks have
very different scales). `VoiceFacePair` holds both modalities' encoders; `save_pair` / `load_pair` write
and read it with its meta (expert names and sizes, whether it was trained on the simulated cohort, the
params it was trained with).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from avmatch.voiceface.vectors import modality_of  # noqa: F401  (re-exported: part of this module's API)

FORMAT = "avmatch-voiceface-pair-v1"
KINDS = ("fusion", "single", "concat")
MODALITIES = ("voice", "face")


class _Standardise(nn.Module):
    """Per-expert input standardisation: (x - mean) / scale, with one scale per expert (the root mean
    square of the centred training vectors), so an expert's geometry is kept while its size is fixed."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    def fit(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        mean = x.mean(0)
        scale = float(np.sqrt(((x - mean) ** 2).sum(1).mean()) + 1e-6)
        self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.scale.fill_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class _Encoder(nn.Module):
    """What the three kinds share: the expert list and per-expert standardisation."""

    def __init__(self, experts: list[tuple[str, int]]):
        super().__init__()
        if not experts:
            raise ValueError("an encoder needs at least one expert")
        self.experts = [(str(n), int(d)) for n, d in experts]
        self.norms = nn.ModuleList([_Standardise(d) for _, d in self.experts])

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.experts]

    def standardised(self, x: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return [norm(x[n].float()) for norm, (n, _) in zip(self.norms, self.experts)]

    def fit_normalisation(self, vectors: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]) -> None:
        for norm, (n, _) in zip(self.norms, self.experts):
            norm.fit(np.asarray(vectors[n])[np.asarray(present[n], bool)])


class FusionEncoder(_Encoder):
    """EFT's encoder of one modality: experts -> tokens -> (shared) transformer -> masked mean -> unit vector.

    `transformer`: pass the same `nn.TransformerEncoder` to the voice and the face encoder to share it (EFT);
    None builds a private one."""

    def __init__(self, experts: list[tuple[str, int]], d: int = 512, heads: int = 4, layers: int = 1,
                 dropout: float = 0.5, feedforward: int = 100, transformer: nn.Module | None = None):
        super().__init__(experts)
        self.project = nn.ModuleList([nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, d)) for _, dim in self.experts])
        if transformer is None:
            transformer = make_transformer(d, heads, layers, dropout, feedforward)
        self.transformer = transformer

    def forward(self, x: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack([p(v) for p, v in zip(self.project, self.standardised(x))], 1)  # [n, E, d]
        mask = torch.stack([present[n].bool() for n in self.names], 1)  # [n, E] True = present
        none = ~mask.any(1)
        # a track without any expert would make every attention row empty (NaN): it attends to all
        # (zero) tokens instead and its output is set to zero below
        pad = ~(mask | none[:, None])
        h = self.transformer(tokens, src_key_padding_mask=pad if pad.any() else None)
        w = mask.float().unsqueeze(-1)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
        return F.normalize(pooled, dim=1) * (~none).float().unsqueeze(1)


class MlpEncoder(_Encoder):
    """`single` (one expert) and `concat` (several, a missing one as zeros): dropout + Linear-GELU-Linear."""

    def __init__(self, experts: list[tuple[str, int]], d: int = 512, dropout: float = 0.5, hidden: int = 512):
        super().__init__(experts)
        in_dim = sum(dim for _, dim in self.experts)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [v * present[n].float().unsqueeze(1) for v, n in zip(self.standardised(x), self.names)]
        any_present = torch.stack([present[n].bool() for n in self.names], 1).any(1)
        return F.normalize(self.net(torch.cat(parts, 1)), dim=1) * any_present.float().unsqueeze(1)


def make_transformer(d: int, heads: int, layers: int, dropout: float, feedforward: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, feedforward, dropout, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class VoiceFacePair(nn.Module):
    """The voice encoder and the face encoder of one trained model, plus what produced them.

    `config`: kind, d, heads, layers, dropout, feedforward, hidden and the (name, dim) experts of each
    modality; `meta`: free-form (simulated flag, params, training summary)."""

    def __init__(self, config: Mapping[str, Any], meta: Mapping[str, Any] | None = None):
        super().__init__()
        c = dict(config)
        kind = c.get("kind", "fusion")
        if kind not in KINDS:
            raise ValueError(f"model kind {kind!r}: use one of {KINDS}")
        c["voice_experts"] = [(str(n), int(d)) for n, d in c["voice_experts"]]
        c["face_experts"] = [(str(n), int(d)) for n, d in c["face_experts"]]
        for modality in MODALITIES:
            for n, _ in c[f"{modality}_experts"]:
                if modality_of(n) != modality:
                    raise ValueError(f"expert {n!r} is not a {modality} expert")
        if kind == "single" and (len(c["voice_experts"]) != 1 or len(c["face_experts"]) != 1):
            raise ValueError("a single-expert model takes exactly one voice and one face expert")
        for key, default in (("d", 512), ("heads", 4), ("layers", 1), ("dropout", 0.5), ("feedforward", 100),
                             ("hidden", 512)):
            c.setdefault(key, default)
        c["kind"] = kind
        self.config = c
        self.meta: dict[str, Any] = dict(meta or {})
        if kind == "fusion":
            shared = make_transformer(c["d"], c["heads"], c["layers"], c["dropout"], c["feedforward"])
            self.voice = FusionEncoder(c["voice_experts"], c["d"], dropout=c["dropout"], transformer=shared)
            self.face = FusionEncoder(c["face_experts"], c["d"], dropout=c["dropout"], transformer=shared)
        else:
            self.voice = MlpEncoder(c["voice_experts"], c["d"], c["dropout"], c["hidden"])
            self.face = MlpEncoder(c["face_experts"], c["d"], c["dropout"], c["hidden"])

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def voice_experts(self) -> list[str]:
        return [n for n, _ in self.config["voice_experts"]]

    @property
    def face_experts(self) -> list[str]:
        return [n for n, _ in self.config["face_experts"]]

    @property
    def simulated(self) -> bool:
        return bool(self.meta.get("simulated", False))

    def encoder(self, modality: str) -> _Encoder:
        if modality not in MODALITIES:
            raise ValueError(f"modality {modality!r}: use 'voice' or 'face'")
        return self.voice if modality == "voice" else self.face

    def fit_normalisation(self, modality: str, vectors: Mapping[str, np.ndarray],
                          present: Mapping[str, np.ndarray]) -> None:
        self.encoder(modality).fit_normalisation(vectors, present)

    @torch.no_grad()
    def embed(self, modality: str, vectors: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None = None,
              *, batch_size: int = 1024) -> np.ndarray:
        """[n, d] unit rows (all-zero for a track with none of the experts). `vectors`: expert -> (n, dim);
        `present`: expert -> (n,) bool (None: all present). Rows of a missing expert may hold anything."""
        enc = self.encoder(modality)
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            n = _rows(vectors, enc.names)
            pres = {e: (np.ones(n, bool) if present is None or e not in present else np.asarray(present[e], bool))
                    for e in enc.names}
            out = []
            for s in range(0, n, batch_size):
                x = {e: torch.from_numpy(np.asarray(vectors[e][s:s + batch_size], np.float32)).to(device)
                     for e in enc.names}
                p = {e: torch.from_numpy(pres[e][s:s + batch_size]).to(device) for e in enc.names}
                out.append(enc(x, p).cpu().numpy())
            return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.config["d"]), np.float32)
        finally:
            self.train(was_training)


def _rows(vectors: Mapping[str, np.ndarray], names: list[str]) -> int:
    missing = [n for n in names if n not in vectors]
    if missing:
        raise KeyError(f"no vectors for expert(s) {missing}; the model needs {names}")
    counts = {n: len(vectors[n]) for n in names}
    if len(set(counts.values())) != 1:
        raise ValueError(f"experts have different row counts: {counts}")
    return next(iter(counts.values()))


def save_pair(path: str | Path, pair: VoiceFacePair) -> None:
    """Atomic write (temp name + rename): a killed run never leaves half a model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu() for k, v in pair.state_dict().items()}
    torch.save({"format": FORMAT, "config": pair.config, "meta": _plain(pair.meta), "state": state}, tmp)
    os.replace(tmp, path)


def load_pair(path: str | Path, device: str | torch.device = "cpu") -> VoiceFacePair:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path}: not a voiceface model (format {ck.get('format') if isinstance(ck, dict) else None!r})")
    pair = VoiceFacePair(ck["config"], ck.get("meta") or {})
    pair.load_state_dict(ck["state"])
    return pair.to(device).eval()


def _plain(x: Any) -> Any:
    """meta as plain containers, so `torch.load(weights_only=True)` reads it back."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def fill_unembedded(tracks: list[str], emb: np.ndarray) -> tuple[np.ndarray, int]:
    """Give each all-zero row (a track none of the model's experts could describe) a fixed pseudo-random unit
    vector seeded by its track id: a chance-level guess that the metrics can score (a zero vector has no cosine),
    the same on every run. Returns (embeddings, rows filled); callers report the count."""
    import zlib

    zero = ~np.abs(emb).any(1)
    out = emb.copy()
    for i in np.flatnonzero(zero):
        v = np.random.default_rng(zlib.crc32(tracks[i].encode())).normal(size=emb.shape[1])
        out[i] = v / np.linalg.norm(v)
    return out.astype(np.float32), int(zero.sum())
