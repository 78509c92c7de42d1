"""Everything about a training run that can be checked before a model loads, checked first."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from infer.bases.resolve import detect_arch
from oeuvre.config_schema import Config
from oeuvre.errors import ConfigError
from oeuvre.paths import RunPaths
from train.images import IMAGE_SUFFIXES, DatasetError

log = logging.getLogger("oeuvre.train")


@dataclass(frozen=True)
class Plan:
    arch: str
    dataset_dir: Path
    hint: str
    cache_latents: bool
    cache_text_embeddings: bool
    has_holdout: bool = True  # False: data.holdout_fraction=0, trained without holdout validation


def check(config: Config) -> Plan:
    cfg = config.train
    dataset_dir = RunPaths(config.output_dir).dataset
    hint = f"build it first with `python -m data <config>` (or `make data ARTIST={config.artist}`)"
    empty = set()
    for split in ("train", "holdout"):
        metadata = dataset_dir / split / "metadata.jsonl"
        if not metadata.is_file():
            raise DatasetError(
                f"{metadata}: missing; expected a curated dataset with a '{split}' split; {hint}"
            )
        if not metadata.read_text(encoding="utf-8").strip():
            empty.add(split)
    if "train" in empty:
        raise DatasetError(f"{dataset_dir / 'train' / 'metadata.jsonl'}: empty (no training images); {hint}")
    if "holdout" in empty:  # a user with a handful of works who wants all of them for training
        log.warning(
            "no holdout works (data.holdout_fraction=0): training without holdout validation loss; "
            "the model card says so, and `infer evaluate` has nothing to measure style against"
        )
    if cfg.resolution_px < 64:
        raise ConfigError(
            f"train.resolution_px {cfg.resolution_px}: expected at least 64 (one bucket is 64 px)"
        )
    if cfg.with_prior_preservation and cfg.class_data_dir and not cfg.generate_class_images:
        folder = Path(cfg.class_data_dir)
        if not folder.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*")):
            raise ConfigError(
                f"train.class_data_dir {folder}: no class images, and train.generate_class_images is false; "
                "add images there or set train.generate_class_images=true"
            )
    arch = detect_arch(config.base_model)  # reads model_index.json only
    return Plan(arch, dataset_dir, hint, *cache_decisions(config), has_holdout="holdout" not in empty)


def cache_decisions(config: Config) -> tuple[bool, bool]:
    """Caches stay off where they would be wrong, and say why."""
    cfg = config.train
    cache_latents = cfg.cache_latents
    if cache_latents and (cfg.random_flip or not cfg.center_crop):
        log.warning("latents not cached: random flips/crops change the pixels every step")
        cache_latents = False
    cache_text = cfg.cache_text_embeddings
    if cache_text and (cfg.train_text_encoder or cfg.pivotal_tuning):
        why = (
            "the text encoder trains"
            if cfg.train_text_encoder
            else "pivotal tuning trains the token embeddings"
        )
        log.warning("text embeddings not cached: %s", why)
        cache_text = False
    return cache_latents, cache_text
