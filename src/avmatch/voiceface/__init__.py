"""Voice-face association (EFT, ICME 2023): several pretrained expert embeddings per voice track and per
face track fused by a small transformer into one shared space, evaluated as VoxCeleb1 cross-modal
verification, 1:2 and 1:N matching and retrieval."""
