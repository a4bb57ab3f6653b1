"""The video-to-music retrieval pipeline stages (dvc.yaml: vmr_*)."""
