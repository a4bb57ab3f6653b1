"""The `versions` section of params.yaml: corpus, CQT, encoder, training, extraction, evaluation, baseline."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from avmatch.core.config import MAX_MINUTES_HELP, TRAIN_THREADS_HELP, StrictModel

_BPWR = re.compile(r"^bpwr-(\d+)$")


def parse_reduction(name: str) -> tuple[str, int]:
    """'min' -> ('min', 1); 'mean' -> ('mean', 0); 'bpwr-3' -> ('bpwr', 3). Raises ValueError otherwise."""
    name = str(name).strip().lower()
    if name in ("min", "mean"):
        return name, 1 if name == "min" else 0
    m = _BPWR.match(name)
    if m and int(m.group(1)) >= 1:
        return "bpwr", int(m.group(1))
    raise ValueError(f"unknown reduction '{name}': use 'min', 'mean' or 'bpwr-k' with k >= 1 (e.g. bpwr-3)")


def _check_reduction(cls, v: str) -> str:
    """A segment-pair reduction name: min | mean | bpwr-k."""
    parse_reduction(v)
    return v


class VerCorpusParams(StrictModel):
    size: Literal["tiny", "demo", "large"] = "demo"
    seed: int = 11
    root: str = "data/versions/corpus"
    # builtin: Bach chorale families + folk-tune versions rendered offline; shs100k / discogs_vi: a real
    # dataset's metadata + audio folder turned into the same tracks.csv (docs/datasets.md)
    source: Literal["builtin", "shs100k", "discogs_vi"] = "builtin"
    metadata: str | None = Field(None, description="shs100k / discogs_vi: the metadata file")
    audio_root: str | None = Field(None, description="shs100k / discogs_vi: folder holding the audio files")
    folk_tunes: int | None = Field(None, ge=0, description="folk tunes rendered as training versions; None: size default")
    folk_versions: int = Field(3, ge=2, description="versions rendered per folk tune")
    chorale_versions: int | None = Field(None, ge=0, description="single chorales (no family, no distractor) "
                                         "rendered as 3 training versions each; None: size default")
    reharm_versions: int = Field(1, ge=0, le=2, description="how many of a single chorale's 3 versions are "
                                 "re-harmonised (its melody over another chorale's lower voices); the rest vary otherwise")
    train_soundfonts: list[str] = Field(["FluidR3_GM", "FluidR3Mono_GM", "sf_GMbank", "OPL-3_FM_128M"],
                                        min_length=1, description="soundfonts the training material is rendered with")
    unseen_soundfonts: list[str] = Field(["TimGM6mb", "MuseScore_General_Lite"], min_length=1,
                                         description="soundfonts of the val split and the test_unseen collection: "
                                         "never used for training material")
    unseen_val: bool = Field(True, description="render the val split (model selection) as test_unseen: with "
                             "soundfonts and programs training never uses; false: as the test split")

    @model_validator(mode="after")
    def _soundfonts_known_and_apart(self) -> "VerCorpusParams":
        from avmatch.core.soundfonts import SOUNDFONTS

        unknown = sorted(set(self.train_soundfonts + self.unseen_soundfonts) - set(SOUNDFONTS))
        if unknown:
            raise ValueError(f"unknown soundfont(s) {unknown}: choose among {sorted(SOUNDFONTS)}")
        if set(self.train_soundfonts) & set(self.unseen_soundfonts):
            raise ValueError("versions.corpus.train_soundfonts and unseen_soundfonts share "
                             f"{sorted(set(self.train_soundfonts) & set(self.unseen_soundfonts))}: unseen means unseen")
        return self

    @model_validator(mode="after")
    def _dataset_needs_files(self) -> "VerCorpusParams":
        if self.source != "builtin" and not (self.metadata and self.audio_root):
            raise ValueError(f"versions.corpus.source is '{self.source}': set versions.corpus.metadata and "
                             "versions.corpus.audio_root")
        return self


class VerAudioParams(StrictModel):
    sample_rate: int = Field(16000, gt=0)
    segment_s: float = Field(20.0, gt=0, description="segment length (training, extraction, segment queries)")
    hop_s: float = Field(5.0, gt=0, description="hop between segments at extraction")


class CQTParams(StrictModel):
    n_bins: int = Field(84, gt=0)
    bins_per_octave: int = Field(12, gt=0)
    f_min: float = Field(32.70, gt=0, description="lowest bin (C1)")
    hop_s: float = Field(0.02, gt=0)
    n_fft: int = Field(4096, gt=0, description="FFT length of the STFT the constant-Q bins are pooled from")
    pool: int = Field(5, ge=1, description="frames averaged in time (20 ms x 5 = 100 ms per model frame)")


class VerModelParams(StrictModel):
    dim: int = Field(128, gt=0)
    channels: list[int] = [16, 32, 64, 128]
    gem_p: float = Field(3.0, gt=0)
    fold_octaves: bool = Field(True, description="CQT bins as octave channels x pitch classes (circular): key invariance")
    pitch_input: Literal["octaves", "chroma", "both"] = Field(
        "octaves", description="with fold_octaves, what the first layer sees: the octave channels, the chroma (mean "
        "and max over octaves: register-free, exactly circular under transposition) or both")
    frame_norm: bool = Field(False, description="divide each frame by its largest value (as HPCP's unitMax "
                             "does), so note decay and loudness, which depend on the instrument, no longer reach the network")
    chroma_top: int = Field(0, ge=0, le=11, description="with chroma input, keep per frame only the pitch classes among "
                            "the `chroma_top` strongest (as 0/1): the chord and melody notes without the instrument's "
                            "loudness, envelope and harmonic balance; 0 = off")
    temporal_layers: int = Field(0, ge=0, le=6, description="dilated residual convolutions along time (dilation 1, 2, "
                                 "4, ..) after the 2-D blocks, before pooling: each position then sees the order of "
                                 "events across the whole segment, not only ~7 s around it")
    crp_coeffs: int = Field(0, ge=0, description="timbre-whitened chroma (CRP, Mueller & Ewert 2010): the lowest "
                            "`crp_coeffs` DCT coefficients of each frame's log CQT along the bins (the smooth spectral "
                            "envelope, i.e. the instrument) set to 0 before folding, each chroma frame L2-normalised; "
                            "0 = off")

    @model_validator(mode="after")
    def _chroma_options_need_chroma(self) -> "VerModelParams":
        if self.chroma_top and (self.pitch_input == "octaves" or not self.fold_octaves):
            raise ValueError(f"versions.model.chroma_top ({self.chroma_top}) acts on the chroma input: set "
                             "versions.model.pitch_input to chroma or both (with fold_octaves: true), or chroma_top to 0")
        if self.crp_coeffs and (self.pitch_input == "octaves" or not self.fold_octaves):
            raise ValueError(f"versions.model.crp_coeffs ({self.crp_coeffs}) whitens the chroma input: set "
                             "versions.model.pitch_input to chroma or both (with fold_octaves: true), or crp_coeffs to 0")
        return self


class VerAugmentParams(StrictModel):
    time_stretch: tuple[float, float] = (0.8, 1.25)
    pitch_shift_bins: int = Field(6, ge=0, description="max shift along the CQT bins (12 per octave)")
    freq_mask_bins: int = Field(8, ge=0)
    time_mask_frames: int = Field(20, ge=0)
    timbre: float = Field(1.0, ge=0, le=1, description="strength of the instrument-change augmentation: a random "
                          "smooth EQ (up to +/-12 dB x timbre), added octave / fifth / two-octave harmonics (up to "
                          "0.5 x timbre of the note) and, on half the crops, a sustain that holds decaying notes; "
                          "0 = off")


class VerDistillTeacherParams(StrictModel):
    """The distillation teacher: the coarse Qmax (as the re-ranker's qmax_coarse first stage, on the CQT chroma)
    between training tracks. Its own settings, so that tuning the re-ranker does not retrain the encoder."""

    cqt_pool: int = Field(3, ge=1, description="CQT frames averaged into one chroma frame (10 -> 3.3 frames/s)")
    pool: int = Field(2, ge=1, description="chroma frames averaged once more (the re-ranker's coarse pool)")
    frame_stack: int = Field(3, ge=1, description="frames stacked in the cross-similarity")


class VerTrainParams(StrictModel):
    loss: Literal["clews", "triplet", "supcon"] = "clews"
    # materials of the built-in corpus to train on; an imported dataset trains on all its train split
    sources: list[Literal["chorales", "folk", "chorale_versions"]] = ["chorales", "folk", "chorale_versions"]
    cliques_per_batch: int = Field(12, ge=2)
    balance_sources: bool = Field(False, description="each training source gets the same share of a batch's cliques")
    segments_per_track: int = Field(3, ge=1)
    positive_reduction: str = Field("bpwr-2", description="min | mean | bpwr-k (CLEWS: best pairs without replacement)")
    negative_reduction: str = Field("min", description="min | mean | bpwr-k")
    uniformity_t: float = Field(2.0, gt=0, description="temperature of the uniformity term log E[exp(-t d_neg)]")
    uniformity_weight: float = Field(1.0, ge=0)
    triplet_margin: float = Field(0.3, gt=0)
    temperature: float = Field(0.1, gt=0, description="supcon")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_steps: int = Field(3000, ge=1, description="the stopping rule; the LR schedule depends on step/max_steps only")
    max_minutes: float | None = Field(None, gt=0, description=MAX_MINUTES_HELP)
    validate_every: int = Field(100, ge=1)
    threads: int = Field(2, ge=0, description=TRAIN_THREADS_HELP)
    ema: float = Field(0.0, ge=0, lt=1, description="decay of an exponential moving average of the weights that "
                       "is validated and kept instead of the raw weights; 0 = off")
    distill_weight: float = Field(0.0, ge=0, description="weight of the listwise distillation of the coarse Qmax's "
                                  "distances between training tracks (distill_teacher, computed once and cached) "
                                  "into the encoder's batch distances; 0 = off")
    distill_temperature: float = Field(1.0, gt=0, description="softmax temperature of the distillation term, on "
                                       "per-track z-scored distances")
    distill_teacher: VerDistillTeacherParams = VerDistillTeacherParams()
    augment: VerAugmentParams = VerAugmentParams()

    _reduction = field_validator("positive_reduction", "negative_reduction")(_check_reduction)


class VerExtractParams(StrictModel):
    batch_size: int = Field(64, ge=1)
    shard_items: int = Field(64, ge=1)


class VerEvaluateParams(StrictModel):
    reduction: str = Field("bpwr-3", description="track distance from segment distances: min | mean | bpwr-k")
    faiss_above_tracks: int = Field(5000, ge=0, description="use FAISS candidate recall when the collection is larger")
    faiss_candidates: int = Field(200, ge=1, description="candidate tracks per query (FAISS recall)")
    max_segment_queries: int = Field(2000, ge=1)
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95% CIs (0: normal approximation)")
    compare_untrained: bool = True
    collections: list[str] = Field(["test", "test_unseen"], min_length=1,
                                   description="splits evaluated as separate collections (test: the demo test set; "
                                   "test_unseen: its families rendered as training never heard); test must be one")

    @field_validator("collections")
    @classmethod
    def _test_first(cls, v: list[str]) -> list[str]:
        if "test" not in v:
            raise ValueError("versions.evaluate.collections must include 'test' (metrics/versions.json's top level)")
        return v

    _reduction = field_validator("reduction")(_check_reduction)


class VerHPCPParams(StrictModel):
    """Essentia's cover-song tutorial front end (hpcpgram) plus frame pooling."""

    sample_rate: int = Field(32000, gt=0, description="audio is decoded at this rate for the HPCP (the tutorial's 32 kHz)")
    frame_size: int = Field(4096, gt=0)
    hop_size: int = Field(2048, gt=0)
    pool: int = Field(4, ge=1, description="consecutive HPCP frames averaged (4: ~0.26 s per frame, 16x fewer "
                      "alignment cells than raw frames)")


class VerQmaxParams(StrictModel):
    """Essentia ChromaCrossSimilarity + CoverSongSimilarity (the tutorial's settings)."""

    frame_stack: int = Field(9, ge=1, description="frames stacked into one vector before distances")
    binarize_percentile: float = Field(0.095, gt=0, le=1, description="fraction of each row / column marked similar")
    oti: bool = Field(True, description="transpose the reference to the query's key (optimal transposition index)")
    dis_onset: float = Field(0.5, ge=0, description="alignment penalty for starting a disruption")
    dis_extension: float = Field(0.5, ge=0, description="alignment penalty for extending a disruption")
    alignment: Literal["serra09", "chen17"] = "serra09"
    distance: Literal["asymmetric", "symmetric"] = "asymmetric"


def _check_collections(cls, v: list[str]) -> list[str]:
    """At least one split name, no repeats."""
    if not v or len(set(v)) != len(v):
        raise ValueError(f"collections must name at least one split, each once (got {v})")
    return v


class VerBaselineParams(StrictModel):
    collections: list[str] = Field(["test"], description="splits evaluated, each as its own collection "
                                   "(metrics/versions_baseline.json for test, versions_baseline_<split>.json otherwise)")
    hpcp: VerHPCPParams = VerHPCPParams()
    qmax: VerQmaxParams = VerQmaxParams()
    max_tracks: int | None = Field(None, ge=2, description="Qmax costs one alignment per track pair: optionally cap "
                                   "each collection (a seeded sample); null = every track")
    max_segment_queries: int = Field(40, ge=1, description="20 s segment queries aligned against every segment")

    _collections = field_validator("collections")(_check_collections)


class VerFtm2dParams(StrictModel):
    """The training-free first stage (Bertin-Mahieux & Ellis 2012): 2D Fourier magnitude of chroma patches."""

    patch: int = Field(75, ge=4, description="chroma frames per patch (75 pooled HPCP frames: ~19 s)")
    power: float = Field(2.0, gt=0, description="chroma raised to this power first (contrast)")


class VerCoarseQmaxParams(StrictModel):
    """The training-free first stage that aligns a query with every track cheaply: Qmax on coarser chroma."""

    pool: int = Field(2, ge=1, description="the re-ranker's chroma frames averaged once more (2: 4x fewer cells)")
    frame_stack: int = Field(3, ge=1, description="frames stacked in the cross-similarity (3: 3x cheaper distances "
                             "than the full Qmax's 9)")


FIRST_STAGES = ("encoder", "ftm2d", "qmax_coarse", "encoder_ftm2d", "encoder_qmax_coarse")


class VerRerankParams(StrictModel):
    collections: list[str] = Field(["test"], description="splits evaluated, each as its own collection")
    first_stages: list[Literal[FIRST_STAGES]] = Field(  # type: ignore[valid-type]
        ["encoder", "qmax_coarse", "encoder_qmax_coarse"], min_length=1,
        description="rankings whose top K are re-ranked, each reported: encoder (the trained encoder), ftm2d "
        "(training-free 2D Fourier magnitude of chroma patches), qmax_coarse (training-free: Qmax against every "
        "track on coarser chroma), encoder_<x> (the encoder's and x's distances z-scored per query, mixed)")
    first_mix: float = Field(0.8, ge=0, le=1, description="encoder_<x>: the share of x in the mixed distance")
    ftm2d: VerFtm2dParams = VerFtm2dParams()
    coarse: VerCoarseQmaxParams = VerCoarseQmaxParams()
    ks: list[int] = Field([5, 10, 25], description="re-rank the first stage's top K candidates of each query, for each K")
    chroma: Literal["cqt", "hpcp"] = Field("hpcp", description="hpcp: Essentia HPCP as versions.baseline.hpcp "
                                           "(the hpcp stage's, computed once per track); cqt: the features stage's "
                                           "CQT folded to 12 pitch classes")
    cqt_pool: int = Field(3, ge=1, description="CQT frames averaged (the CQT has 10 frames/s; 3 -> 3.3/s, "
                          "about the pooled HPCP's 3.9/s)")
    fusion: Literal["rank", "zscore"] = Field("zscore", description="how the K candidates' alignment and "
                                              "first-stage distances are mixed (when weight > 0)")
    weight: float = Field(0.2, ge=0, le=1, description="first-stage share of the re-ranking score (0: Qmax alone)")

    _collections = field_validator("collections")(_check_collections)

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError(f"versions.rerank.ks must be positive candidate counts (got {v})")
        return sorted(set(v))

    @field_validator("first_stages")
    @classmethod
    def _unique_first(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"versions.rerank.first_stages must name each first stage once (got {v})")
        return v


class VersionsParams(StrictModel):
    corpus: VerCorpusParams = VerCorpusParams()
    audio: VerAudioParams = VerAudioParams()
    cqt: CQTParams = CQTParams()
    model: VerModelParams = VerModelParams()
    train: VerTrainParams = VerTrainParams()
    extract: VerExtractParams = VerExtractParams()
    evaluate: VerEvaluateParams = VerEvaluateParams()
    baseline: VerBaselineParams = VerBaselineParams()
    rerank: VerRerankParams = VerRerankParams()


SECTION = VersionsParams
