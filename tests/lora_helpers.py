"""Random LoRAs and embeddings for the tiny bases, saved with our own `save_lora_file`.

lora_B starts non-zero (peft starts it at zero) so a LoRA visibly changes outputs, and alpha differs
from the rank so a file that loses alpha would change strength and be caught."""

from __future__ import annotations

from pathlib import Path

import torch

from infer.lora.files import save_embedding_file, save_lora_file

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _randomise_lora(model: torch.nn.Module, seed: int, std: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and "magnitude" not in name:  # DoRA magnitudes keep their ‖W‖ start
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def make_random_lora(
    base: Path,
    arch: str,
    out: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    seed: int = 0,
    std: float = 0.1,
    text_encoder: bool = False,
    dora: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A LoRA for the tiny base at `base`, written to `out` with save_lora_file."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    unet_config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=UNET_TARGETS, init_lora_weights=True, use_dora=dora
    )
    unet.add_adapter(unet_config)
    _randomise_lora(unet, seed, std)
    layers: dict = {"unet_lora_layers": get_peft_model_state_dict(unet), "unet_lora_config": unet_config}
    if text_encoder:
        text_config = LoraConfig(
            r=rank, lora_alpha=alpha, target_modules=TEXT_TARGETS, init_lora_weights=True, use_dora=dora
        )
        encoders = [("text_encoder_lora_layers", CLIPTextModel, "text_encoder")]
        if arch == "sdxl":
            encoders.append(("text_encoder_2_lora_layers", CLIPTextModelWithProjection, "text_encoder_2"))
        for offset, (key, cls, folder) in enumerate(encoders, start=1):
            model = inject_adapter_in_model(text_config, cls.from_pretrained(base / folder))
            _randomise_lora(model, seed + offset, std)
            layers[key] = get_peft_model_state_dict(model)
        layers["text_encoder_lora_config"] = text_config
    info = {
        "oeuvre.base_model": str(base),
        "oeuvre.arch": arch,
        "oeuvre.trigger_token": "<tiny>",
        "oeuvre.caption": "a painting in the style of <tiny>",
        "oeuvre.artist": "tiny",
        **(metadata or {}),
    }
    return save_lora_file(out, arch=arch, metadata=info, **layers)


def make_random_embedding(arch: str, out: Path, *, num_tokens: int = 2, seed: int = 0, dim: int = 32) -> Path:
    """A pivotal-tuning embedding in the A1111 layout for the tiny bases (hidden size 32)."""
    generator = torch.Generator().manual_seed(seed)
    keys = ["emb_params"] if arch == "sd15" else ["clip_l", "clip_g"]
    embeddings = {key: torch.randn(num_tokens, dim, generator=generator) for key in keys}
    return save_embedding_file(
        out, arch=arch, embeddings=embeddings, metadata={"oeuvre.trigger_token": "<tiny>"}
    )


def img2img_np(pipe, prompt: str = "a harbour"):
    """A fixed 2-step img2img of a flat colour: the same call before and after loading a LoRA."""
    from PIL import Image

    out = pipe(
        prompt,
        image=Image.new("RGB", (64, 64), (180, 90, 40)),
        strength=0.8,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return out.images[0]
