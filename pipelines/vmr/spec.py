"""The video-to-music retrieval pipeline: where its files live, what it registers and what its schedule watches."""

from pipelines.registry import PipelineSpec
from pipelines.vmr.paths import VmrPaths

SPEC = PipelineSpec("pipelines.vmr", VmrPaths, model_attr="encoder", register_after="evaluate",
                    reevaluate="evaluate:reevaluate", watch=(("v2m_R_at_10", "max"), ("m2v_R_at_10", "max")))
