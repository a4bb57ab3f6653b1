"""avmatch: content matching and retrieval in audio and video.

`avmatch.core` holds what every system shares; each system is a package of its own
(`avmatch.fingerprint`, `avmatch.copydetect`, `avmatch.versions`, `avmatch.vmr`, `avmatch.voiceface`).
See docs/architecture.md.
"""

import os

# Numba (librosa's beat tracker, pitch and onset code) compiles for the host CPU by default and caches the
# machine code beside librosa. On virtual machines that report a CPU model whose features they do not fully
# provide, that code segfaults: seen 2026-12-02 on a VM reporting AMD znver3, where librosa's beat tracker
# and tuning estimate crashed every time in a fresh environment, and never with generic code compiled into
# a cache of its own (a cache compiled for the host is reused even when the CPU name changes). The functions
# numba compiles here are a small part of any stage's time. Set before numba is first imported, inherited
# by worker processes; values the user sets win.
os.environ.setdefault("NUMBA_CPU_NAME", "generic")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(
    os.environ.get("AVMATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "avmatch"), "numba-generic"))
