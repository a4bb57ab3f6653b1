"""Every file the video-to-music pipeline reads or writes, in one place (dvc.yaml mirrors these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avmatch.core.config import Params

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VmrPaths:
    root: Path
    corpus: Path

    @classmethod
    def from_params(cls, params: Params, root: Path) -> "VmrPaths":
        corpus = Path(params.vmr.corpus.root).expanduser()
        return cls(root=root, corpus=corpus if corpus.is_absolute() else root / corpus)

    @property
    def data(self) -> Path:
        return self.root / "data" / "vmr"

    def video_dir(self, split: str) -> Path:
        return self.corpus / "videos" / split

    def music_dir(self, split: str) -> Path:
        return self.corpus / "music" / split

    @property
    def pairs(self) -> Path:
        return self.corpus / "pairs.csv"

    def manifest(self, kind: str, split: str) -> Path:
        return self.data / "manifest" / f"{kind}_{split}.parquet"

    @property
    def frame_cache(self) -> Path:
        return self.data / "frame_cache"

    def frames(self, split: str) -> Path:
        return self.data / "frames" / f"videos_{split}.parquet"

    @property
    def bad_files(self) -> Path:
        return self.data / "frames" / "bad_files.csv"

    @property
    def pcm_cache(self) -> Path:
        return self.data / "pcm_cache"

    def audio(self, split: str) -> Path:
        return self.data / "audio" / f"music_{split}.parquet"

    def features(self, kind: str, split: str) -> Path:
        return self.data / "features" / f"{kind}_{split}.npz"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "vmr"

    @property
    def encoder(self) -> Path:
        return self.model_dir / "encoder.pt"

    @property
    def checkpoints(self) -> Path:
        return self.root / "models" / "vmr_checkpoints"

    def embeddings(self, split: str) -> Path:
        return self.data / "embeddings" / f"{split}.npz"

    @property
    def index(self) -> Path:
        return self.data / "index"

    @property
    def results(self) -> Path:
        return self.root / "results" / "vmr"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots" / "vmr"
