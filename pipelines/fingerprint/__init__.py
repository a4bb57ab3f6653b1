"""Neural audio fingerprinting pipeline (NAFP-style)."""
