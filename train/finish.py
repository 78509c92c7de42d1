"""The end of a run: runs/<artist>/lora/ with the LoRA in diffusers and kohya (A1111/ComfyUI) layouts,
the pivotal embedding, the same metadata in every file, sample images and the Hub model card."""

from __future__ import annotations

import shutil
from pathlib import Path

from infer.lora.files import save_embedding_file, save_lora_file
from infer.lora.metadata import for_file, run_metadata
from infer.lora.model_card import write_model_card
from infer.lora.tools import load_lora, save_lora
from oeuvre.config_schema import Config
from train.blocks import block_patterns
from train.models import text_encoder_lora_config, unet_lora_config
from train.pivotal import embedding_file_tensors


def copy_latest_samples(samples_dir: Path, lora_dir: Path) -> list[str]:
    """The newest validation grid, copied beside the LoRA for the card; paths relative to lora_dir."""
    grids = sorted(samples_dir.glob("step-*.png"))
    if not grids:
        return []
    target = lora_dir / "samples" / grids[-1].name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grids[-1], target)
    return [target.relative_to(lora_dir).as_posix()]


def save_outputs(
    config: Config, parts, new_tokens, accelerator, paths, train_set, holdout_works=None
) -> Path:
    from peft.utils import get_peft_model_state_dict

    lora_file = paths.lora / f"{config.artist}.safetensors"
    if not accelerator.is_main_process:
        return lora_file
    metadata = run_metadata(
        config,
        arch=parts.arch,
        captions=[row["text"] for row in train_set.rows],
        image_sha256s=[row["sha256"] for row in train_set.rows],
        holdout_works=holdout_works,
        prediction_type=parts.noise_scheduler.config.prediction_type,
        lora_blocks=block_patterns(config.train, parts.unet.config, parts.arch),
        masked_works=sum(row.get("mask_file") is not None for row in train_set.rows),
    )
    encoders = parts.text_encoders if config.train.train_text_encoder else []
    encoder_layers = [get_peft_model_state_dict(encoder) for encoder in encoders] + [None, None]
    save_lora_file(
        lora_file,
        arch=parts.arch,
        unet_lora_layers=get_peft_model_state_dict(accelerator.unwrap_model(parts.unet)),
        unet_lora_config=unet_lora_config(config.train, parts),
        text_encoder_lora_layers=encoder_layers[0],
        text_encoder_2_lora_layers=encoder_layers[1],
        text_encoder_lora_config=text_encoder_lora_config(config.train) if encoders else None,
        metadata=for_file(metadata, {}, "diffusers"),  # save_lora_file hashes the tensors it writes
    )
    # The kohya/LyCORIS layout (A1111, ComfyUI), DoRA included (`.dora_scale`).
    kohya_file = save_lora(load_lora(lora_file), paths.lora / f"{config.artist}.kohya.safetensors", "kohya")
    embedding_file = None
    if new_tokens:
        embeddings = embedding_file_tensors(parts.arch, new_tokens)
        embedding_file = save_embedding_file(
            paths.lora / f"{config.artist}_emb.safetensors",
            arch=parts.arch,
            embeddings=embeddings,
            metadata=for_file(metadata, embeddings, "embedding"),
        )
    write_model_card(
        paths.lora,
        metadata,
        diffusers_file=lora_file.name,
        kohya_file=kohya_file.name,
        embedding_file=embedding_file.name if embedding_file else None,
        sample_images=copy_latest_samples(paths.samples, paths.lora),
    )
    accelerator.print(f"saved {lora_file} and {kohya_file.name}")
    return lora_file
