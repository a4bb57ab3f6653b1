"""What every system shares: media decoding, the Parquet manifest and shards, the FAISS index,
tracking, configuration loading, hashing, device, progress and failures.

Nothing system-specific lives here; a system package imports the core, never another system.
Modules are imported on use, so importing this package is cheap.
"""
