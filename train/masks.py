"""Masked loss: what of a work the LoRA should learn (1) and what not (0: frames, museum borders,
signatures, colour charts).

A work's mask is `<dataset>/masks/<sha256>.png` (greyscale), written by `python -m data` from the
source's alpha channel, a sidecar `<name>.mask.png` or a detected uniform border. The trainer crops it
exactly as it crops the work, averages it down to the latent grid and weights the per-pixel loss by
`floor + (1 - floor) * mask`, so a masked-out region still weighs `train.mask_floor_weight`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from oeuvre.paths import MASKS_FOLDER


def mask_path(dataset_dir: Path, sha256: str) -> Path:
    return dataset_dir / MASKS_FOLDER / f"{sha256}.png"


def mask_digest(path: Path) -> str:
    """Part of a masked work's cache key: a changed mask never reuses a stale cached one."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def open_mask(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("L")


def mask_to_bucket(
    mask: Image.Image,
    size: tuple[int, int],
    bucket: tuple[int, int],
    corner: tuple[int, int],
    flip: bool,
) -> torch.Tensor:
    """The mask resized, cropped and flipped as `to_bucket` did the work (corner = its (top, left)):
    [1, H, W] in [0, 1]."""
    width, height = bucket
    scale = max(width / size[0], height / size[1])
    resized = (max(width, round(size[0] * scale)), max(height, round(size[1] * scale)))
    top, left = corner
    cropped = mask.resize(resized, Image.BILINEAR).crop((left, top, left + width, top + height))
    if flip:
        cropped = ImageOps.mirror(cropped)
    return torch.from_numpy(np.asarray(cropped, dtype=np.float32) / 255.0)[None]


def to_latent_grid(mask: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """[..., 1, H, W] pixel mask -> the share of each latent cell that is to be learnt."""
    if tuple(mask.shape[-2:]) == tuple(latent_hw):
        return mask
    flat = mask.reshape(-1, 1, *mask.shape[-2:])
    return F.interpolate(flat, size=latent_hw, mode="area").reshape(*mask.shape[:-2], *latent_hw)


def loss_weights(mask: torch.Tensor, floor: float) -> torch.Tensor:
    return floor + (1.0 - floor) * mask
