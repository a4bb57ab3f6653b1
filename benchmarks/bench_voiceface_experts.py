#!/usr/bin/env python
"""Voice-face experts on real packaged media: do the pretrained experts do what they are used for?

`avmatch.voiceface.media_check.run_media_check` runs the real experts end to end:

* Faces: the face_recognition sdist's test photos (Barack Obama x5 incl. two partial faces, Joe Biden)
  and scikit-image's astronaut (Eileen Collins); photos without a face: scikit-image coffee, rocket,
  chelsea (a cat). Faces found; f_dlib cosine of each photo with its 90 % centre crop and with a JPEG
  quality-30 re-encoding; same-person vs different-person f_dlib cosines.
* Voices: Debian's Asterisk voice prompts, five professional speakers (all women; en-US, fr-CA, fr,
  es-CO, it), the first N prompts of 2.5-8 s each (sorted by name). Per voice expert: mean cosine of
  same-speaker and different-speaker prompt pairs, and the fraction of (same pair, different pair)
  combinations where the same-speaker pair is the closer (an AUC).
* Speed: mean ms per track of each expert (decode included), on --threads torch threads.

The material is fetched once into the avmatch cache (pip download / apt-get download); what cannot be
had is listed, never replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import Report, add_common_args, quiet_env, set_threads  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-speaker", type=int, default=8, help="prompts per speaker (default 8)")
    add_common_args(p)
    args = p.parse_args(argv)
    quiet_env(args.verbose, args.quick)
    set_threads(args.threads)
    from avmatch.voiceface.media_check import SPEAKERS, run_media_check

    rep = Report("voiceface_experts", "Voice-face experts on real packaged media", args)
    rep.refresh_machine()
    if args.quick:
        r = run_media_check(per_speaker=2, speakers=["allison", "june"], photos=["obama", "biden", "coffee"])
    else:
        r = run_media_check(per_speaker=args.per_speaker, speakers=list(SPEAKERS))
    if "face_photos" in r:
        rep.table([{"photos with a face": r["face_photos"], "faces found": r["faces_found"],
                    "photos without": r["no_face_photos"], "false faces": len(r["false_faces"]),
                    "cos crop 90 % (mean / min)": f"{r['f_dlib_cos_crop90_mean']:.4f} / {r['f_dlib_cos_crop90_min']:.4f}",
                    "cos JPEG q30 (mean / min)": f"{r['f_dlib_cos_jpeg30_mean']:.4f} / {r['f_dlib_cos_jpeg30_min']:.4f}",
                    "same person cos": r["f_dlib_identity"]["same_mean"],
                    "other person cos": r["f_dlib_identity"]["diff_mean"],
                    "same closer": r["f_dlib_identity"]["same_closer"]}],
                  caption="f_dlib on real photos (face_recognition test images, scikit-image astronaut; "
                          "no-face: coffee, rocket, cat)")
    rows = []
    for name in ("v_resemblyzer", "v_mfcc"):
        s = r[name]
        rows.append({"expert": name, "speakers": len(r["speakers"]), "prompts": sum(r["speakers"].values()),
                     "same-speaker pairs": s["same_pairs"], "different-speaker pairs": s["diff_pairs"],
                     "same cos": s["same_mean"], "different cos": s["diff_mean"], "same closer": s["same_closer"],
                     "no vector": len(s["unavailable"])})
    rep.table(rows, caption="Voice experts on real speech (Debian Asterisk prompts: Allison, June, Armelle, "
                            "July, Menardi; 2.5-8 s each)")
    rep.table([{"expert": n, "ms per track": ms} for n, ms in r["speed_ms"].items()],
              caption="Speed (decode + embed, mean over the tracks above; f_landmarks reuses f_dlib's detections)")
    if r["notes"]:
        rep.add("Material not available: " + "; ".join(r["notes"]))
    rep.data = r
    rep.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
