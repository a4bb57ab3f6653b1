"""Typed, validated view of params.yaml.

Every tunable lives in params.yaml (one section per pipeline plus `common`); this module is the only
reader. Unknown keys and bad values stop the run with a message naming the key path, the value and
what is allowed, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """params.yaml is missing, unparsable or invalid; the message says which key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- common
class MlflowParams(_Strict):
    tracking_uri: str | None = Field(None, description="None: sqlite:///<project root>/mlflow.db")
    artifact_root: str | None = Field(None, description="None: <project root>/mlruns")
    experiment_prefix: str = "avmatch"
    enabled: bool = True


class CommonParams(_Strict):
    seed: int = 1234
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(0, ge=0, description="torch threads; 0 = all cores")
    mlflow: MlflowParams = MlflowParams()


# ---------------------------------------------------------------- orchestration
class RetryParams(_Strict):
    attempts: int = Field(2, ge=0, le=10, description="extra attempts for transient (I/O) failures")
    backoff_s: float = Field(10.0, ge=0, description="first retry delay; doubles each attempt")


class ReevaluateParams(_Strict):
    cron: str = Field("0 4 * * 1", description="when the scheduled re-evaluation runs (cron, timezone below)")
    timezone: str = "UTC"
    interval_s: float | None = Field(None, gt=0, description="instead of cron: every N seconds (testing)")
    tolerance: float = Field(0.02, ge=0, description="largest allowed drop of a watched metric vs the last run")
    pipelines: list[str] | None = Field(None, description="None: every pipeline with a registered model")

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("must be a 5-field cron expression like '0 4 * * 1'")
        return v


