"""The copy detection (VSC22) pipeline: where its files live, what it registers and what its schedule watches."""

from pipelines.copydetect.paths import CopydetectPaths
from pipelines.registry import PipelineSpec

SPEC = PipelineSpec(
    "pipelines.copydetect", CopydetectPaths, model_attr="encoder", register_after="evaluate",
    reevaluate="evaluate:reevaluate",
    watch=(("descriptor_uap", "max"), ("matching_uap", "max"), ("pairwise_uap", "max")))
