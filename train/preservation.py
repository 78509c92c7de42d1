"""Output preservation (ai-toolkit's Differential Output Preservation): the style stays behind the trigger.

Each step also asks the model for the same noisy latents under the *preservation prompt*, the caption
with the trigger swapped for a class word ("a painting in the style of a painter"). The base model's
answer to it, with every adapter off and no pivotal tokens in the prompt, is the target; the LoRA's
answer to it is trained towards that target. No class images are needed: the base predicts them
on the fly, so what the LoRA learns has to hang on the trigger."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def preservation_captions(captions: list[str], trigger: str, class_words: str) -> list[str]:
    """Each caption with the trigger replaced by the class words (a caption without it stays as is)."""
    return [" ".join(c.replace(trigger, class_words).split()) if trigger else c for c in captions]


@dataclass
class Preservation:
    """The preservation half of a step's UNet batch: its inputs and the base model's answer."""

    embeddings: torch.Tensor  # the preservation prompt through the (LoRA-on) text path: gradients flow
    added: dict | None  # SDXL's pooled embedding and size ids for it
    target: torch.Tensor  # the base's prediction, adapters off, no gradient

    @classmethod
    def make(cls, parts, step, captions: list[str], noisy, timesteps, time_ids) -> Preservation:
        from train.validation import lora_off

        prompts = preservation_captions(captions, step.trigger, step.cfg.preservation_prompt)
        with torch.no_grad(), lora_off(parts):  # the UNet's and the text encoders' LoRA alike
            base_embeddings, base_pooled = step.encode(prompts)
            added = _added(base_pooled, time_ids)
            target = parts.unet(
                noisy, timesteps, base_embeddings.to(step.weight_dtype), added_cond_kwargs=added
            ).sample
        embeddings, pooled = step.encode(prompts)
        return cls(embeddings.to(step.weight_dtype), _added(pooled, time_ids), target.detach())

    def extend(self, noisy, timesteps, embeddings, added) -> tuple:
        """The UNet's inputs with the preservation samples appended: one forward (and one DDP
        all-reduce) for both halves; the preservation ones are the last len(target) predictions."""
        n = self.target.shape[0]
        noisy = torch.cat([noisy, noisy[:n]])
        timesteps = torch.cat([timesteps, timesteps[:n]])
        embeddings = torch.cat([embeddings, self.embeddings])
        if added is not None:
            added = {key: torch.cat([added[key], self.added[key]]) for key in added}
        return noisy, timesteps, embeddings, added


def _added(pooled, time_ids) -> dict | None:
    return None if pooled is None else {"text_embeds": pooled, "time_ids": time_ids}
