"""Every file the versions pipeline reads or writes, in one place (dvc.yaml mirrors these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avmatch.core.config import Params


@dataclass(frozen=True)
class VersionsPaths:
    root: Path
    corpus: Path

    @classmethod
    def from_params(cls, params: Params, root: Path) -> "VersionsPaths":
        corpus = Path(params.versions.corpus.root)
        return cls(root=root, corpus=corpus if corpus.is_absolute() else root / corpus)

    @property
    def data(self) -> Path:
        return self.root / "data" / "versions"

    @property
    def tracks_csv(self) -> Path:
        return self.corpus / "tracks.csv"

    @property
    def manifest(self) -> Path:
        return self.data / "manifest" / "tracks.parquet"

    @property
    def pcm_cache(self) -> Path:
        return self.data / "pcm"

    @property
    def cqt_cache(self) -> Path:
        return self.data / "cqt"

    @property
    def hpcp(self) -> Path:
        """The hpcp stage's Essentia HPCP of each track, <content hash>.npy (versions.baseline.hpcp)."""
        return self.data / "hpcp"

    @property
    def items(self) -> Path:
        return self.data / "features" / "items.parquet"

    @property
    def bad_files(self) -> Path:
        return self.data / "features" / "bad_files.csv"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "versions"

    @property
    def encoder(self) -> Path:
        return self.model_dir / "encoder.pt"

    @property
    def checkpoints(self) -> Path:
        return self.root / "models" / "versions_checkpoints"

    @property
    def shards(self) -> Path:
        return self.data / "shards" / "test"

    @property
    def results(self) -> Path:
        return self.root / "results" / "versions"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots" / "versions"
