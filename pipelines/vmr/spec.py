"""The video-to-music retrieval pipeline: where its files live and what it registers."""

from pipelines.registry import PipelineSpec
from pipelines.vmr.paths import VmrPaths

SPEC = PipelineSpec("pipelines.vmr", VmrPaths, model_attr="encoder", register_after="evaluate",
                    watch=(("v2m_R_at_10", "max"), ("m2v_R_at_10", "max")))
