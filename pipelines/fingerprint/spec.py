"""The fingerprint pipeline: where its files live, what it registers and what its schedule watches."""

from pipelines.fingerprint.paths import FingerprintPaths
from pipelines.registry import PipelineSpec

SPEC = PipelineSpec(
    "pipelines.fingerprint", FingerprintPaths, model_attr="encoder", register_after="evaluate",
    reevaluate="evaluate:reevaluate",
    watch=(("track_hit_rate_3s", "max"), ("track_hit_rate_5s", "max"), ("segment_exact_3s", "max"),
           ("false_match_rate", "min")))
