"""The `vmr` section of params.yaml: corpus, decoding, per-second features, encoders, training, evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from avmatch.core.config import MAX_MINUTES_HELP, StrictModel

VIDEO_FAMILIES = ("colour", "motion", "cuts")
MUSIC_FAMILIES = ("timbre", "chroma", "contrast", "rhythm")


class VmrCorpusParams(StrictModel):
    size: Literal["tiny", "demo", "large"] = "demo"
    seed: int = 11
    root: str = "data/vmr/corpus"
    include_bad_files: bool = Field(True, description="add an empty, a garbage and an audio-only file to the test "
                                    "videos (robustness demo; reported, never paired)")
    workers: int = Field(2, ge=1, description="processes that edit and encode music videos")


class VmrFramesParams(StrictModel):
    fps: float = Field(8.0, gt=1.0, le=30.0, description="frames per second decoded for the video features "
                       "(cuts and motion need more than 1 fps)")
    size: int = Field(64, ge=16, le=256, description="cached frames are size x size RGB")
    workers: int = Field(2, ge=1)


class VmrAudioParams(StrictModel):
    sample_rate: int = Field(16000, ge=8000, le=48000)
    workers: int = Field(2, ge=1)


class VmrFeaturesParams(StrictModel):
    hop: int = Field(256, ge=64, le=2048, description="librosa hop in samples (16 ms at 16 kHz)")
    window_s: int = Field(10, ge=2, description="seconds per sequence the encoders see (clips are cut or padded "
                          "to it; longer user videos are scanned in windows)")
    drop_video: list[str] = Field([], description=f"video feature families left out (ablation): {VIDEO_FAMILIES}")
    drop_music: list[str] = Field([], description=f"music feature families left out (ablation): {MUSIC_FAMILIES}")
    workers: int = Field(2, ge=1)

    @field_validator("drop_video")
    @classmethod
    def _video(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(VIDEO_FAMILIES))
        if bad or len(set(v)) == len(VIDEO_FAMILIES):
            raise ValueError(f"drop_video: unknown {bad} or every family dropped; families: {VIDEO_FAMILIES}")
        return v

    @field_validator("drop_music")
    @classmethod
    def _music(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(MUSIC_FAMILIES))
        if bad or len(set(v)) == len(MUSIC_FAMILIES):
            raise ValueError(f"drop_music: unknown {bad} or every family dropped; families: {MUSIC_FAMILIES}")
        return v


class VmrModelParams(StrictModel):
    kind: Literal["stats", "sequence", "both"] = Field(
        "both", description="stats: VM-NET two-branch MLP on track statistics; sequence: OF-VM-Net-style "
        "transformer over per-second features; both: the two embeddings concatenated")
    dim: int = Field(64, ge=8, le=512, description="shared embedding size")
    hidden: int = Field(256, ge=16)
    d_model: int = Field(64, ge=16, description="transformer width")
    layers: int = Field(2, ge=1, le=6)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    curve_channels: int = Field(8, ge=0, le=32, description="learned per-second activity curves, standardised "
                                "over time, appended to the sequence embedding (0 = none)")
    curve_substeps: int = Field(1, ge=1, le=16, description="points per second of each rhythm curve: 1 reads "
                                "them from the second's token; more also reads the sub-second profiles, which "
                                "have 8 bins (a beat is shorter than a second)")


class VmrTrainParams(StrictModel):
    loss: Literal["infonce", "hinge"] = Field("infonce", description="infonce: symmetric InfoNCE; hinge: VM-NET "
                                              "bidirectional top-K ranking loss with the soft intra-modal structure term")
    batch_size: int = Field(64, ge=4)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    temperature: float = Field(0.07, gt=0)
    margin: float = Field(0.2, ge=0)
    top_k: int = Field(10, ge=1, description="hinge: violating negatives averaged per anchor")
    intra_weight: float = Field(0.1, ge=0, description="hinge: weight of the soft intra-modal structure term")
    crop_jitter_s: int = Field(2, ge=0, description="training windows start up to this many seconds into the clip "
                               "(the same seconds of both modalities)")
    splice: float = Field(0.0, ge=0, le=1, description="fraction of each batch made of spliced pairs: from a random "
                          "second on, both modalities continue with another training pair (new pairs from the same "
                          "material; the edit rule is local in time)")
    max_steps: int = Field(300, ge=1, description="the stopping rule; the LR schedule depends on step/max_steps only")
    max_minutes: float | None = Field(None, gt=0, description=MAX_MINUTES_HELP)
    checkpoint_every: int = Field(100, ge=1)
    threads: int = Field(1, ge=0, description="torch threads while training (0: common.num_threads). The encoder "
                         "is small: one thread beats two that contend with the rest of a busy machine")


class VmrExtractParams(StrictModel):
    batch_size: int = Field(256, ge=1)


class VmrEvaluateParams(StrictModel):
    ks: list[int] = [1, 5, 10, 25, 50]
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the test queries for 95% intervals")
    seed: int = 0


class VmrParams(StrictModel):
    corpus: VmrCorpusParams = VmrCorpusParams()
    frames: VmrFramesParams = VmrFramesParams()
    audio: VmrAudioParams = VmrAudioParams()
    features: VmrFeaturesParams = VmrFeaturesParams()
    model: VmrModelParams = VmrModelParams()
    train: VmrTrainParams = VmrTrainParams()
    extract: VmrExtractParams = VmrExtractParams()
    evaluate: VmrEvaluateParams = VmrEvaluateParams()


SECTION = VmrParams
"""Video-to-music retrieval pipeline (VM-NET / OF-VM-Net)."""