class DaskParams(_Strict):
    address: str | None = Field(None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    n_workers: int = Field(2, ge=1, description="local cluster size when no address is given")
    threads_per_worker: int = Field(1, ge=1)


class ServerParams(_Strict):
    host: str = "127.0.0.1"
    prefect_port: int = Field(4200, ge=1, le=65535)
    mlflow_port: int = Field(5000, ge=1, le=65535)


class OrchestrationParams(_Strict):
    retries: RetryParams = RetryParams()
    reevaluate: ReevaluateParams = ReevaluateParams()
    dask: DaskParams = DaskParams()
    servers: ServerParams = ServerParams()


# ---------------------------------------------------------------- fingerprint
class FpCorpusParams(_Strict):
    size: Literal["tiny", "demo", "large"] = "demo"
    seed: int = 7
    root: str = "data/fingerprint/corpus"
    include_recorded: bool = Field(True, description="add Debian recorded-music packages when available")
    query_lengths_s: list[float] = [1.0, 2.0, 3.0, 5.0, 10.0]
    degradations: list[Literal["noise", "reverb", "phone_codec", "gain", "clean"]] = [
        "noise", "reverb", "phone_codec", "gain", "clean"]
    snr_db: tuple[float, float] = (0.0, 10.0)
    queries_per_length: int | None = Field(None, ge=1, description="None: size default")
    oov_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of queries from music not in the db")
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


class FpAudioParams(_Strict):
    sample_rate: int = Field(8000, gt=0)
    segment_s: float = Field(1.0, gt=0)
    hop_s: float = Field(0.5, gt=0)


class LogMelParams(_Strict):
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


class FpModelParams(_Strict):
    dim: int = Field(128, gt=0)
    channels: list[int] = [8, 16, 32, 64, 64, 128, 128, 256]
    head_hidden: int = Field(32, gt=0, description="per-split hidden units of the divide-and-encode head")


class FpAugmentParams(_Strict):
    noise_prob: float = Field(0.8, ge=0, le=1)
    snr_db: tuple[float, float] = (0.0, 15.0)
    reverb_prob: float = Field(0.5, ge=0, le=1)
    rt60_s: tuple[float, float] = (0.2, 0.9)
    bandlimit_prob: float = Field(0.3, ge=0, le=1)
    max_offset_s: float = Field(0.25, ge=0)
    gain_db: tuple[float, float] = (-6.0, 6.0)


class FpTrainParams(_Strict):
    loss: Literal["ntxent", "triplet"] = "ntxent"
    temperature: float = Field(0.05, gt=0)
    triplet_margin: float = Field(0.3, gt=0)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_steps: int = Field(3000, ge=1, description="the LR decays with max(step/max_steps, elapsed/max_minutes)")
    max_minutes: float = Field(9.0, gt=0, description="wall-clock budget; training stops cleanly at it")
    checkpoint_every: int = Field(200, ge=1)
    validate_every: int = Field(250, ge=1)
    num_workers: int = Field(1, ge=0)
    augment: FpAugmentParams = FpAugmentParams()


class FpExtractParams(_Strict):
    batch_size: int = Field(256, ge=1)
    shard_items: int = Field(32, ge=1, description="media items per Parquet shard")
    num_partitions: int = Field(1, ge=1)


class FpIndexParams(_Strict):
    type: Literal["flat", "ivfpq"] = "flat"
    nlist: int = Field(256, ge=1)
    pq_m: int = Field(16, ge=1)
    pq_nbits: int = Field(8, ge=1, le=16)
    nprobe: int = Field(16, ge=1)
    partitions: int = Field(1, ge=1, description="> 1: train once, add per partition, merge (large collections)")
    ondisk: bool = Field(True, description="partitioned ivfpq: merge inverted lists into one on-disk file")
    train_sample: int = Field(100000, ge=1000, description="vectors the shared IVF-PQ training sees at most")


class FpSearchParams(_Strict):
    top_k: int = Field(50, ge=1)
    rescore: bool = True
    max_candidates: int = Field(20, ge=1, description="tracks rescored after offset voting")
    score: Literal["margin", "similarity"] = Field(
        "margin", description="what the no-match threshold applies to: the winner's similarity, or its margin "
                              "over the best other track")


class FpEvaluateParams(_Strict):
    validation_fraction: float = Field(0.3, gt=0, lt=1, description="queries used to pick the no-match threshold")
    target_false_match_rate: float = Field(0.05, ge=0, le=1)
    compare_untrained: bool = True


class FingerprintParams(_Strict):
    corpus: FpCorpusParams = FpCorpusParams()
    audio: FpAudioParams = FpAudioParams()
    logmel: LogMelParams = LogMelParams()
    model: FpModelParams = FpModelParams()
    train: FpTrainParams = FpTrainParams()
    extract: FpExtractParams = FpExtractParams()
    index: FpIndexParams = FpIndexParams()
    search: FpSearchParams = FpSearchParams()
    evaluate: FpEvaluateParams = FpEvaluateParams()


# ---------------------------------------------------------------- copydetect (VSC22)
class CdCorpusParams(_Strict):
    size: Literal["tiny", "demo", "large"] = "demo"
    seed: int = 11
    root: str = "data/copydetect/corpus"
    include_bad_files: bool = Field(True, description="add unreadable / audio-only files to the queries (robustness demo)")
    source: Literal["builtin", "vsc22"] = Field(
        "builtin", description="builtin: build the offline corpus at root; vsc22: use the VSC22 layout found at root")
    query_dir: str = "query"
    ref_dir: str = "reference"
    noise_dir: str = "noise"
    ground_truth: str = "matching_ground_truth.csv"


class CdFramesParams(_Strict):
    fps: float = Field(1.0, gt=0, le=1.0, description="descriptors per second (VSC22 allows at most 1)")
    size: int = Field(112, ge=32, le=512, description="cached frames are size x size RGB")
    workers: int = Field(2, ge=1)


class CdModelParams(_Strict):
    dim: int = Field(128, gt=0, le=511, description="descriptor size (VSC22: <= 512 incl. the normalisation dim)")
    channels: list[int] = [16, 32, 64, 128]
    input_size: int = Field(64, ge=32, description="frames are resized to this square input")


class CdTrainParams(_Strict):
    batch_size: int = Field(64, ge=4)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.1, gt=0)
    max_steps: int = Field(3000, ge=1)
    max_minutes: float = Field(8.0, gt=0, description="wall-clock budget; training stops cleanly at it")
    checkpoint_every: int = Field(100, ge=1)
    augment_strength: float = Field(1.0, gt=0, le=1.0)
    koleo_weight: float = Field(0.0, ge=0, description="weight of the KoLeo entropy regulariser (SSCD; 0 = off): "
                                "spreads descriptors so noise-set normalisation can work")
    train_on_noise: bool = Field(False, description="also train on the noise-set frames (more, disjoint footage; "
                                 "the noise set is certainly not in the references)")


