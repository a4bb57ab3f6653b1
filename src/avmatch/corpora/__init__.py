"""Offline demo corpora built from real material that packages ship (no downloads at run time
beyond Debian packages fetched with `apt-get download`).

- `debian`: fetch + unpack Debian packages into `$AVMATCH_CACHE/debs` without installing them.
- `music21_render`: music21 scores -> MIDI -> FluidSynth audio, with parse cache and variation.
- `fingerprint`: `build_fingerprint_corpus(params, root)` for the audio-fingerprinting pipeline.

Modules are imported on use; importing this package is cheap.
"""
