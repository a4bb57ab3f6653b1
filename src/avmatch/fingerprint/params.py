"""The `fingerprint` section of params.yaml: corpus, audio front end, model, training, index, search."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from avmatch.core.config import MAX_MINUTES_HELP, StrictModel


class FpCorpusParams(StrictModel):
    size: Literal["tiny", "demo", "large"] = "demo"
    seed: int = 7
    root: str = "data/fingerprint/corpus"
    include_recorded: bool = Field(True, description="add Debian recorded-music packages when available")
    query_lengths_s: list[float] = [1.0, 2.0, 3.0, 5.0, 10.0]
    degradations: list[Literal["noise", "reverb", "phone_codec", "gain", "clean", "speed", "stretch"]] = Field(
        ["noise", "reverb", "phone_codec", "gain", "clean", "speed", "stretch"],
        description="speed: played faster or slower with the pitch (turntable, tape, broadcast speed-up); "
                    "stretch: faster or slower at the same pitch (time compression); both by max_speed_change")
    max_speed_change: float = Field(0.03, ge=0.005, le=0.2, description="speed and stretch queries change the "
                                    "rate by 0.5 % up to this fraction, faster or slower")
    snr_db: tuple[float, float] = (0.0, 10.0)
    queries_per_length: int | None = Field(None, ge=1, description="None: size default")
    oov_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of queries from music not in the db")
    cover_ref_instruments: bool = Field(
        False, description="builtin: deal the training pieces' instruments so that the references' instruments "
                           "come first (training and null-query music spanning the references' timbres)")
    extra_train_pieces: int = Field(
        0, ge=0, le=2000, description="builtin: this many more music21 pieces in the training split, planned and "
                                      "rendered after the references and held-out pieces so that those (and so "
                                      "every query) stay byte-identical, with the references' instruments dealt "
                                      "first (cover_min_pieces decks); the other training pieces are unchanged")
    cover_min_pieces: int = Field(
        1, ge=1, le=10, description="builtin: the first this many decks of instruments dealt to the extra training "
                                    "pieces (and, with cover_ref_instruments, to the others) put the references' "
                                    "first: given enough pieces every reference instrument is played by at least "
                                    "this many of them")
    source: Literal["builtin", "nafp"] = Field(
        "builtin", description="builtin: the offline demo corpus; nafp: import the NAFP dataset at dataset_root")
    dataset_root: str | None = Field(None, description="neural-audio-fp-dataset folder (source: nafp)")
    max_dummy_refs: int = Field(0, ge=0, description="nafp: add up to this many test-dummy-db tracks as references")

    @field_validator("snr_db")
    @classmethod
    def _snr_order(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"snr_db must be [low, high] with low <= high, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _nafp_needs_root(self) -> "FpCorpusParams":
        if self.source == "nafp" and not self.dataset_root:
            raise ValueError("fingerprint.corpus.source is 'nafp' but fingerprint.corpus.dataset_root is not set: "
                             "give the path of the neural-audio-fp-dataset folder")
        return self


class FpAudioParams(StrictModel):
    sample_rate: int = Field(8000, gt=0)
    segment_s: float = Field(1.0, gt=0)
    hop_s: float = Field(0.5, gt=0)


class LogMelParams(StrictModel):
    n_fft: int = Field(1024, gt=0)
    hop_length: int = Field(256, gt=0)
    n_mels: int = Field(256, gt=0)
    f_min: float = Field(300.0, ge=0)
    f_max: float = Field(4000.0, gt=0)

    @model_validator(mode="after")
    def _band(self) -> "LogMelParams":
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min ({self.f_min}) must be below f_max ({self.f_max})")
        return self


class FpModelParams(StrictModel):
    dim: int = Field(128, gt=0)
    channels: list[int] = [8, 16, 32, 64, 64, 128, 128, 256]
    head_hidden: int = Field(32, gt=0, description="per-split hidden units of the divide-and-encode head")


class FpAugmentParams(StrictModel):
    noise_prob: float = Field(0.8, ge=0, le=1)
    snr_db: tuple[float, float] = (0.0, 15.0)
    reverb_prob: float = Field(0.5, ge=0, le=1)
    rt60_s: tuple[float, float] = (0.2, 0.9)
    bandlimit_prob: float = Field(0.3, ge=0, le=1)
    max_offset_s: float = Field(0.25, ge=0)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    speed_prob: float = Field(0.4, ge=0, le=1, description="positives played faster or slower, pitch moving "
                              "with the speed (resampled), by up to max_speed_change")
    stretch_prob: float = Field(0.1, ge=0, le=1, description="positives time-stretched at the same pitch "
                                "(phase vocoder), by up to max_speed_change")
    max_speed_change: float = Field(0.04, ge=0, le=0.2, description="largest rate change, as a fraction (0.04: "
                                    "4 % faster or slower)")

    @model_validator(mode="after")
    def _rate_probs(self) -> "FpAugmentParams":
        if self.speed_prob + self.stretch_prob > 1.0:
            raise ValueError(f"speed_prob + stretch_prob must be <= 1 (one rate change per positive), got "
                             f"{self.speed_prob} + {self.stretch_prob}")
        return self


class FpTrainParams(StrictModel):
    loss: Literal["ntxent", "triplet"] = "ntxent"
    temperature: float = Field(0.05, gt=0)
    triplet_margin: float = Field(0.3, gt=0)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_steps: int = Field(800, ge=1, description="the stopping rule; the LR schedule depends on step/max_steps only")
    max_minutes: float | None = Field(None, gt=0, description=MAX_MINUTES_HELP)
    checkpoint_every: int = Field(200, ge=1)
    validate_every: int = Field(200, ge=1)
    num_workers: int = Field(1, ge=0)
    threads: int = Field(1, ge=0, description="torch threads of the training step. A fixed count makes the "
                         "trained weights the same on any machine (the thread count orders the float sums); 0 = "
                         "common.num_threads, or the cores the data workers leave (machine-dependent)")
    augment: FpAugmentParams = FpAugmentParams()
    same_timbre_fraction: float = Field(
        0.0, ge=0.0, le=0.9, description="share of each batch drawn as windows of different training tracks played "
                                         "by the same instrument (pairs of tracks from one instrument, from the "
                                         "corpus's tracks.csv), so the contrastive loss sees 'same timbre, other "
                                         "piece' as a negative; 0 = every window drawn independently")
    background_excerpts: int = Field(600, ge=0, description="degraded excerpts of the training music embedded "
                                     "after training and stored in the encoder file: the background that "
                                     "reference segments' hub scores are measured against (0 = none)")
    background_length_s: float = Field(10.0, gt=0, description="length of each background excerpt")


class FpExtractParams(StrictModel):
    batch_size: int = Field(256, ge=1)
    shard_items: int = Field(32, ge=1, description="media items per Parquet shard")
    num_partitions: int = Field(1, ge=1)


class FpIndexParams(StrictModel):
    type: Literal["flat", "ivfpq"] = "flat"
    nlist: int = Field(256, ge=1)
    pq_m: int = Field(16, ge=1)
    pq_nbits: int = Field(8, ge=1, le=16)
    nprobe: int = Field(16, ge=1)
    partitions: int = Field(1, ge=1, description="> 1: train once, add per partition, merge (large collections)")
    ondisk: bool = Field(True, description="partitioned ivfpq: merge inverted lists into one on-disk file")
    train_sample: int = Field(100000, ge=1000, description="vectors the shared IVF-PQ training sees at most")


class FpVerifyParams(StrictModel):
    """The spectral-peak verification of a search's winning alignment (`avmatch.fingerprint.verify`), used by
    the decision `verified`."""

    n_fft: int = Field(512, ge=64, description="STFT size of the peak spectrogram (512 at 8 kHz: 15.6 Hz bins)")
    hop: int = Field(256, ge=16, description="STFT hop in samples (256 at 8 kHz: 32 ms frames)")
    f_min: float = Field(300.0, ge=0)
    f_max: float = Field(4000.0, gt=0)
    peaks_per_second: int = Field(32, ge=1, description="strongest local maxima kept per second, queries and "
                                  "references alike")
    neighbourhood_frames: int = Field(3, ge=1, description="a peak is the maximum of +-this many frames ...")
    neighbourhood_bins: int = Field(4, ge=1, description="... and +-this many bins")
    tol_frames: int = Field(1, ge=0, description="a query peak counts when a reference peak lies within "
                            "+-tol_frames ...")
    tol_bins: int = Field(1, ge=0, description="... and +-tol_bins of its aligned position")
    max_lag_frames: int = Field(16, ge=0, description="lags tried around the search's offset (it is on the "
                                "segment grid)")
    max_rate_change: float = Field(0.04, ge=0, le=0.2, description="speeds tried: 1 +- k * rate_step up to this")
    rate_step: float = Field(0.0025, ge=0, le=0.05, description="0: only the search's own rate")

    @model_validator(mode="after")
    def _band(self) -> "FpVerifyParams":
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min ({self.f_min}) must be below f_max ({self.f_max})")
        if self.hop > self.n_fft:
            raise ValueError(f"hop ({self.hop}) must not exceed n_fft ({self.n_fft})")
        return self


class FpSearchParams(StrictModel):
    top_k: int = Field(50, ge=1)
    rescore: bool = True
    max_candidates: int = Field(20, ge=1, description="tracks rescored after offset voting")
    max_drift: float = Field(0.04, ge=0, le=0.2, description="rescoring also tries alignments of queries played "
                             "up to this much faster or slower (0.04: 4 %); 0 = exact-speed alignment only")
    drift_step: float = Field(0.01, gt=0, le=0.1, description="spacing of the speeds tried")
    score: Literal["margin", "similarity", "either", "verified"] = Field(
        "margin", description="the no-match decision: the winner's margin over the best other track, its "
                              "similarity, either (answered when the margin or the similarity passes its own "
                              "per-length threshold, each calibrated for half the false-match target), or "
                              "verified: the share of the query's spectral peaks found at the winner's alignment "
                              "in the reference's (search.verify; needs the references' peaks)")
    runner_up_weight: float = Field(1.0, ge=0, le=1, description="margin = similarity - runner_up_weight x the best "
                                    "other track's similarity (1: the plain difference)")
    hub_weight: float = Field(0.0, ge=0, le=2, description="each pair's similarity is reduced by this much times "
                              "the reference segment's hub score (its mean similarity to its nearest background "
                              "fingerprints: high for segments all music resembles); 0 = off")
    hub_neighbours: int = Field(10, ge=1, description="background neighbours a hub score averages")
    verify: FpVerifyParams = FpVerifyParams()


class FpEvaluateParams(StrictModel):
    validation_fraction: float = Field(0.3, gt=0, lt=1, description="queries held out of the test set; their "
                                       "out-of-database ones join the null queries that set the thresholds")
    target_false_match_rate: float = Field(0.01, ge=0, le=1, description="largest share of out-of-database "
                                           "queries answered, at every query length")
    null_queries_per_length: int = Field(400, ge=0, description="excerpts of music not in the database (the "
                                         "training music), per query length, that calibrate the no-match "
                                         "thresholds; 0 = the validation out-of-database queries only")
    null_source: Literal["train", "refs", "both"] = Field(
        "train", description="where null queries are cut from: the training music (train), the references "
                             "themselves, each searched with its own recording left out (refs: unknown music of "
                             "the database's own kind), or null_queries_per_length of each (both)")
    compare_untrained: bool = True


class FingerprintParams(StrictModel):
    corpus: FpCorpusParams = FpCorpusParams()
    audio: FpAudioParams = FpAudioParams()
    logmel: LogMelParams = LogMelParams()
    model: FpModelParams = FpModelParams()
    train: FpTrainParams = FpTrainParams()
    extract: FpExtractParams = FpExtractParams()
    index: FpIndexParams = FpIndexParams()
    search: FpSearchParams = FpSearchParams()
    evaluate: FpEvaluateParams = FpEvaluateParams()


SECTION = FingerprintParams
