"""The voice-face pipeline: where its files live, what it registers and what its schedule watches."""

from pipelines.registry import PipelineSpec
from pipelines.voiceface.paths import VoicefacePaths

SPEC = PipelineSpec("pipelines.voiceface", VoicefacePaths, model_attr="model", register_after="evaluate",
                    reevaluate="evaluate:reevaluate", watch=(("auc", "max"), ("auc_g", "max")))
