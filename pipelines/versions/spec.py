"""The version identification pipeline: where its files live, what it registers and what its schedule watches."""

from pipelines.registry import PipelineSpec
from pipelines.versions.paths import VersionsPaths

SPEC = PipelineSpec(
    "pipelines.versions", VersionsPaths, model_attr="encoder", register_after="evaluate",
    reevaluate="evaluate:reevaluate",
    watch=(("track_MAP", "max"), ("segment_MAP", "max"), ("track_MR1", "min")))
