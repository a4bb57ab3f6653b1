"""Every file the copy detection pipeline reads or writes, in one place (dvc.yaml mirrors these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avmatch.core.config import Params

SETS = ("queries", "refs", "noise")


@dataclass(frozen=True)
class CopydetectPaths:
    root: Path
    corpus: Path
    set_dirs: dict
    ground_truth: Path

    @classmethod
    def from_params(cls, params: Params, root: Path) -> "CopydetectPaths":
        cp = params.copydetect.corpus
        corpus = Path(cp.root).expanduser()
        corpus = corpus if corpus.is_absolute() else root / corpus
        dirs = {"queries": corpus / cp.query_dir, "refs": corpus / cp.ref_dir, "noise": corpus / cp.noise_dir}
        return cls(root=root, corpus=corpus, set_dirs=dirs, ground_truth=corpus / cp.ground_truth)

    @property
    def data(self) -> Path:
        return self.root / "data" / "copydetect"

    def set_dir(self, name: str) -> Path:
        return self.set_dirs[name]

    def manifest(self, name: str) -> Path:
        return self.data / "manifest" / f"{name}.parquet"

    @property
    def frame_cache(self) -> Path:
        return self.data / "frame_cache"

    def items(self, name: str) -> Path:
        return self.data / "frames" / f"{name}.parquet"

    @property
    def bad_files(self) -> Path:
        return self.data / "frames" / "bad_files.csv"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "copydetect"

    @property
    def encoder(self) -> Path:
        return self.model_dir / "encoder.pt"

    @property
    def checkpoints(self) -> Path:
        return self.root / "models" / "copydetect_checkpoints"

    def shards(self, name: str) -> Path:
        return self.data / "shards" / name

    def npz(self, name: str) -> Path:
        """The encoder's descriptors of a set (VSC22 npz layout): what the later stages read."""
        return self.data / "descriptors" / f"{name}.npz"

    @property
    def whitening(self) -> Path:
        """The descriptor's PCA whitening (copydetect.descriptor.whiten_power > 0), fitted by the extract stage on
        the references + noise set; inside its descriptors output (absent when the descriptor is not whitened)."""
        return self.data / "descriptors" / "whitening.npz"

    def export(self, name: str) -> Path:
        """The descriptor-track submission of a set ("queries" or "refs"): the descriptors the reported
        descriptor µAP is computed on (normalisation-augmented, one dimension more, when β > 0)."""
        return self.data / "export" / f"{name}.npz"

    @property
    def db(self) -> Path:
        return self.data / "db"

    @property
    def results(self) -> Path:
        return self.root / "results" / "copydetect"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots" / "copydetect"
