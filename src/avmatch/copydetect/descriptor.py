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

Post-processing (session 13, docs/benchmarks.md), both off unless the spec says so:

- ``mirror``: each part is averaged with the same part of the mirrored frame (renormalised) before the
  concatenation: still one descriptor per frame (test-time augmentation), invariant to horizontal flips.
- ``whiten_power`` > 0: PCA whitening learnt on training footage (`Whitening`: the pipeline's references and
  noise set, fitted by the extract stage; never queries): centred on their mean, rotated onto their principal
  axes, component i scaled by (λ_i + whiten_shrink · mean λ)^(-whiten_power / 2), unit length (Jégou & Chum
  2012: whitening with shrinkage of the dominant, shared directions). Needs the fitted `Whitening`, which a
  database keeps beside its encoder (`whitening.npz`).

A database records the kind, weight and post-processing it was built with (`DescriptorSpec.record`) and refuses
references or queries described another way (`check_same`): their similarities would mean nothing.
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
    mirror: bool = False        # each part averaged with the mirrored frame's
    whiten_power: float = 0.0   # PCA whitening exponent (0: off; needs a fitted `Whitening`)
    whiten_shrink: float = 0.1  # shrinkage of the whitening, in mean eigenvalues

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown copy detection descriptor kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.kind == "trained_dct" and not self.dct_weight > 0:
            raise ValueError(f"dct_weight must be > 0 for trained_dct, got {self.dct_weight}")
        if not 0 <= self.whiten_power <= 1 or self.whiten_shrink < 0:
            raise ValueError(f"whiten_power must be in [0, 1] and whiten_shrink >= 0, got {self.whiten_power}, "
                             f"{self.whiten_shrink}")

    @property
    def whitens(self) -> bool:
        return self.whiten_power > 0

    @classmethod
    def from_params(cls, descriptor) -> "DescriptorSpec":
        """The pipeline's descriptor from params.yaml's copydetect.descriptor (a `CdDescriptorParams`)."""
        return cls(descriptor.kind, descriptor.dct_weight, descriptor.mirror, descriptor.whiten_power,
                   descriptor.whiten_shrink)

    @classmethod
    def from_record(cls, record: dict | None) -> "DescriptorSpec":
        """The spec a database's settings record; a database without one predates the option: trained."""
        return cls(**record) if record else cls("trained")

    def record(self) -> dict:
        """What a database keeps (the weight only where it means something, so equal specs compare equal; the
        post-processing only when on, so a database older than it keeps its record)."""
        out = {"kind": self.kind, "dct_weight": float(self.dct_weight) if self.kind == "trained_dct" else None}
        if self.mirror:
            out["mirror"] = True
        if self.whitens:
            out.update(whiten_power=float(self.whiten_power), whiten_shrink=float(self.whiten_shrink))
        return out

    @property
    def label(self) -> str:
        extra = [f"dct_weight {self.dct_weight:g}"] if self.kind == "trained_dct" else []
        extra += ["mirror-averaged"] * self.mirror
        extra += [f"whitened (power {self.whiten_power:g}, shrink {self.whiten_shrink:g})"] * self.whitens
        return self.kind + (f" ({', '.join(extra)})" if extra else "")

    def unwhitened(self) -> "DescriptorSpec":
        """The same descriptor before its whitening (what the extract stage's shards hold and the fit sees)."""
        return DescriptorSpec(self.kind, self.dct_weight, self.mirror)

    def dim(self, encoder_dim: int) -> int:
        """Size of the descriptor for an encoder of `encoder_dim`."""
        return int(encoder_dim) + (DCT_COLOUR_DIM if self.kind == "trained_dct" else 0)

    def shard_key(self, model_hash: str) -> str:
        """Identifies descriptors in a shard store: the encoder file's hash and, beyond `trained`, the kind."""
        key = model_hash if self.kind == "trained" else f"{model_hash}+{self.kind}:{self.dct_weight:g}"
        return key + ("+mirror" if self.mirror else "")   # shards hold the descriptors before whitening


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


WHITENING_FORMAT = "avmatch-copydetect-whitening-v1"


class WhiteningMissing(FileNotFoundError):
    """A whitened descriptor asked for without its fitted whitening."""


