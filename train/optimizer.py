"""The optimiser over the trained weights: the UNet LoRA, text-encoder LoRAs and pivotal tokens,
each with its own learning rate."""

from __future__ import annotations

import logging

import torch

from oeuvre.config_schema import TrainConfig
from train.models import Components, lora_parameters
from train.pivotal import NewTokens

log = logging.getLogger("oeuvre.train")


def make_optimizer(cfg: TrainConfig, parts: Components, trained_encoders, new_tokens: list[NewTokens]):
    groups = [{"params": lora_parameters(parts.unet), "lr": cfg.lr, "weight_decay": cfg.adam_weight_decay}]
    for encoder in trained_encoders:
        lora = lora_parameters(encoder)
        if lora:
            groups.append({"params": lora, "lr": cfg.text_encoder_lr, "weight_decay": cfg.adam_weight_decay})
    if new_tokens:
        groups.append({"params": [t.weight for t in new_tokens], "lr": cfg.embedding_lr, "weight_decay": 0.0})
    cls = optimizer_class(cfg.use_8bit_adam)
    params = [p for group in groups for p in group["params"]]
    if cls is torch.optim.AdamW and all(p.device.type in ("cpu", "cuda") for p in params):
        # One fused kernel for all parameters instead of a Python loop over a few hundred small
        # LoRA tensors: a fifth of a tiny CPU step went to the optimiser's loop.
        return cls(groups, fused=True)
    return cls(groups)


def optimizer_class(use_8bit_adam: bool):
    if use_8bit_adam:
        if torch.cuda.is_available():
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit
            except ImportError:
                log.warning(
                    "train.use_8bit_adam: bitsandbytes is not installed (pip install bitsandbytes); "
                    "using torch AdamW"
                )
        else:
            log.warning("train.use_8bit_adam: 8-bit AdamW needs CUDA; using torch AdamW on this device")
    return torch.optim.AdamW