class CdExtractParams(_Strict):
    batch_size: int = Field(128, ge=1)
    shard_items: int = Field(64, ge=1, description="videos per Parquet shard")


class CdCandidatesParams(_Strict):
    k: int = Field(20, ge=1, description="nearest reference frames per query frame")
    beta: float = Field(0.0, ge=0, description="CSLS normalisation weight (0 = off)")
    max_pairs_per_query: int = Field(25, ge=1)


class CdLocaliseParams(_Strict):
    per_row: int = Field(3, ge=1, description="strongest cells of each query row that become nodes")
    floor: float = Field(0.7, description="cells at or below this cosine similarity are not path nodes")
    max_gap: int = Field(3, ge=1, description="frames a path may skip on either axis")
    min_frames: int = Field(2, ge=1)
    max_segments: int = Field(3, ge=1, description="segments reported per candidate pair")


class CdEvaluateParams(_Strict):
    compare_untrained: bool = True
    phash_baseline: bool = True
    normalised_beta: float = Field(1.0, ge=0, description="β of the 'normalised' variant in the comparison "
                                                           "(the 'raw' one has β = 0)")
    beta_grid: list[float] = Field([0.25, 0.5, 0.75, 1.0], description="β values tried on the validation "
                                   "half of the queries (even positions by id); the best is reported on the other half")


class CopydetectParams(_Strict):
    corpus: CdCorpusParams = CdCorpusParams()
    frames: CdFramesParams = CdFramesParams()
    model: CdModelParams = CdModelParams()
    train: CdTrainParams = CdTrainParams()
    extract: CdExtractParams = CdExtractParams()
    candidates: CdCandidatesParams = CdCandidatesParams()
    localise: CdLocaliseParams = CdLocaliseParams()
    evaluate: CdEvaluateParams = CdEvaluateParams()
# ---------------------------------------------------------------- versions (musical version identification)
def _check_reduction(cls, v: str) -> str:
    """A segment-pair reduction name: min | mean | bpwr-k."""
    from avmatch.search.segment_pairs import parse_reduction

    parse_reduction(v)
    return v


class VerCorpusParams(_Strict):
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

    @model_validator(mode="after")
    def _dataset_needs_files(self) -> "VerCorpusParams":
        if self.source != "builtin" and not (self.metadata and self.audio_root):
            raise ValueError(f"versions.corpus.source is '{self.source}': set versions.corpus.metadata and "
                             "versions.corpus.audio_root")
        return self


class VerAudioParams(_Strict):
    sample_rate: int = Field(16000, gt=0)
    segment_s: float = Field(20.0, gt=0, description="segment length (training, extraction, segment queries)")
    hop_s: float = Field(5.0, gt=0, description="hop between segments at extraction")


class CQTParams(_Strict):
    n_bins: int = Field(84, gt=0)
    bins_per_octave: int = Field(12, gt=0)
    f_min: float = Field(32.70, gt=0, description="lowest bin (C1)")
    hop_s: float = Field(0.02, gt=0)
    n_fft: int = Field(4096, gt=0, description="FFT length of the STFT the constant-Q bins are pooled from")
    pool: int = Field(5, ge=1, description="frames averaged in time (20 ms x 5 = 100 ms per model frame)")


class VerModelParams(_Strict):
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

    @model_validator(mode="after")
    def _chroma_options_need_chroma(self) -> "VerModelParams":
        if self.chroma_top and (self.pitch_input == "octaves" or not self.fold_octaves):
            raise ValueError(f"versions.model.chroma_top ({self.chroma_top}) acts on the chroma input: set "
                             "versions.model.pitch_input to chroma or both (with fold_octaves: true), or chroma_top to 0")
        return self


class VerAugmentParams(_Strict):
    time_stretch: tuple[float, float] = (0.8, 1.25)
    pitch_shift_bins: int = Field(6, ge=0, description="max shift along the CQT bins (12 per octave)")
    freq_mask_bins: int = Field(8, ge=0)
    time_mask_frames: int = Field(20, ge=0)
    timbre: float = Field(1.0, ge=0, le=1, description="strength of the instrument-change augmentation: a random "
                          "smooth EQ (up to +/-12 dB x timbre), added octave / fifth / two-octave harmonics (up to "
                          "0.5 x timbre of the note) and, on half the crops, a sustain that holds decaying notes; "
                          "0 = off")


