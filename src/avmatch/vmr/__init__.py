"""Video-to-music retrieval (VM-NET / OF-VM-Net line): music videos in, a shared video-music embedding out."""
