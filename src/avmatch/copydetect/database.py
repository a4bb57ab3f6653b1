"""A copy detection database for `avmatch copydetect query`: the trained encoder, the reference and
noise descriptors (VSC22 npz) and the settings the pipeline evaluated, in one folder.

The pipeline's extract stage writes it (`data/copydetect/db`), so a user query is answered exactly
like the evaluated queries: same 1 fps frames, descriptors, normalisation and localisation.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avmatch.copydetect.metrics import Match, VideoFeatures
from avmatch.copydetect.vsc_npz import read_vsc_npz, write_vsc_npz


@dataclass
class CopyDB:
    root: Path
    settings: dict
    refs: list[VideoFeatures]
    noise: np.ndarray

    @classmethod
    def create(cls, root: str | Path, encoder: Path, refs: list[VideoFeatures], noise: list[VideoFeatures],
               settings: dict) -> "CopyDB":
        """Write the folder (replacing an older one atomically)."""
        root = Path(root)
        tmp = root.with_name(root.name + f".{os.getpid()}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        shutil.copy2(encoder, tmp / "encoder.pt")
        write_vsc_npz(tmp / "refs.npz", refs)
        write_vsc_npz(tmp / "noise.npz", noise)
        (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
        return cls.load(root)

    @classmethod
    def load(cls, root: str | Path) -> "CopyDB":
        root = Path(root)
        if not (root / "settings.json").exists():
            raise FileNotFoundError(f"{root}: not a copy detection database (run `dvc repro copydetect_extract` "
                                    "or give --db the pipeline's data/copydetect/db folder)")
        noise = read_vsc_npz(root / "noise.npz")
        vecs = np.concatenate([n.features for n in noise]) if noise else np.zeros((0, 1), np.float32)
        return cls(root, json.loads((root / "settings.json").read_text()), read_vsc_npz(root / "refs.npz"), vecs)

    def query(self, video: str | Path, min_score: float | None = None) -> list[Match]:
        """Copied segments of one video file (MediaError when it cannot be decoded)."""
        from avmatch.copydetect.localisation import detect_copies
        from avmatch.copydetect.model import embed_frames, load_frame_encoder
        from avmatch.core.video import decode_frames

        s = self.settings
        dec = decode_frames(video, fps=s["fps"], size=s["frame_size"])
        model = load_frame_encoder(self.root / "encoder.pt")
        q = VideoFeatures(Path(video).stem, dec.timestamps, embed_frames(model, dec.frames))
        _, matches = detect_copies([q], self.refs, self.noise, s["beta"], s["k"], s["max_pairs_per_query"],
                                   **s["localise"])
        floor = s.get("min_score", 0.0) if min_score is None else min_score
        return sorted((m for m in matches if m.score >= floor), key=lambda m: -m.score)
