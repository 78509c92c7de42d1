"""A tiny trained run (curated-layout dataset with holdout, a few training steps) for evaluation tests."""

from __future__ import annotations

from pathlib import Path

from train_helpers import train_config, train_in_process, write_dataset

from oeuvre.config import config_to_yaml

TOKEN = "<demo-artist>"


def train_tiny_run(root: Path, base: Path) -> Path:
    """runs/<artist>-like folder: dataset (4 train, 2 holdout), config.yaml, a 2-step LoRA, 1 checkpoint."""

    write_dataset(root / "dataset", TOKEN, n_train=4, n_holdout=2)
    config = train_config(
        root,
        base,
        "train.max_train_steps=2",
        "train.checkpoint_every=1",
        "train.validation_prompts=[]",
        "infer.size_px=64",
        "infer.strength=0.5",
    )
    (root / "config.yaml").write_text(config_to_yaml(config))
    train_in_process(config)
    return root
