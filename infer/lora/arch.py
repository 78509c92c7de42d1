"""Which base a LoRA file was made for (sd15 or sdxl), read from its tensor names and shapes alone.

Both layouts (diffusers `unet.….lora.down.weight`, kohya `lora_unet_…lora_down.weight`) are judged by
facts of the real architectures, not by the sizes of any test model:
- SDXL has two text encoders (`text_encoder_2.`, kohya `lora_te1_`/`lora_te2_`);
- SDXL's attention blocks stack several transformer blocks (`transformer_blocks.1` and up, 2 to 10 of them);
  SD 1.5's hold exactly one;
- kohya's SDXL files use the original SGM module names (`input_blocks`, `middle_block`, `output_blocks`);
- SDXL's cross-attention reads 2048-wide text features (SD 1.5: 768, SD 2: 1024).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

SDXL_CROSS_ATTENTION_WIDTH = 2048
_SECOND_ENCODER = ("text_encoder_2.", "lora_te1_", "lora_te2_")
_STACKED_BLOCK = re.compile(r"transformer_blocks[._]([1-9]\d*)[._]")
_SGM_NAMES = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_")
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k[._](lora[._]down|lora_A)[._]weight$")


def arch_from_keys(shapes: Mapping[str, Sequence[int]]) -> str:
    """ "sdxl" or "sd15" for a LoRA's key -> shape map (tensors work too: their .shape is a sequence)."""
    for key, shape in shapes.items():
        if key.startswith(_SECOND_ENCODER) or _STACKED_BLOCK.search(key) or _SGM_NAMES.match(key):
            return "sdxl"
        if _CROSS_ATTENTION_KEY.search(key) and len(shape) > 1 and shape[-1] == SDXL_CROSS_ATTENTION_WIDTH:
            return "sdxl"
    return "sd15"
