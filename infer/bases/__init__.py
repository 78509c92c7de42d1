"""Base models (`python -m infer tiny-base`, `arch`): resolving a hub id or folder, telling SD 1.5 from
SDXL, loading the img2img pipeline, and the tiny offline bases (VAE, vocabulary, pre-training).
May import: oeuvre only."""
