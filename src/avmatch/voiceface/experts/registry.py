"""Which experts exist, and loading them once per process.

Adding an expert = one module with a class that has `name`, `modality`, `dim` and `embed(path)`, plus
one line in `EXPERTS` below (and, when it takes options, an entry under params.yaml
`voiceface.experts.options`). Options are the class's keyword arguments:

- v_resemblyzer: min_speech_s (1.0), max_seconds (120), min_energy_std_db (1.0), weights (path; default:
  the wheel's pretrained.pt)
- v_mfcc: n_mfcc (40), n_mels (64), min_speech_s (1.0), max_seconds (120), vad_mode (3), min_energy_std_db (1.0)
- f_dlib: fps (1.0), max_frames (30), max_side (640), upsample (1), model_dir (default:
  face_recognition_models' models/), jitter (0)
- f_landmarks: fps, max_frames, max_side, upsample, model_dir as f_dlib
"""

from __future__ import annotations

import importlib
import json
import threading

from avmatch.voiceface.experts.base import Expert, ExpertLoadError

EXPERTS: dict[str, str] = {
    "v_resemblyzer": "avmatch.voiceface.experts.voices:ResemblyzerVoice",
    "v_mfcc": "avmatch.voiceface.experts.voices:MfccVoice",
    "f_dlib": "avmatch.voiceface.experts.dlib_faces:DlibDescriptor",
    "f_landmarks": "avmatch.voiceface.experts.dlib_faces:DlibLandmarks",
}

_LOADED: dict[tuple[str, str], Expert] = {}
_LOCK = threading.Lock()


def available_experts() -> list[str]:
    """The names `load_expert` knows (whether each loads here is found out by loading it)."""
    return sorted(EXPERTS)


def load_expert(name: str, options: dict | None = None) -> Expert:
    """The expert `name` built with `options`, once per process per distinct options.

    Raises ExpertLoadError (with the reason) when the name is unknown, an option is wrong or the
    model cannot be loaded."""
    options = dict(options or {})
    key = (name, json.dumps(options, sort_keys=True, default=str))
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
    if name not in EXPERTS:
        raise ExpertLoadError(name, f"unknown expert; available: {', '.join(available_experts())}")
    module, cls = EXPERTS[name].split(":")
    try:
        factory = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ExpertLoadError(name, f"its module cannot be imported ({exc})") from None
    try:
        expert = factory(**options)
    except TypeError as exc:
        raise ExpertLoadError(name, f"wrong options {sorted(options)} ({exc})") from None
    with _LOCK:
        _LOADED[key] = expert
    return expert
