"""Pivotal tuning: the trigger becomes new token(s) whose embeddings train alongside the LoRA.

Tokens are named the way diffusers' `load_textual_inversion` names a multi-vector embedding
(`<tok>`, `<tok>_1`, ...), so the pipeline's own `maybe_convert_prompt` expands the trigger and the
saved embedding loads back with `load_textual_inversion(file, token="<tok>")`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oeuvre.errors import ConfigError


@dataclass
class NewTokens:
    """The new rows of one text encoder's input embedding, and a copy of every other row to keep."""

    text_encoder: torch.nn.Module
    token_ids: list[int]
    frozen_rows: torch.Tensor

    @property
    def weight(self) -> torch.nn.Parameter:
        return self.text_encoder.get_input_embeddings().weight

    def restore_frozen_rows(self) -> None:
        """Only the new tokens may move: undo whatever the optimiser did to the others (weight decay)."""
        with torch.no_grad():
            keep = torch.ones(self.weight.shape[0], dtype=torch.bool)
            keep[self.token_ids] = False
            self.weight[keep] = self.frozen_rows[keep].to(self.weight.dtype)

    def trained(self) -> torch.Tensor:
        return self.weight[self.token_ids].detach().float().cpu().clone()


def token_names(trigger: str, count: int) -> list[str]:
    return [trigger] + [f"{trigger}_{i}" for i in range(1, count)]


def add_trigger_tokens(
    tokenizers, text_encoders, trigger: str, count: int, initializer: str
) -> list[NewTokens]:
    """Add the trigger's tokens to every tokenizer and start their embeddings from `initializer`."""
    names = token_names(trigger, count)
    added = []
    for tokenizer, encoder in zip(tokenizers, text_encoders, strict=True):
        init_ids = tokenizer(initializer, add_special_tokens=False).input_ids
        if not init_ids or tokenizer.unk_token_id in init_ids:
            raise ConfigError(f"train.initializer_token {initializer!r}: not in the base model's vocabulary")
        if tokenizer.add_tokens(names) != count:
            raise ConfigError(
                f"trigger_token {trigger!r}: already a token of the base tokenizer; pick a rare new word"
            )
        encoder.resize_token_embeddings(len(tokenizer))
        ids = tokenizer.convert_tokens_to_ids(names)
        weight = encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight[ids] = weight[init_ids].mean(dim=0, keepdim=True).expand(count, -1).clone()
        weight.requires_grad_(True)
        added.append(NewTokens(encoder, ids, weight.detach().clone()))
    return added


def embedding_file_tensors(arch: str, new_tokens: list[NewTokens]) -> dict[str, torch.Tensor]:
    """The A1111/ComfyUI layout: `emb_params` for SD 1.5, `clip_l` and `clip_g` for SDXL."""
    if arch == "sdxl":
        return {"clip_l": new_tokens[0].trained(), "clip_g": new_tokens[1].trained()}
    return {"emb_params": new_tokens[0].trained()}
