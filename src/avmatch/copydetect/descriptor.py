"""The frame descriptor of copy detection, by kind: what the pipeline, its database and `avmatch copydetect
add` / `query` describe frames with (`copydetect.descriptor` in params.yaml).

- ``trained``: the trained encoder's descriptor alone (`avmatch.copydetect.model`).
- ``trained_dct``: the trained descriptor concatenated with the training-free DCT layout + colour histogram
  (`avmatch.copydetect.dct_colour`), ``[t, √w · d] / √(1 + w)`` with ``w = dct_weight``. Both parts are unit
  vectors, so the result is one too and the inner product of two frames is
  ``(cos_trained + w · cos_dct) / (1 + w)``: FAISS search, score normalisation and localisation apply
  unchanged. Why: on footage sources never used in training the trained encoder alone is behind the
  training-free descriptor; the concatenation (w = 0.5 chosen on the unseen collection's val half) is ahead of
  the encoder on all three µAPs there and of the training-free descriptor on matching µAP (level on
  descriptor µAP), and within noise of the encoder on the demo (docs/benchmarks.md, Copy detection, sessions
  9 and 10).

A database records the kind and weight it was built with (`DescriptorSpec.record`) and refuses references
or queries described another way (`check_same`): their similarities would mean nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avmatch.copydetect.dct_colour import DIM as DCT_COLOUR_DIM

KINDS = ("trained", "trained_dct")


class DescriptorMismatch(ValueError):
    """References, noise or queries described with another descriptor than a database's."""


@dataclass(frozen=True)
class DescriptorSpec:
    kind: str = "trained"
    dct_weight: float = 0.5     # only used by trained_dct

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown copy detection descriptor kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.kind == "trained_dct" and not self.dct_weight > 0:
            raise ValueError(f"dct_weight must be > 0 for trained_dct, got {self.dct_weight}")

    @classmethod
    def from_params(cls, descriptor) -> "DescriptorSpec":
        """The pipeline's descriptor from params.yaml's copydetect.descriptor (a `CdDescriptorParams`)."""
        return cls(descriptor.kind, descriptor.dct_weight)

    @classmethod
    def from_record(cls, record: dict | None) -> "DescriptorSpec":
        """The spec a database's settings record; a database without one predates the option: trained."""
        return cls(**record) if record else cls("trained")

    def record(self) -> dict:
        """What a database keeps (the weight only where it means something, so equal specs compare equal)."""
        return {"kind": self.kind, "dct_weight": float(self.dct_weight) if self.kind == "trained_dct" else None}

    @property
    def label(self) -> str:
        return self.kind if self.kind == "trained" else f"{self.kind} (dct_weight {self.dct_weight:g})"

    def dim(self, encoder_dim: int) -> int:
        """Size of the descriptor for an encoder of `encoder_dim`."""
        return int(encoder_dim) + (DCT_COLOUR_DIM if self.kind == "trained_dct" else 0)

    def shard_key(self, model_hash: str) -> str:
        """Identifies descriptors in a shard store: the encoder file's hash and, beyond `trained`, the kind."""
        return model_hash if self.kind == "trained" else f"{model_hash}+{self.kind}:{self.dct_weight:g}"


def check_same(where: str | Path, have: DescriptorSpec, want: DescriptorSpec | None) -> None:
    """DescriptorMismatch when `want` (None: anything) is not the descriptor `where` was built with."""
    if want is not None and want.record() != have.record():
        raise DescriptorMismatch(f"{where} was built with the {have.label} descriptor, not {want.label}; a "
                                 "database keeps one descriptor (omit --descriptor / --dct-weight, or give a new --db)")


def concatenate(trained: np.ndarray, dct: np.ndarray, dct_weight: float) -> np.ndarray:
    """[t, √w · d] / √(1 + w) of unit rows: unit rows whose inner products are (cos_t + w · cos_d) / (1 + w)."""
    return (np.concatenate([trained, np.sqrt(dct_weight) * dct], 1) / np.sqrt(1.0 + dct_weight)).astype(np.float32)


def _unit_rows(part: np.ndarray) -> np.ndarray:
    part = np.asarray(part, np.float32)
    return part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)


def encoder_part(vectors: np.ndarray, encoder_dim: int) -> np.ndarray:
    """The trained encoder's own unit descriptors inside concatenated ones (the first `encoder_dim` columns,
    renormalised): the evaluate stage's "trained encoder alone" row without embedding the frames again."""
    return _unit_rows(vectors[:, :encoder_dim])


def dct_part(vectors: np.ndarray, encoder_dim: int) -> np.ndarray:
    """The DCT/colour unit descriptors inside `trained_dct` ones (the columns after `encoder_dim`,
    renormalised): the evaluate stage's training-free row without decoding and describing the frames again."""
    return _unit_rows(vectors[:, encoder_dim:])


def frame_describer(spec: DescriptorSpec, model, device="cpu", batch_size: int = 128) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frames [n, h, w, 3] -> float32 [n, spec.dim(model.dim)] unit descriptors of this kind, with the
    loaded encoder `model` (`avmatch.copydetect.model.load_frame_encoder`)."""
    from avmatch.copydetect.dct_colour import dct_colour_descriptors
    from avmatch.copydetect.model import embed_frames

    def describe(frames: np.ndarray) -> np.ndarray:
        trained = embed_frames(model, frames, device, batch_size)
        if spec.kind == "trained":
            return trained
        return concatenate(trained, dct_colour_descriptors(frames), spec.dct_weight)

    return describe
