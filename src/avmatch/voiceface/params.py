"""The `voiceface` section of params.yaml: cohort, experts, encoder, training (EFT + SBC), evaluation.

The demo corpus is a SIMULATED cohort of expert embeddings (avmatch.voiceface.cohort says how it is
made); `corpus.source: folder` points the pipeline at a real corpus folder in the agreed layout instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from avmatch.core.config import MAX_MINUTES_HELP, StrictModel

# The simulated experts: name -> output size (the sizes of EFT's experts: ECAPA 192, Resemblyzer 256,
# R(2+1)D 512, Swin 768, MobileNet 1280, Inception 512). Each is a different fixed random nonlinear view.
SIM_EXPERTS: dict[str, int] = {
    "v_sim_ecapa": 192,
    "v_sim_resemblyzer": 256,
    "f_sim_r2plus1d": 512,
    "f_sim_swin": 768,
    "f_sim_mobilenet": 1280,
    "f_sim_inception": 512,
}

# identities per split (train, valid, test); `full` is VoxCeleb1's 901 / 100 / 250 (EFT's split)
COHORT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (40, 10, 24),
    "demo": (300, 50, 100),
    "full": (901, 100, 250),
}


class VfExpertProfile(StrictModel):
    """One simulated expert's own quality, overriding the simulator's common settings for it (real experts
    are not equally good: a network trained for speaker or face identity carries more identity than a generic
    image or action network, and some fail on more tracks than others)."""

    coverage: float | None = Field(None, gt=0, le=1, description="fraction of the latent it sees "
                                   "(default: expert_coverage)")
    noise: float | None = Field(None, ge=0, description="std of its output noise relative to its output's std "
                                "(default: expert_noise times a random factor in [0.7, 1.3])")
    missing: float | None = Field(None, ge=0, lt=1, description="probability that a track has no vector of this "
                                  "expert (default: missing_fraction)")
    sensitivity: float | None = Field(None, ge=0, le=1, description="how much of its input signal it loses on a "
                                      "low-quality track (default: degraded_sensitivity)")


class VfSimulatorParams(StrictModel):
    """How the simulated cohort is drawn (docs/voiceface.md and the cohort module explain each part)."""

    videos_per_identity: tuple[int, int] = Field((3, 5), description="videos per identity, drawn uniformly "
                                                 "in [lo, hi]")
    clips_per_video: tuple[int, int] = Field((2, 3), description="clips per video (one voice and one face track "
                                             "per clip), drawn uniformly in [lo, hi]")
    attribute_dim: int = Field(16, ge=2, description="latent dimensions carrying gender and nationality")
    shared_dim: int = Field(32, ge=1, description="identity dimensions voice and face both show")
    private_dim: int = Field(32, ge=0, description="identity dimensions only one modality shows (per modality)")
    gender_scale: float = Field(6.0, ge=0, description="length of the gender direction in the latent")
    nationality_scale: float = Field(3.0, ge=0, description="length of a nationality's direction")
    shared_scale: float = Field(0.5, ge=0, description="per-dimension std of the shared identity part")
    private_scale: float = Field(1.0, ge=0, description="per-dimension std of the modality-private part")
    video_nuisance: float = Field(0.6, ge=0, description="per-dimension std of a per-video, per-modality offset "
                                  "(session, camera, microphone)")
    track_nuisance: float = Field(0.6, ge=0, description="per-dimension std of per-track noise")
    expert_coverage: float = Field(0.6, gt=0, le=1, description="fraction of the latent dimensions each expert "
                                   "sees (a different random subset per expert): experts complement each other")
    expert_noise: float = Field(0.3, ge=0, description="std of each expert's own output noise, relative to its "
                                "output's std")
    noisy_fraction: float = Field(0.1, ge=0, lt=1, description="tracks that really show another identity of the "
                                  "same split (VoxCeleb's imperfect tracks); labelled noisy=True")
    noisy_modalities: list[Literal["voice", "face"]] = Field(["face"], description="which tracks can be noisy")
    missing_fraction: float = Field(0.05, ge=0, lt=1, description="(track, expert) vectors left out "
                                    "(listed in experts/missing.parquet); a track keeps at least one expert")
    degraded_fraction: dict[Literal["voice", "face"], float] = Field(
        {}, description="per modality, the share of tracks of low quality (a profile, blurred or small face; a "
        "noisy or overlapped voice): on them every expert of that modality loses `sensitivity` of its input signal "
        "while its own noise stays, so it answers with a weaker, less reliable vector (absent: 0)")
    degraded_sensitivity: float = Field(0.5, ge=0, le=1, description="an expert's signal loss on a low-quality "
                                        "track, where its profile does not set one")
    experts: dict[str, int] = Field(default_factory=lambda: dict(SIM_EXPERTS),
                                    description="simulated experts: name (v_sim_* / f_sim_*) -> output size")
    expert_profiles: dict[str, VfExpertProfile] = Field(
        {}, description="per-expert coverage / noise / missing rate overriding the common settings (an expert "
        "not listed uses them): experts of unequal quality and unequal failure rates")

    @field_validator("videos_per_identity", "clips_per_video")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1 or v[1] < v[0]:
            raise ValueError("must be [lo, hi] with 1 <= lo <= hi")
        return v

    @field_validator("experts")
    @classmethod
    def _experts(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [n for n in v if not (n.startswith("v_") or n.startswith("f_"))]
        if bad:
            raise ValueError(f"expert names must start with v_ (voice) or f_ (face): {bad}")
        if not any(n.startswith("v_") for n in v) or not any(n.startswith("f_") for n in v):
            raise ValueError("the simulator needs at least one voice (v_) and one face (f_) expert")
        if any(d < 2 for d in v.values()):
            raise ValueError("expert sizes must be >= 2")
        return v

    @model_validator(mode="after")
    def _profiles(self) -> "VfSimulatorParams":
        unknown = sorted(set(self.expert_profiles) - set(self.experts))
        if unknown:
            raise ValueError(f"expert_profiles for experts the simulator does not draw: {unknown}")
        bad = {m: f for m, f in self.degraded_fraction.items() if not 0 <= f < 1}
        if bad:
            raise ValueError(f"degraded_fraction must be in [0, 1) per modality: {bad}")
        return self


class VfCorpusParams(StrictModel):
    source: Literal["simulated", "folder"] = Field(
        "simulated", description="simulated: the corpus stage draws the cohort of expert embeddings into root; "
        "folder: root already holds a corpus in the agreed layout (identities.parquet, tracks.parquet, media)")
    size: Literal["tiny", "demo", "full"] = Field("demo", description=f"identities per split: {COHORT_SIZES}")
    seed: int = 15
    root: str = "data/voiceface/corpus"
    simulator: VfSimulatorParams = VfSimulatorParams()


class VfExpertsParams(StrictModel):
    voice: list[str] = Field(["v_sim_ecapa", "v_sim_resemblyzer"], min_length=1,
                             description="voice experts the models use (names start with v_)")
    face: list[str] = Field(["f_sim_r2plus1d", "f_sim_swin", "f_sim_mobilenet", "f_sim_inception"], min_length=1,
                            description="face experts the models use (names start with f_)")
    options: dict[str, dict[str, Any]] = Field({}, description="per-expert options for the real experts "
                                               "(avmatch.voiceface.experts), e.g. {f_dlib: {upsample: 1}}")

    @model_validator(mode="after")
    def _prefixes(self) -> "VfExpertsParams":
        bad = [n for n in self.voice if not n.startswith("v_")] + [n for n in self.face if not n.startswith("f_")]
        if bad:
            raise ValueError(f"voice experts must start with v_ and face experts with f_: {bad}")
        for lst in (self.voice, self.face):
            if len(set(lst)) != len(lst):
                raise ValueError(f"an expert is listed twice: {lst}")
        unknown = sorted(set(self.options) - set(self.voice) - set(self.face))
        if unknown:
            raise ValueError(f"options for experts that are not used: {unknown}")
        return self


class VfModelParams(StrictModel):
    kind: Literal["fusion", "single", "concat"] = Field(
        "fusion", description="fusion: EFT (expert tokens -> shared transformer -> mean of present experts); "
        "single: the first voice and first face expert through an MLP; concat: all experts concatenated (missing "
        "as zeros) through an MLP")
    d: int = Field(512, ge=8, description="token and embedding size (EFT: 512)")
    heads: int = Field(4, ge=1)
    layers: int = Field(1, ge=1, le=6)
    feedforward: int = Field(100, ge=8, description="transformer feed-forward width (EFT: 100)")
    dropout: float = Field(0.5, ge=0, lt=1, description="input dropout per expert and transformer dropout (EFT: 0.5)")
    hidden: int = Field(512, ge=8, description="MLP hidden width of the single and concat baselines")

    @model_validator(mode="after")
    def _heads(self) -> "VfModelParams":
        if self.d % self.heads:
            raise ValueError(f"d={self.d} must be divisible by heads={self.heads}")
        return self


class VfSbcParams(StrictModel):
    mode: Literal["sbc", "off", "label"] = Field(
        "sbc", description="batch construction from the big batch: sbc (EFT: a track of an identity already in the "
        "batch is kept only if its similarity to the tracks kept is <= mean + k*std), off (the first batch_size "
        "pairs), label (oracle: one pair per identity)")
    k: float = Field(4.0, ge=0, description="std multiplier of the SBC threshold (EFT: sbc_4.0)")


class VfTrainParams(StrictModel):
    max_steps: int = Field(600, ge=1, description="the stopping rule (never the clock)")
    max_minutes: float | None = Field(None, gt=0, description=MAX_MINUTES_HELP)
    batch_size: int = Field(256, ge=2, description="pairs per step after batch cleaning (EFT: 256)")
    big_batch: int = Field(512, ge=2, description="pairs drawn per step before cleaning (EFT: 512)")
    sbc: VfSbcParams = VfSbcParams()
    temperature: float = Field(0.07, gt=0, description="InfoNCE temperature (EFT: 0.07)")
    lr: float = Field(5e-4, gt=0, description="Adam learning rate (EFT: 5e-4, constant)")
    weight_decay: float = Field(0.0, ge=0)
    expert_dropout: float = Field(
        0.0, ge=0, lt=1, description="training only: each expert vector of a track is hidden (marked missing) with "
        "this probability, a track keeping at least one; fusion then masks that token, concat sees zeros, single is "
        "unaffected. Teaches the model to use any subset of experts (0: off, as EFT)")
    eval_every: int = Field(50, ge=1, description="steps between validation AUCs; the best step is kept (EFT)")
    checkpoint_every: int = Field(100, ge=1)
    seed: int = 15
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, ge=0, description="torch threads while training (0: common.num_threads)")
    baselines: list[Literal["single", "concat"]] = Field(
        ["single", "concat"], description="baselines trained next to the configured model with the same training: "
        "single = one model per (voice expert, face expert) pair, the best on validation reported; concat")
    sbc_ablation: bool = Field(True, description="also train the configured model with sbc.mode off (or sbc when "
                               "it is off) so evaluate compares the two")

    @model_validator(mode="after")
    def _batches(self) -> "VfTrainParams":
        if self.big_batch < self.batch_size:
            raise ValueError(f"big_batch={self.big_batch} must be >= batch_size={self.batch_size}")
        return self


class VfExtractParams(StrictModel):
    batch_size: int = Field(1024, ge=1)
    shard_size: int = Field(5000, ge=1, description="tracks per Parquet shard")


class VfEvaluateParams(StrictModel):
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for 95% intervals")
    seed: int = 0
    sizes: dict[str, int] = Field({}, description="evaluation list sizes passed to evals.make_eval_lists "
                                  "(EvalSizes fields; empty: its defaults)")


class VoicefaceParams(StrictModel):
    corpus: VfCorpusParams = VfCorpusParams()
    experts: VfExpertsParams = VfExpertsParams()
    model: VfModelParams = VfModelParams()
    train: VfTrainParams = VfTrainParams()
    extract: VfExtractParams = VfExtractParams()
    evaluate: VfEvaluateParams = VfEvaluateParams()

    @model_validator(mode="after")
    def _simulated_experts(self) -> "VoicefaceParams":
        if self.corpus.source == "simulated":
            have = set(self.corpus.simulator.experts)
            missing = [n for n in [*self.experts.voice, *self.experts.face] if n not in have]
            if missing:
                raise ValueError(f"experts {missing} are not simulated (corpus.source is 'simulated'; simulated "
                                 f"experts: {sorted(have)}); list them in corpus.simulator.experts or use a folder corpus")
        return self


SECTION = VoicefaceParams
"""Voice-face association (EFT): expert fusion, SBC training, VoxCeleb-style evaluation."""