class VerTrainParams(_Strict):
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
    max_steps: int = Field(2000, ge=1)
    max_minutes: float = Field(8.0, gt=0)
    validate_every: int = Field(100, ge=1)
    ema: float = Field(0.0, ge=0, lt=1, description="decay of an exponential moving average of the weights that "
                       "is validated and kept instead of the raw weights; 0 = off")
    augment: VerAugmentParams = VerAugmentParams()

    _reduction = field_validator("positive_reduction", "negative_reduction")(_check_reduction)


class VerExtractParams(_Strict):
    batch_size: int = Field(64, ge=1)
    shard_items: int = Field(64, ge=1)


class VerEvaluateParams(_Strict):
    reduction: str = Field("bpwr-3", description="track distance from segment distances: min | mean | bpwr-k")
    faiss_above_tracks: int = Field(5000, ge=0, description="use FAISS candidate recall when the collection is larger")
    faiss_candidates: int = Field(200, ge=1, description="candidate tracks per query (FAISS recall)")
    max_segment_queries: int = Field(2000, ge=1)
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95% CIs (0: normal approximation)")
    compare_untrained: bool = True

    _reduction = field_validator("reduction")(_check_reduction)


class VerBaselineParams(_Strict):
    frame_size: int = Field(8192, gt=0)
    hop_size: int = Field(4096, gt=0, description="HPCP hop in samples (4096 at 16 kHz: ~4 chroma frames per second)")
    frame_stack: int = Field(1, ge=1)
    max_tracks: int = Field(400, ge=2, description="the Qmax baseline costs O(n^2) alignments: cap the test collection")
    max_segment_queries: int = Field(40, ge=1, description="20 s segment queries aligned against every segment")


class VersionsParams(_Strict):
    corpus: VerCorpusParams = VerCorpusParams()
    audio: VerAudioParams = VerAudioParams()
    cqt: CQTParams = CQTParams()
    model: VerModelParams = VerModelParams()
    train: VerTrainParams = VerTrainParams()
    extract: VerExtractParams = VerExtractParams()
    evaluate: VerEvaluateParams = VerEvaluateParams()
    baseline: VerBaselineParams = VerBaselineParams()


class Params(_Strict):
    common: CommonParams = CommonParams()
    orchestration: OrchestrationParams = OrchestrationParams()
    fingerprint: FingerprintParams = FingerprintParams()
    copydetect: CopydetectParams = CopydetectParams()
    versions: VersionsParams = VersionsParams()


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (check the spelling; allowed keys are listed in params.yaml)")
        else:
            value = e.get("input")
            lines.append(f"  - {key} = {value!r}: {e['msg']}")
    return "\n".join(lines)


def validate_params(data: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate params.yaml (plus dotted `overrides`, as `dvc exp run -S` sets them);
    raise ConfigError with a readable message when it is wrong."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such parameter file (run from the project root or pass --params)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return validate_params(apply_overrides(data, overrides or {}), str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (as `dvc exp run -S a.b=c` does) on a copy of raw params; validation comes after."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{dotted}': '{p}' is not a section")
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------- partial models (UI / API runs)
def partial_model(model: type[BaseModel], name: str | None = None) -> type[BaseModel]:
    """The same tree of keys as `model`, every field optional and unset by default.

    A Prefect deployment takes this as its parameter type, so the UI shows a form of the params.yaml
    section and an API run is validated against the real keys and types; only the fields a user
    fills in become overrides (exactly like `dvc exp run -S`).
    """
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            ann = partial_model(ann, f"{name or model.__name__}_{key}")
        fields[key] = (ann | None, Field(None, description=info.description))
    return create_model(name or f"{model.__name__}Overrides", __config__=ConfigDict(extra="forbid"), **fields)


def overrides_from_model(obj: BaseModel | dict | None, prefix: str) -> dict[str, Any]:
    """Dotted overrides (`prefix.a.b: value`) for the fields that were set in a partial model."""
    if obj is None:
        return {}
    data = obj.model_dump(mode="json", exclude_none=True) if isinstance(obj, BaseModel) else obj
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            out.update(overrides_from_model(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out
