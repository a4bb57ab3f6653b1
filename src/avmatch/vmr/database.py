"""A user's music database for video-to-music suggestions: the encoder, and every track's window
embeddings in a FAISS index (`avmatch.core.index.SegmentIndex`, one row per `window_s` window, 1 s apart).

`suggest` embeds each window of a video and scores each track by its best (video window, music window)
similarity; the music window's start minus the video window's start is the track's best offset (where
in the track the video's picture fits best). Adding tracks appends rows, never rebuilds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avmatch.core.audio import MediaError


@dataclass
class Suggestion:
    track_id: str
    path: str
    score: float
    offset_s: float      # the video's start lines up with this second of the track


class MusicDB:
    def __init__(self, root: Path, model, index, tracks: pd.DataFrame, settings: dict):
        self.root, self.model, self.index, self.tracks, self.settings = root, model, index, tracks, settings

    @classmethod
    def create(cls, root: str | Path, encoder: str | Path) -> "MusicDB":
        from avmatch.core.index import SegmentIndex
        from avmatch.vmr.model import load_encoder

        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy2(encoder, root / "encoder.pt")
        model = load_encoder(root / "encoder.pt")
        ck = __import__("torch").load(root / "encoder.pt", map_location="cpu", weights_only=True)
        extra = ck.get("extra", {})
        settings = {"sample_rate": extra.get("audio", {}).get("sample_rate", 16000), "hop": extra.get("hop", 256),
                    "fps": extra.get("frames", {}).get("fps", 8.0), "frame_size": extra.get("frames", {}).get("size", 64)}
        db = cls(root, model, SegmentIndex.create(model.out_dim, "flat"),
                 pd.DataFrame(columns=["track_id", "path", "duration_s"]), settings)
        db.save()
        return db

    @classmethod
    def load(cls, root: str | Path) -> "MusicDB":
        from avmatch.core.index import SegmentIndex
        from avmatch.vmr.model import load_encoder

        root = Path(root)
        if not (root / "settings.json").exists():
            raise FileNotFoundError(f"{root}: no vmr music database (make one with `avmatch vmr add MUSIC_DIR --db {root}`)")
        return cls(root, load_encoder(root / "encoder.pt"), SegmentIndex.load(root / "index", mmap=False),
                   pd.read_csv(root / "tracks.csv", dtype={"track_id": str}), json.loads((root / "settings.json").read_text()))

    def save(self) -> None:
        self.index.save(self.root / "index")
        self.tracks.to_csv(self.root / "tracks.csv", index=False)
        (self.root / "settings.json").write_text(json.dumps(self.settings, indent=2))

    def add(self, path: str | Path, track_id: str) -> int:
        """Embed one music file's windows and add them; returns the windows added (0: already there)."""
        from avmatch.core.audio import decode_audio
        from avmatch.vmr.features import FeatureTable
        from avmatch.vmr.model import embed_windows
        from avmatch.vmr.music_features import music_per_second

        if self.index.has_item(track_id):
            return 0
        sr = int(self.settings["sample_rate"])
        y = decode_audio(path, sr)
        if len(y) < sr:
            raise MediaError(Path(path), "shorter than one second of audio")
        feats = FeatureTable.from_rows([track_id], [music_per_second(y, sr, int(self.settings["hop"]))])
        vecs, starts = embed_windows(self.model.music, feats.matrix(0, self.model.music_families), self.model.window)
        self.index.add(vecs, pd.DataFrame({"item_id": track_id, "segment": np.arange(len(starts)),
                                           "start_s": np.asarray(starts, float)}))
        self.tracks.loc[len(self.tracks)] = [track_id, str(path), len(y) / sr]
        return len(starts)

    def suggest(self, video: str | Path, top: int = 10) -> list[Suggestion]:
        from avmatch.core.video import decode_frames
        from avmatch.vmr.features import FeatureTable
        from avmatch.vmr.model import embed_windows
        from avmatch.vmr.video_features import video_per_second

        fps = float(self.settings["fps"])
        frames = decode_frames(video, fps=fps, size=int(self.settings["frame_size"])).frames
        if len(frames) < fps:
            raise MediaError(Path(video), "shorter than one second of video")
        feats = FeatureTable.from_rows(["q"], [video_per_second(frames, fps)])
        qv, qstarts = embed_windows(self.model.video, feats.matrix(0, self.model.video_families), self.model.window)
        if self.index.ntotal == 0:
            return []
        sims, rows = self.index.search(qv, self.index.ntotal)
        codes, segs = self.index.row_item_codes, self.index.idmap["start_s"].to_numpy()
        best: dict[str, tuple[float, float]] = {}
        for qi in range(len(qv)):
            for s, r in zip(sims[qi], rows[qi]):
                if r < 0:
                    continue
                tid = self.index.item_ids[codes[r]]
                if tid not in best or s > best[tid][0]:
                    best[tid] = (float(s), float(segs[r] - qstarts[qi]))
        path = dict(zip(self.tracks["track_id"], self.tracks["path"]))
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:top]
        return [Suggestion(t, path.get(t, ""), s, off) for t, (s, off) in ranked]
