"""avmatch: content matching and retrieval in audio and video.

`avmatch.core` holds what every system shares; each system is a package of its own
(`avmatch.fingerprint`, `avmatch.copydetect`, `avmatch.versions`). See docs/architecture.md.
"""
