"""What the two dlib face experts share: the model files, face detection, and the largest face per frame.

dlib's HOG frontal face detector finds the faces; the largest one in each frame is the track's face
(a VoxCeleb face track shows one person; in a photo the largest face is the subject). The model files
come from the `face_recognition_models` package (installed with avmatch, nothing is downloaded); a
different folder can be given as the expert option `model_dir`. Models are loaded once per process and
kept; detections are cached per file, so `f_dlib` and `f_landmarks` on one track detect once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from avmatch.voiceface.experts.base import ExpertLoadError, ExpertUnavailable
from avmatch.voiceface.experts.media import load_frames

_MODELS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
_DETECTIONS: "OrderedDict[tuple, list]" = OrderedDict()


def default_model_dir() -> Path:
    import warnings

    try:
        with warnings.catch_warnings():      # it imports pkg_resources, which warns
            warnings.simplefilter("ignore")
            import face_recognition_models
    except ImportError:
        raise ExpertLoadError("dlib", "the package face_recognition_models is not installed "
                                      "(pip install face-recognition-models)") from None
    return Path(face_recognition_models.__file__).parent / "models"


def dlib_model(expert: str, kind: str, filename: str, model_dir: str | Path | None = None):
    """The dlib model `kind` ("detector", "shape", "recognition") read from `filename`, once per process."""
    try:
        import dlib
    except ImportError:
        raise ExpertLoadError(expert, "the package dlib is not installed (pip install dlib-bin)") from None
    if kind == "detector":
        key = ("detector", "hog")
    else:
        path = Path(model_dir) if model_dir else default_model_dir()
        path = path / filename
        key = (kind, str(path))
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if kind == "detector":
            model = dlib.get_frontal_face_detector()
        else:
            if not path.is_file():
                raise ExpertLoadError(expert, f"model file {path} is missing (it comes with the package "
                                              f"face-recognition-models; or set the expert option model_dir)")
            try:
                model = dlib.shape_predictor(str(path)) if kind == "shape" else \
                    dlib.face_recognition_model_v1(str(path))
            except RuntimeError as exc:
                raise ExpertLoadError(expert, f"model file {path} cannot be read ({exc})") from None
        _MODELS[key] = model
        return model


def largest_faces(path: Path, fps: float, max_frames: int, max_side: int, upsample: int) -> tuple[list, int]:
    """[(frame, dlib.rectangle)] for the frames where a face was found (the largest one), and the number
    of frames looked at. Raises ExpertUnavailable when no frame has a face."""
    frames = load_frames(path, fps, max_frames, max_side)
    from avmatch.voiceface.experts.media import _file_key

    key = (*_file_key(Path(path)), fps, max_frames, max_side, upsample)
    if key not in _DETECTIONS:
        detector = dlib_model("dlib", "detector", "")
        found = []
        for frame in frames:
            rects = detector(frame, upsample)
            if len(rects):
                found.append((frame, max(rects, key=lambda r: r.width() * r.height())))
        _DETECTIONS[key] = found
        while len(_DETECTIONS) > 4:
            _DETECTIONS.popitem(last=False)
    found = _DETECTIONS[key]
    if not found:
        raise ExpertUnavailable(f"no face found in {len(frames)} frame{'s' * (len(frames) != 1)}")
    return found, len(frames)


class _DlibExpert:
    modality = "face"

    def __init__(self, fps: float = 1.0, max_frames: int = 30, max_side: int = 640, upsample: int = 1,
                 model_dir: str | None = None):
        self.fps, self.max_frames, self.max_side, self.upsample = float(fps), int(max_frames), int(max_side), int(upsample)
        self.model_dir = model_dir
        dlib_model(self.name, "detector", "")

    def faces(self, path: Path) -> list:
        return largest_faces(Path(path), self.fps, self.max_frames, self.max_side, self.upsample)[0]


class DlibDescriptor(_DlibExpert):
    """f_dlib: dlib's ResNet face descriptor (128-d; 99.38 % on LFW), the mean over the frames' largest
    faces, unit length. The face is aligned by the 5-point shape predictor, as dlib intends."""

    name, dim = "f_dlib", 128

    def __init__(self, jitter: int = 0, **kw):
        super().__init__(**kw)
        self.jitter = int(jitter)
        self.shape = dlib_model(self.name, "shape", "shape_predictor_5_face_landmarks.dat", self.model_dir)
        self.rec = dlib_model(self.name, "recognition", "dlib_face_recognition_resnet_model_v1.dat", self.model_dir)

    def embed(self, path: Path) -> np.ndarray:
        from avmatch.voiceface.experts.base import unit

        descs = [np.asarray(self.rec.compute_face_descriptor(img, self.shape(img, rect), self.jitter))
                 for img, rect in self.faces(path)]
        return unit(np.mean(descs, axis=0))


LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)


class DlibLandmarks(_DlibExpert):
    """f_landmarks: the face's shape -- dlib's 68 landmarks, centred between the eyes, rotated so the
    eyes are level and measured in inter-ocular distances (136 numbers), averaged over the frames. A
    deterministic geometric description, independent of the descriptor network: a second opinion."""

    name, dim = "f_landmarks", 136

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shape = dlib_model(self.name, "shape", "shape_predictor_68_face_landmarks.dat", self.model_dir)

    def embed(self, path: Path) -> np.ndarray:
        shapes = []
        for img, rect in self.faces(path):
            s = self.shape(img, rect)
            p = np.array([(s.part(i).x, s.part(i).y) for i in range(68)], dtype=np.float64)
            left, right = p[LEFT_EYE].mean(0), p[RIGHT_EYE].mean(0)
            d = right - left
            iod = float(np.hypot(*d))
            if iod < 1.0:
                continue
            c, s_ = d / iod
            rot = np.array([[c, s_], [-s_, c]])
            shapes.append(((p - (left + right) / 2) @ rot.T / iod).ravel())
        if not shapes:
            raise ExpertUnavailable("no face with both eyes located")
        return np.mean(shapes, axis=0).astype(np.float32)
