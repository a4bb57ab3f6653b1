"""Audio fingerprinting: which recording an excerpt comes from, and where (NAFP line)."""
