"""The curated dataset as the trainer sees it: captions, buckets and pixel tensors.

Reads the imagefolder that `python -m data` writes (`train/` and `holdout/`, each with
metadata.jsonl) through `datasets`, one split at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from oeuvre.errors import OeuvreError
from train.buckets import nearest_bucket
from train.masks import mask_digest, mask_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


class DatasetError(OeuvreError):
    exit_code = 2


@dataclass
class Example:
    caption: str
    key: str  # content hash: names its cached latents
    bucket: tuple[int, int]
    size: tuple[int, int]  # (width, height) from the metadata, known without decoding
    load: Callable[[], Image.Image]
    mask_file: Path | None = None  # what to learn (white) and not (black); None: all of it

    @cached_property
    def image(self) -> Image.Image:
        """Decoded on first use only: a step whose latents are cached never decodes its image."""
        return self.load()


class ArtistImages:
    """One split of the curated dataset (or a folder of class images), each image tied to its bucket."""

    def __init__(self, rows: list[dict], buckets: list[tuple[int, int]], origin: str):
        if not rows:
            raise DatasetError(f"{origin}: no images")
        self.rows = rows
        self.origin = origin
        self.bucket_of = [nearest_bucket(r["width"], r["height"], buckets) for r in rows]

    @classmethod
    def from_split(cls, dataset_dir: Path, split: str, buckets, hint: str) -> ArtistImages:
        from datasets import load_dataset

        folder = dataset_dir / split
        if not (folder / "metadata.jsonl").is_file():
            raise DatasetError(f"{folder}: no curated '{split}' split (metadata.jsonl missing); {hint}")
        # data_files names the split: imagefolder knows no 'holdout' split, and loading a split's
        # folder on its own as data_dir silently drops its metadata.jsonl.
        dataset = load_dataset(
            "imagefolder", data_dir=str(dataset_dir), data_files={split: f"{split}/**"}, split=split
        )
        if len(dataset) == 0:
            raise DatasetError(f"{folder}: the '{split}' split is empty; {hint}")
        columns = set(dataset.column_names)
        if not {"text", "sha256", "width", "height"} <= columns:
            raise DatasetError(
                f"{folder}/metadata.jsonl: expected columns file_name, text, sha256, width, height; "
                f"got {sorted(columns)}; {hint}"
            )
        # Images decode lazily, one at a time; only the small columns are read up front.
        meta = dataset.select_columns(["text", "sha256", "width", "height"]).to_list()
        rows = [dict(m, load=lambda i=i: dataset[i]["image"]) for i, m in enumerate(meta)]
        for row in rows:
            path = mask_path(dataset_dir, row["sha256"])
            if path.is_file():  # the mask is part of the key: cached latents carry it
                row.update(mask_file=path, key=f"{row['sha256']}-mask-{mask_digest(path)}")
        return cls(rows, buckets, str(folder))

    @classmethod
    def from_folder(cls, folder: Path, caption: str, buckets) -> ArtistImages:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        rows = []
        for path in files:
            with Image.open(path) as opened:
                width, height = ImageOps.exif_transpose(opened).size
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            rows.append(
                {
                    "text": caption,
                    "sha256": digest,
                    "width": width,
                    "height": height,
                    "load": lambda p=path: _open(p),
                }
            )
        return cls(rows, buckets, str(folder))

    def __len__(self) -> int:
        return len(self.rows)

    def example(self, index: int, bucket: tuple[int, int] | None = None) -> Example:
        row = self.rows[index]
        bucket = bucket or self.bucket_of[index]
        size = (row["width"], row["height"])
        return Example(row["text"], self.key(index), bucket, size, row["load"], row.get("mask_file"))

    def key(self, index: int) -> str:
        """Names the work's cached latents: its content hash, and its mask's when it has one."""
        return self.rows[index].get("key", self.rows[index]["sha256"])


def _open(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def to_bucket(
    image: Image.Image, bucket: tuple[int, int], center_crop: bool, flip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize to cover the bucket, crop to it, maybe flip; pixels in [-1, 1], CHW, and the crop's
    top-left corner (SDXL conditions on it)."""
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    resized = image.convert("RGB").resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.BICUBIC
    )
    spare_x, spare_y = resized.width - width, resized.height - height
    if center_crop:
        left, top = spare_x // 2, spare_y // 2
    else:
        left = int(torch.randint(spare_x + 1, (1,), generator=generator))
        top = int(torch.randint(spare_y + 1, (1,), generator=generator))
    cropped = resized.crop((left, top, left + width, top + height))
    if flip:
        cropped = ImageOps.mirror(cropped)
    pixels = torch.from_numpy(np.asarray(cropped, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    return pixels, (top, left)
