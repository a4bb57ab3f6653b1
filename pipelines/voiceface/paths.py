"""Every file the voice-face pipeline reads or writes, in one place (dvc.yaml mirrors these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avmatch.core.config import Params


@dataclass(frozen=True)
class VoicefacePaths:
    root: Path
    corpus: Path

    @classmethod
    def from_params(cls, params: Params, root: Path) -> "VoicefacePaths":
        corpus = Path(params.voiceface.corpus.root).expanduser()
        return cls(root=root, corpus=corpus if corpus.is_absolute() else root / corpus)

    @property
    def data(self) -> Path:
        return self.root / "data" / "voiceface"

    # the corpus folder (agreed layout): identities.parquet, tracks.parquet, media or experts/, optional evals/
    @property
    def corpus_identities(self) -> Path:
        return self.corpus / "identities.parquet"

    @property
    def corpus_tracks(self) -> Path:
        return self.corpus / "tracks.parquet"

    @property
    def corpus_experts(self) -> Path:
        return self.corpus / "experts"

    @property
    def corpus_evals(self) -> Path:
        return self.corpus / "evals"

    # ingest: the metadata cache and the evaluation lists
    @property
    def meta(self) -> Path:
        return self.data / "meta"

    @property
    def identities(self) -> Path:
        return self.meta / "identities.parquet"

    @property
    def tracks(self) -> Path:
        return self.meta / "tracks.parquet"

    @property
    def ingest_summary(self) -> Path:
        return self.meta / "summary.json"

    @property
    def evals(self) -> Path:
        return self.data / "evals"

    # experts: one Parquet per expert + missing.parquet
    @property
    def experts(self) -> Path:
        return self.data / "experts"

    # train
    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "voiceface"

    def model_file(self, name: str) -> Path:
        return self.model_dir / f"{name}.pt"

    @property
    def model(self) -> Path:
        """The configured model (registered after evaluate)."""
        return self.model_file("main")

    @property
    def checkpoints(self) -> Path:
        return self.root / "models" / "voiceface_checkpoints"

    # extract
    @property
    def embeddings(self) -> Path:
        return self.data / "embeddings"

    def embedding_dir(self, model: str, modality: str) -> Path:
        return self.embeddings / model / modality

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots" / "voiceface"
