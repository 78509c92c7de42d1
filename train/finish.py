"""The end of a run: the LoRA (diffusers format, alpha kept) and the pivotal embedding, with metadata."""

from __future__ import annotations

from pathlib import Path

from infer.lora_files import save_embedding_file, save_lora_file
from oeuvre.config_schema import Config
from train.models import text_encoder_lora_config, unet_lora_config
from train.pivotal import embedding_file_tensors


def run_metadata(config: Config, train_images: int) -> dict[str, str]:
    return {
        "oeuvre.artist": config.artist,
        "oeuvre.base_model": config.base_model,
        "oeuvre.trigger_token": config.trigger_token,
        "oeuvre.caption": config.data.caption_template.replace("{token}", config.trigger_token),
        "oeuvre.pivotal_tuning": str(config.train.pivotal_tuning).lower(),
        "oeuvre.max_train_steps": str(config.train.max_train_steps),
        "oeuvre.train_images": str(train_images),
    }


def save_outputs(config: Config, parts, new_tokens, accelerator, paths, train_set) -> Path:
    from peft.utils import get_peft_model_state_dict

    lora_file = paths.lora / f"{config.artist}.safetensors"
    if not accelerator.is_main_process:
        return lora_file
    metadata = run_metadata(config, len(train_set))
    encoders = parts.text_encoders if config.train.train_text_encoder else []
    encoder_layers = [get_peft_model_state_dict(encoder) for encoder in encoders] + [None, None]
    save_lora_file(
        lora_file,
        arch=parts.arch,
        unet_lora_layers=get_peft_model_state_dict(accelerator.unwrap_model(parts.unet)),
        unet_lora_config=unet_lora_config(config.train),
        text_encoder_lora_layers=encoder_layers[0],
        text_encoder_2_lora_layers=encoder_layers[1],
        text_encoder_lora_config=text_encoder_lora_config(config.train) if encoders else None,
        metadata=metadata,
    )
    if new_tokens:
        save_embedding_file(
            paths.lora / f"{config.artist}_emb.safetensors",
            arch=parts.arch,
            embeddings=embedding_file_tensors(parts.arch, new_tokens),
            metadata=metadata,
        )
    accelerator.print(f"saved {lora_file}")
    return lora_file
