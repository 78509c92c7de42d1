"""Which UNet blocks get LoRA: all of them, the blocks that carry style, or the user's own patterns.

The `style` preset rests on two findings for SDXL: B-LoRA (Frenkel et al. 2024, "Implicit Style-Content
Separation using B-LoRA"; diffusers' advanced SDXL DreamBooth script) trains `up_blocks.0.attentions.1`
alone for style, and InstantStyle (Wang et al. 2024) injects style only there. SD 1.5 has no published
equivalent: its preset takes the analogous layer, the attentions of the first (lowest-resolution)
cross-attention up block (`up_blocks.1.attentions` in SD 1.5), which is weaker evidence."""

from __future__ import annotations

from fnmatch import fnmatchcase

from oeuvre.config_schema import TrainConfig
from oeuvre.errors import BaseModelError


def style_blocks(unet_config, arch: str) -> list[str]:
    """The style preset's block prefixes, found from the UNet's layout rather than hard-coded indices."""
    first = next(i for i, kind in enumerate(unet_config.up_block_types) if kind.startswith("CrossAttn"))
    if arch == "sdxl":
        return [f"up_blocks.{first}.attentions.1"]  # B-LoRA's and InstantStyle's style block
    return [f"up_blocks.{first}.attentions"]


def block_patterns(cfg: TrainConfig, unet_config, arch: str) -> list[str] | None:
    """Module-name patterns that pick the trained blocks; None: every block."""
    if cfg.lora_blocks == "all":
        return None
    if cfg.lora_blocks == "style":
        return style_blocks(unet_config, arch)
    if not cfg.lora_block_patterns:
        raise BaseModelError(
            "train.lora_blocks is custom but train.lora_block_patterns is empty; list module-name "
            "patterns such as [up_blocks.0.attentions.1], or use lora_blocks: all | style"
        )
    return list(cfg.lora_block_patterns)


def in_blocks(name: str, patterns: list[str]) -> bool:
    """`up_blocks.0.attentions.1` covers everything under it (not `...attentions.10`); `*` wildcards."""
    return any(fnmatchcase(name, p) or fnmatchcase(name, p + ".*") for p in patterns)


def unet_target_modules(cfg: TrainConfig, unet, arch: str) -> list[str]:
    """The LoRA target list for the UNet: the layer names (to_q, ...) everywhere, or, for a block
    preset, the full paths of those layers inside the chosen blocks (peft matches either)."""
    layers = list(cfg.lora_target_modules)
    patterns = block_patterns(cfg, unet.config, arch)
    if patterns is None:
        return layers
    names = [
        name
        for name, _ in unet.named_modules()
        if in_blocks(name, patterns) and any(name == t or name.endswith("." + t) for t in layers)
    ]
    if not names:
        blocks = sorted({".".join(n.split(".")[:3]) for n, _ in unet.named_modules() if n.count(".") >= 2})
        raise BaseModelError(
            f"train.lora_blocks {cfg.lora_blocks} ({patterns}): no {layers} layer in those blocks of this "
            f"UNet; its blocks include {', '.join(b for b in blocks if 'attentions' in b)}"
        )
    return names
