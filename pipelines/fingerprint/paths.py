"""Every file the fingerprint pipeline reads or writes, in one place (dvc.yaml mirrors these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avmatch.core.config import Params

SETS = ("refs", "train", "queries", "noise_train")
SET_DIRS = {"refs": "refs", "train": "train", "queries": "queries", "noise_train": "noise/train"}


@dataclass(frozen=True)
class FingerprintPaths:
    root: Path
    corpus: Path

    @classmethod
    def from_params(cls, params: Params, root: Path) -> "FingerprintPaths":
        corpus = Path(params.fingerprint.corpus.root)
        return cls(root=root, corpus=corpus if corpus.is_absolute() else root / corpus)

    @property
    def data(self) -> Path:
        return self.root / "data" / "fingerprint"

    @property
    def ground_truth(self) -> Path:
        return self.corpus / "ground_truth.csv"

    def set_dir(self, name: str) -> Path:
        return self.corpus / SET_DIRS[name]

    def manifest(self, name: str) -> Path:
        return self.data / "manifest" / f"{name}.parquet"

    @property
    def pcm_cache(self) -> Path:
        return self.data / "pcm"

    def items(self, name: str) -> Path:
        return self.data / "features" / f"{name}.parquet"

    @property
    def bad_files(self) -> Path:
        return self.data / "features" / "bad_files.csv"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "fingerprint"

    @property
    def encoder(self) -> Path:
        return self.model_dir / "encoder.pt"

    @property
    def checkpoints(self) -> Path:
        return self.root / "models" / "fingerprint_checkpoints"

    def shards(self, name: str) -> Path:
        return self.data / "shards" / name

    @property
    def export(self) -> Path:
        return self.data / "export"

    @property
    def index(self) -> Path:
        return self.data / "index"

    @property
    def results(self) -> Path:
        return self.root / "results" / "fingerprint"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots" / "fingerprint"
