"""Prior preservation (DreamBooth): class images keep the model's idea of 'a painting' while it learns
the artist. Taken from a folder, the missing ones generated with the base model itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from oeuvre.atomic import atomic_write_bytes, png_bytes
from oeuvre.config_schema import Config
from oeuvre.paths import RunPaths
from train.images import IMAGE_SUFFIXES, ArtistImages


def class_folder(config: Config) -> Path:
    return Path(config.train.class_data_dir or RunPaths(config.output_dir).root / "class_images")


def class_images(config: Config, parts, buckets, accelerator) -> ArtistImages:
    cfg = config.train
    folder = class_folder(config)
    existing = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES] if folder.is_dir() else []
    missing = cfg.num_class_images - len(existing)
    if missing > 0 and cfg.generate_class_images and accelerator.is_main_process:
        generate(
            parts,
            cfg.class_prompt,
            folder,
            len(existing),
            missing,
            cfg.resolution_px,
            config.seed,
            accelerator.device,
        )
    accelerator.wait_for_everyone()
    return ArtistImages.from_folder(folder, cfg.class_prompt, buckets)


def generate(
    parts, prompt: str, folder: Path, first: int, count: int, size_px: int, seed: int, device
) -> None:
    """Before any LoRA is attached: the base model's own answer to the class prompt."""
    from tqdm.auto import tqdm

    for number in tqdm(range(first, first + count), desc="class images"):
        with torch.no_grad():
            image = parts.pipe(
                prompt,
                height=size_px,
                width=size_px,
                num_inference_steps=25,
                generator=torch.Generator().manual_seed(seed + number),
            ).images[0]
        data = png_bytes(image)
        atomic_write_bytes(folder / f"class-{number:05d}-{hashlib.sha256(data).hexdigest()[:8]}.png", data)