@dataclass(frozen=True)
class Whitening:
    """PCA whitening of descriptors: y = unit((x − mean) @ projection), projection = the principal axes of the
    training descriptors, column i scaled by (λ_i + shrink · mean λ)^(-power / 2). `encoder_hash` and `spec`
    (the descriptor record it was fitted for) say what it belongs to."""

    mean: np.ndarray
    projection: np.ndarray
    encoder_hash: str
    spec: dict

    @classmethod
    def fit(cls, x: np.ndarray, spec: DescriptorSpec, encoder_hash: str) -> "Whitening":
        """Fitted on training descriptors `x` [n, d] (before whitening) for `spec` (its power and shrink)."""
        x = np.asarray(x, np.float64)
        if len(x) < 2 or (spec.whiten_shrink == 0 and len(x) <= x.shape[1]):
            raise ValueError(f"whitening {x.shape[1]}-d descriptors without shrinkage needs more than {x.shape[1]} "
                             f"training frames, got {len(x)}")
        mean = x.mean(0)
        ev, vec = np.linalg.eigh(np.cov((x - mean).T))
        order = np.argsort(ev)[::-1]
        ev, vec = np.maximum(ev[order], 0.0), vec[:, order]
        scale = (ev + spec.whiten_shrink * ev.mean() + 1e-12) ** (-spec.whiten_power / 2)
        return cls(mean.astype(np.float32), (vec * scale).astype(np.float32), encoder_hash, spec.record())

    def apply(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.asarray(x, np.float32)
        return _unit_rows((np.asarray(x, np.float32) - self.mean) @ self.projection)

    def save(self, path: str | Path) -> Path:
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, format=WHITENING_FORMAT, mean=self.mean, projection=self.projection,
                 encoder_hash=self.encoder_hash, spec=json.dumps(self.spec, sort_keys=True))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Whitening":
        import json

        try:
            with np.load(Path(path), allow_pickle=False) as z:
                if str(z["format"]) != WHITENING_FORMAT:
                    raise ValueError("unknown format")
                return cls(z["mean"], z["projection"], str(z["encoder_hash"]), json.loads(str(z["spec"])))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a copy detection whitening file ({exc})") from None

    def check(self, where: str | Path, spec: DescriptorSpec, encoder_hash: str | None = None) -> "Whitening":
        """self, or DescriptorMismatch when it was fitted for another descriptor or encoder."""
        if self.spec != spec.record() or (encoder_hash is not None and encoder_hash != self.encoder_hash):
            raise DescriptorMismatch(f"{where}: the whitening was fitted for the "
                                     f"{DescriptorSpec.from_record(self.spec).label} descriptor of encoder "
                                     f"{self.encoder_hash[:12]}, not {spec.label} of {str(encoder_hash)[:12]}")
        return self


def whiten_sets(spec: DescriptorSpec, encoder_hash: str, sets: dict, train=("refs", "noise")) -> tuple:
    """(the `Whitening` fitted on the `train` sets' descriptors, every set whitened) for a whitened `spec`;
    `sets`: name -> list of `VideoFeatures` described with `spec.unwhitened()`. (None, sets) when `spec`
    does not whiten. The extract stage and the re-evaluation of a registered encoder both fit here."""
    from avmatch.copydetect.metrics import VideoFeatures

    if not spec.whitens:
        return None, sets
    w = Whitening.fit(np.concatenate([v.features for name in train for v in sets[name]]), spec, encoder_hash)
    return w, {name: [VideoFeatures(v.video_id, v.timestamps, w.apply(v.features)) for v in vs]
               for name, vs in sets.items()}


def mirror_frames(frames: np.ndarray) -> np.ndarray:
    """The frames [n, h, w, 3] flipped left-right."""
    return np.ascontiguousarray(frames[:, :, ::-1])


def frame_describer(spec: DescriptorSpec, model, device="cpu", batch_size: int = 128,
                    whitening: Whitening | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frames [n, h, w, 3] -> float32 [n, spec.dim(model.dim)] unit descriptors of this kind, with the
    loaded encoder `model` (`avmatch.copydetect.model.load_frame_encoder`), mirror-averaged when `spec.mirror`,
    whitened with `whitening` when `spec.whitens` (WhiteningMissing without it; see `DescriptorSpec.unwhitened`
    for the descriptors a whitening is fitted on)."""
    from avmatch.copydetect.dct_colour import dct_colour_descriptors
    from avmatch.copydetect.model import embed_frames

    if spec.whitens and whitening is None:
        raise WhiteningMissing(f"the {spec.label} descriptor needs its fitted whitening (whitening.npz)")

    def parts(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        trained = embed_frames(model, frames, device, batch_size)
        dct = dct_colour_descriptors(frames) if spec.kind == "trained_dct" else None
        return trained, dct

    def describe(frames: np.ndarray) -> np.ndarray:
        trained, dct = parts(frames)
        if spec.mirror and len(frames):
            t2, d2 = parts(mirror_frames(frames))
            trained = _unit_rows(trained + t2)
            dct = None if dct is None else _unit_rows(dct + d2)
        x = trained if dct is None else concatenate(trained, dct, spec.dct_weight)
        return whitening.apply(x) if spec.whitens else x

    return describe
