"""The `copydetect` section of params.yaml: corpus, 1 fps frames, encoder, frame descriptor, training, recall,
localisation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from avmatch.core.config import MAX_MINUTES_HELP, TRAIN_THREADS_HELP, StrictModel

# avmatch.copydetect.dct_colour.DIM and vsc_npz.MAX_DIM, not imported so that the stages that only read params
# (training included) do not depend on that code; tests/copydetect/test_descriptor.py checks that they agree
DCT_COLOUR_DIM = 135
VSC22_MAX_DIM = 512


class CdCorpusParams(StrictModel):
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


class CdFramesParams(StrictModel):
    fps: float = Field(1.0, gt=0, le=1.0, description="descriptors per second (VSC22 allows at most 1)")
    size: int = Field(112, ge=32, le=512, description="cached frames are size x size RGB")
    workers: int = Field(2, ge=1)


class CdModelParams(StrictModel):
    dim: int = Field(128, gt=0, le=511, description="descriptor size (VSC22: <= 512 incl. the normalisation dim)")
    channels: list[int] = [16, 32, 64, 128]
    input_size: int = Field(64, ge=32, description="frames are resized to this square input")


class CdDescriptorParams(StrictModel):
    """The frame descriptor of the extract stage, the pipeline's database and `avmatch copydetect add` / `query`
    (`avmatch.copydetect.descriptor`). `trained_dct` concatenates the trained encoder's descriptor with the
    training-free DCT layout + colour histogram, [t, √w·d] / √(1 + w): on footage sources never used in
    training the encoder alone is behind the training-free descriptor; the concatenation (w = 0.5, chosen on
    the unseen collection's val half) is ahead of the encoder on all three µAPs there and of the training-free
    descriptor on matching µAP, and within noise of the encoder on the demo (docs/benchmarks.md, Copy
    detection, session 10). The evaluate stage reports both kinds. `mirror` + `whiten_power` 0.5 (session 13):
    each part averaged with the mirrored frame's, then PCA whitening fitted on the references + noise set;
    chosen on the val half and adopted by a pre-registered test (test half descriptor µAP 0.546 -> 0.651)."""

    kind: Literal["trained", "trained_dct"] = Field(
        "trained_dct", description="trained: the encoder alone (model.dim); trained_dct: encoder + DCT/colour "
        "(model.dim + 135 dimensions)")
    dct_weight: float = Field(0.5, gt=0, le=10, description="trained_dct: weight w of the DCT/colour cosine in a "
                              "frame pair's similarity (cos_trained + w cos_dct) / (1 + w)")
    mirror: bool = Field(True, description="average each part with the mirrored frame's (one descriptor per frame, "
                         "invariant to horizontal flips; twice the describing cost)")
    whiten_power: float = Field(0.5, ge=0, le=1, description="PCA whitening of the descriptor, fitted by the extract "
                                "stage on the references + noise set (the training footage): components scaled by "
                                "(eigenvalue + whiten_shrink x mean eigenvalue)^(-whiten_power/2); 0 = off, 1 = full")
    whiten_shrink: float = Field(0.1, ge=0, le=10, description="shrinkage of the whitening toward the identity, in mean "
                                 "eigenvalues")


class CdTrainParams(StrictModel):
    batch_size: int = Field(64, ge=4)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.1, gt=0)
    max_steps: int = Field(3000, ge=1, description="the stopping rule; the LR schedule depends on step/max_steps only")
    max_minutes: float | None = Field(None, gt=0, description=MAX_MINUTES_HELP)
    checkpoint_every: int = Field(100, ge=1)
    threads: int = Field(2, ge=0, description=TRAIN_THREADS_HELP)
    augment_strength: float = Field(1.0, gt=0, le=1.0)
    koleo_weight: float = Field(0.0, ge=0, description="weight of the KoLeo entropy regulariser (SSCD; 0 = off): "
                                "spreads descriptors so noise-set normalisation can work")
    train_on_noise: bool = Field(False, description="also train on the noise-set frames (more, disjoint footage; "
                                 "the noise set is certainly not in the references)")


class CdExtractParams(StrictModel):
    batch_size: int = Field(128, ge=1)
    shard_items: int = Field(64, ge=1, description="videos per Parquet shard")


class CdCandidatesParams(StrictModel):
    k: int = Field(20, ge=1, description="nearest reference frames per query frame")
    beta: float = Field(0.0, ge=0, description="CSLS normalisation weight (0 = off)")
    max_pairs_per_query: int = Field(25, ge=1)
    index: Literal["flat", "ivfpq"] = Field("flat", description="reference-frame index: exact flat, or IVF-PQ "
                                            "for large collections (benchmarks/bench_copydetect_recall.py)")
    nlist: int = Field(1024, ge=1, description="IVF-PQ inverted lists (~sqrt of the reference frames)")
    nprobe: int = Field(16, ge=1, description="IVF-PQ lists searched per query frame")
    pq_m: int = Field(16, ge=1, description="IVF-PQ sub-quantisers (must divide model.dim, else shrunk)")
    shortlist: int = Field(4, ge=1, description="IVF-PQ: shortlist x k frames re-scored exactly per query frame")


class CdLocaliseParams(StrictModel):
    # defaults = params.yaml's (chosen on unseen footage, docs/benchmarks.md session 9), also used by
    # `avmatch copydetect add` when no project params.yaml is found
    per_row: int = Field(8, ge=1, description="strongest cells of each query row that become nodes")
    floor: float = Field(0.3, description="cells at or below this cosine similarity are not path nodes")
    max_gap: int = Field(5, ge=1, description="frames a path may skip on either axis")
    min_frames: int = Field(2, ge=1)
    max_segments: int = Field(3, ge=1, description="segments reported per candidate pair")
    smooth: int = Field(1, ge=1, description="nodes are picked on the similarities averaged along diagonals over "
                        "this many frames (1 = off)")
    ref_extend: float = Field(0.05, ge=0, description="grow a segment's reference bounds over the frames whose mean "
                              "similarity to its query frames is within this of the best (stills, slow pans; 0 = off)")


class CdVerifyParams(StrictModel):
    """Training-free geometric verification of the localised matches (`avmatch.copydetect.verify`): SIFT keypoints
    of sampled query frames (and their mirror images) against the reference frames the match aligns them with,
    RANSAC similarity transform; a match with at least `min_inliers` inliers gains `bonus` on its score and (with
    `refine`) bounds re-drawn from its frames. Needs the videos (the corpus's, or the paths a user database
    records). Settings chosen on the val half of the unseen-source collection; on by default since it raised the
    test half's matching µAP 0.345 -> 0.671 and the demo's 0.620 -> 0.802 (pre-registered rule; docs/benchmarks.md,
    Copy detection, session 12)."""

    enabled: bool = Field(True, description="verify matches (the localise stage and `avmatch copydetect query`)")
    fps: float = Field(2.0, gt=0, le=30, description="keypoint frames per second of video")
    max_side: int = Field(320, ge=32, description="frames whose longer side exceeds this are downscaled first")
    n_features: int = Field(300, ge=8, description="SIFT keypoints per frame at most")
    contrast: float = Field(0.005, gt=0, le=0.5, description="SIFT contrast threshold (OpenCV's default 0.04 finds "
                            "no keypoint on smooth footage)")
    ratio: float = Field(0.8, gt=0, lt=1, description="Lowe's ratio test")
    ransac_px: float = Field(3.0, gt=0, description="RANSAC reprojection threshold in pixels")
    min_scale: float = Field(0.25, gt=0, description="transforms scaling less than this are rejected ...")
    max_scale: float = Field(4.0, gt=0, description="... or more than this")
    query_frames: int = Field(4, ge=1, description="query frames sampled per match")
    ref_window: float = Field(2.0, ge=0, description="seconds around the aligned reference time tried")
    mirror: bool = Field(True, description="also match the mirrored query frames (horizontal flips)")
    min_inliers: int = Field(5, ge=3, description="a match verifies at this many RANSAC inliers")
    bonus: float = Field(1.0, ge=0, description="added to a verified match's score")
    refine: bool = Field(True, description="re-draw a verified match's bounds from its frame pairs")
    frame_min: int = Field(4, ge=3, description="refinement: a frame pair counts at this many inliers")
    max_distance: float = Field(0.06, gt=0, description="refinement: reference frames whose transform is this close "
                                "to the identity set the reference bounds")
    q_extend: float = Field(2.0, ge=0, description="refinement: seconds tried beyond the query bounds")
    r_extend: float = Field(2.0, ge=0, description="refinement: seconds tried beyond the reference bounds")
    min_side: int = Field(0, ge=0, description="frames whose longer side is below this are upscaled to it for the "
                          "keypoints (0 = never)")
    second_floor: float = Field(0.0, ge=0, description="> 0: a second localisation of the candidate pairs at this "
                                "similarity floor (below copydetect.localise.floor), whose new segments are kept only "
                                "when they verify (picture-in-picture copies the descriptor finds faintly); 0 = off "
                                "(0.15: val 0.798 -> 0.834, test half +0.019 [-0.000001, +0.043], demo +0: not "
                                "adopted; docs/benchmarks.md, Copy detection, session 13)")
    second_min_side: int = Field(0, ge=0, description="the second pass's keypoints: frames upscaled to this longer "
                                 "side (0 = as min_side)")
    ref_rule: Literal["identity", "coverage"] = Field("identity", description="refinement of the reference bounds: "
                                                      "the frames reproduced up to the identity; coverage: else the "
                                                      "frames whose inliers cover most of both frames")
    views_crop: float = Field(0.5, ge=0, lt=1, description="> 0: each query frame is also described as crops of this "
                              "side x the frame (picture-in-picture insets), each searched and localised as a query "
                              "of its own; their new segments are kept only when they verify; 0 = off (0.5 on: "
                              "fresh unseen test collections pooled +0.021 [+0.007, +0.035] matching µAP, "
                              "pre-registered; docs/benchmarks.md, Copy detection, session 14)")
    views_grid: int = Field(3, ge=1, le=6, description="the crop views: grid x grid positions, corner to corner")
    views_rule: Literal["all", "new_pairs"] = Field("all", description="all: a view's verified segment is kept "
                                                    "anywhere; new_pairs: only in (query, reference) pairs without a "
                                                    "verified whole-frame match")
    views_bonus: float = Field(0.5, ge=0, description="added to a verified view segment's score (instead of bonus)")

    @model_validator(mode="after")
    def _scales(self) -> "CdVerifyParams":
        if self.min_scale >= self.max_scale:
            raise ValueError(f"copydetect.verify.min_scale {self.min_scale} must be below max_scale {self.max_scale}")
        return self


class CdEvaluateParams(StrictModel):
    compare_untrained: bool = True
    phash_baseline: bool = True
    dct_colour_baseline: bool = Field(True, description="also score the training-free DCT layout + colour "
                                      "histogram descriptor (avmatch.copydetect.dct_colour)")
    normalised_beta: float = Field(1.0, ge=0, description="β of the 'normalised' variant in the comparison "
                                                           "(the 'raw' one has β = 0)")
    beta_grid: list[float] = Field([0.25, 0.5, 0.75, 1.0], description="β values tried on the validation "
                                   "half of the queries (even positions by id); the best is reported on the other half")


class CopydetectParams(StrictModel):
    corpus: CdCorpusParams = CdCorpusParams()
    frames: CdFramesParams = CdFramesParams()
    model: CdModelParams = CdModelParams()
    descriptor: CdDescriptorParams = CdDescriptorParams()
    train: CdTrainParams = CdTrainParams()
    extract: CdExtractParams = CdExtractParams()
    candidates: CdCandidatesParams = CdCandidatesParams()
    localise: CdLocaliseParams = CdLocaliseParams()
    verify: CdVerifyParams = CdVerifyParams()
    evaluate: CdEvaluateParams = CdEvaluateParams()

    @model_validator(mode="after")
    def _descriptor_fits_vsc22(self) -> "CopydetectParams":
        dim = self.model.dim + (DCT_COLOUR_DIM if self.descriptor.kind == "trained_dct" else 0) + (self.candidates.beta > 0)
        if dim > VSC22_MAX_DIM:
            raise ValueError(f"copydetect.descriptor.kind {self.descriptor.kind} with model.dim {self.model.dim} gives "
                             f"{dim}-d descriptors (normalisation included), more than VSC22's {VSC22_MAX_DIM}: lower "
                             "model.dim or use kind trained")
        return self


SECTION = CopydetectParams
