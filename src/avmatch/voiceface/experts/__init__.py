"""Pretrained "expert" embeddings of voice and face tracks (EFT's inputs), computed from real media.

`load_expert(name, options)` gives one expert (see `registry.py` for the list and their options);
`extract_experts` runs several over a corpus's tracks and writes one Parquet file per expert.
"""

from avmatch.voiceface.experts.base import Expert, ExpertLoadError, ExpertUnavailable
from avmatch.voiceface.experts.extract import extract_experts, read_expert_vectors
from avmatch.voiceface.experts.registry import EXPERTS, available_experts, load_expert

__all__ = ["Expert", "ExpertLoadError", "ExpertUnavailable", "EXPERTS", "available_experts", "load_expert",
           "extract_experts", "read_expert_vectors"]
