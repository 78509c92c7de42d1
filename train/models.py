"""Load the base pipeline's parts for training and put LoRA adapters on them (peft, natively)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infer.bases.resolve import check_tokenizers, detect_arch
from oeuvre.config_schema import TrainConfig
from oeuvre.errors import BaseModelError

TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class Components:
    """The text-to-image pipeline (it encodes prompts with diffusers' own code) and its training scheduler."""

    arch: str
    pipe: object
    noise_scheduler: object

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def text_encoders(self) -> list:
        return [
            m for m in (self.pipe.text_encoder, getattr(self.pipe, "text_encoder_2", None)) if m is not None
        ]

    @property
    def tokenizers(self) -> list:
        return [t for t in (self.pipe.tokenizer, getattr(self.pipe, "tokenizer_2", None)) if t is not None]


def load_components(base_model: str) -> Components:
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    arch = detect_arch(base_model)
    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    extra = {"safety_checker": None, "requires_safety_checker": False} if arch == "sd15" else {}
    try:
        pipe = cls.from_pretrained(base_model, use_safetensors=True, **extra)
        noise_scheduler = DDPMScheduler.from_pretrained(base_model, subfolder="scheduler")
    except OSError as exc:
        raise BaseModelError(f"base_model {base_model}: could not load the pipeline ({exc})") from exc
    check_tokenizers(pipe, base_model)
    return frozen_components(arch, pipe, noise_scheduler)


def frozen_components(arch: str, pipe, noise_scheduler) -> Components:
    """The pipeline ready for LoRA training: every base weight frozen, sampling progress bars off."""
    parts = Components(arch, pipe, noise_scheduler)
    pipe.set_progress_bar_config(disable=True)
    for module in (parts.unet, parts.vae, *parts.text_encoders):
        module.requires_grad_(False)
    return parts


def lora_config(cfg: TrainConfig, target_modules: list[str]):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        init_lora_weights="gaussian",
        target_modules=target_modules,
        use_dora=cfg.use_dora,
    )


def unet_lora_config(cfg: TrainConfig, components: Components):
    """train.lora_target_modules in every block, or in the blocks train.lora_blocks picks."""
    from train.blocks import unet_target_modules

    return lora_config(cfg, unet_target_modules(cfg, components.unet, components.arch))


def text_encoder_lora_config(cfg: TrainConfig):
    return lora_config(cfg, TEXT_ENCODER_TARGETS)


def add_lora_adapters(components: Components, cfg: TrainConfig) -> None:
    """LoRA on the UNet (diffusers' add_adapter) and, optionally, on the text encoders.

    transformers 5.24's text_encoder.add_adapter needs a peft we cannot have, so the text encoders
    get theirs from peft's own inject_adapter_in_model."""
    from peft import inject_adapter_in_model

    try:
        components.unet.add_adapter(unet_lora_config(cfg, components))
    except ValueError as exc:
        raise BaseModelError(f"train.lora_target_modules {list(cfg.lora_target_modules)}: {exc}") from exc
    if cfg.train_text_encoder:
        for encoder in components.text_encoders:
            inject_adapter_in_model(text_encoder_lora_config(cfg), encoder)


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in module.named_parameters() if p.requires_grad and "lora_" in n]
