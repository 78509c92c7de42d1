"""diffusers ↔ kohya LoRA layouts, the second being what AUTOMATIC1111 and ComfyUI load.

Key renaming is diffusers' own (`convert_state_dict_to_peft`, `convert_state_dict_to_kohya`, and the
kohya→diffusers path inside `lora_state_dict`). Two things it gets wrong are fixed here: it writes
`alpha = rank` whatever the real alpha was (we write the true alpha from the file's adapter metadata),
and transformers 5's flattened CLIP has no `text_model.` level, which A1111/ComfyUI keys must carry.

kohya layout: `lora_unet_<module path with _>`, `lora_te_` (SD 1.5) or `lora_te1_`/`lora_te2_` (SDXL)
+ `text_model_encoder_layers_N_self_attn_q_proj`, each with `.lora_down.weight`, `.lora_up.weight`
and a scalar `.alpha`. DoRA adds `.dora_scale`, the magnitude per output feature, shaped [out, 1] as
LyCORIS writes it with weight decomposition on the output axis (what peft's DoRA is).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infer.lora.files import LoraFileError

if TYPE_CHECKING:
    import torch

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
KOHYA_PREFIXES = {
    "sd15": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
}
_PEFT_SUFFIX = re.compile(r"\.lora_([AB])\.weight$")


@dataclass
class ComponentLora:
    """One model's LoRA in peft layout: module path -> (down [r, in], up [out, r]) and alpha per module."""

    down: dict[str, torch.Tensor] = field(default_factory=dict)
    up: dict[str, torch.Tensor] = field(default_factory=dict)
    alpha: dict[str, float] = field(default_factory=dict)
    magnitude: dict[str, torch.Tensor] = field(default_factory=dict)  # DoRA: per output feature, [out]

    def rank(self, module: str) -> int:
        return int(self.down[module].shape[0])

    def peft_state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for module in self.down:
            out[f"{module}.lora_A.weight"] = self.down[module].contiguous()
            out[f"{module}.lora_B.weight"] = self.up[module].contiguous()
            if module in self.magnitude:
                out[f"{module}.lora_magnitude_vector"] = self.magnitude[module].reshape(-1).contiguous()
        return out

    def lora_config(self):
        """A peft LoraConfig that reproduces every module's rank and alpha (patterns where they vary)."""
        from peft import LoraConfig

        ranks = {m: self.rank(m) for m in self.down}
        rank = max(set(ranks.values()), key=list(ranks.values()).count)
        alpha = max(set(self.alpha.values()), key=list(self.alpha.values()).count)
        # Full module paths as patterns: peft matches them against the end of each module's name.
        return LoraConfig(
            r=rank,
            lora_alpha=alpha,
            target_modules=sorted(self.down),
            rank_pattern={re.escape(m): r for m, r in ranks.items() if r != rank},
            alpha_pattern={re.escape(m): a for m, a in self.alpha.items() if a != alpha},
            use_dora=bool(self.magnitude),
        )


def _strip_text_model(component: str, module: str) -> str:
    # transformers 5 CLIP: module paths start at `encoder.`; older ones (and kohya) at `text_model.`.
    if component != "unet" and module.startswith("text_model."):
        return module[len("text_model.") :]
    return module


def split_components(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A diffusers-format state dict grouped by component, prefix removed."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        component, _, rest = key.partition(".")
        if component not in COMPONENTS:
            raise LoraFileError(f"key {key!r}: expected it to start with one of {', '.join(COMPONENTS)}")
        groups.setdefault(component, {})[rest] = value
    return groups


def _pattern_value(patterns: Mapping[str, Any], module: str, default):
    """The value of the first peft pattern that matches `module`, by peft's own matching rule."""
    from peft.utils.other import get_pattern_key

    key = get_pattern_key(list(patterns), module)
    return patterns.get(key, default)


def _to_peft(state: Mapping[str, torch.Tensor], convert) -> dict[str, torch.Tensor]:
    """diffusers saves the UNet as `.lora.down/.up` (its LoRA-processor spelling, which
    `convert_state_dict_to_peft` does not detect) and text encoders as `.lora_linear_layer.down/.up`
    (which it does); peft keys pass through."""
    if all(_PEFT_SUFFIX.search(key) for key in state):
        return dict(state)
    if any(".lora_linear_layer." in key or "_lora." in key for key in state):
        return convert(dict(state))
    renamed = {}
    for key, value in state.items():
        new = re.sub(r"\.lora\.down\.weight$", ".lora_A.weight", key)
        renamed[re.sub(r"\.lora\.up\.weight$", ".lora_B.weight", new)] = value
    return renamed


def components_from_diffusers(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> dict[str, ComponentLora]:
    """Read a diffusers-format LoRA (any of diffusers' key spellings) into peft layout with true alphas.

    Alpha comes from diffusers' `lora_adapter_metadata` (what `save_lora_weights` stores); a file
    without it is what diffusers itself loads with alpha = rank, so that is what we report."""
    from diffusers.utils import convert_state_dict_to_peft

    adapter = json.loads(metadata.get("lora_adapter_metadata") or "{}")
    out: dict[str, ComponentLora] = {}
    for component, state in split_components(tensors).items():
        lora = ComponentLora()
        state = dict(state)
        for key in [k for k in state if ".lora_magnitude_vector" in k]:
            module = _strip_text_model(component, key.split(".lora_magnitude_vector")[0])
            lora.magnitude[module] = state.pop(key).reshape(-1)
        peft_state = _to_peft(state, convert_state_dict_to_peft)
        for key, value in peft_state.items():
            match = _PEFT_SUFFIX.search(key)
            if not match:
                raise LoraFileError(f"key {component}.{key}: expected a LoRA down/up weight")
            module = _strip_text_model(component, key[: match.start()])
            (lora.down if match.group(1) == "A" else lora.up)[module] = value
        missing = set(lora.down) ^ set(lora.up)
        if missing:
            raise LoraFileError(
                f"{component}: LoRA modules without both down and up weights: {sorted(missing)}"
            )
        base_alpha = adapter.get(f"{component}.lora_alpha")
        patterns = adapter.get(f"{component}.alpha_pattern") or {}
        for module in lora.down:
            default = lora.rank(module) if base_alpha is None else base_alpha
            lora.alpha[module] = float(_pattern_value(patterns, module, default))
        out[component] = lora
    return out


def kohya_module_name(arch: str, component: str, module: str) -> str:
    """`lora_unet_down_blocks_1_..._to_q` / `lora_te_text_model_encoder_layers_0_self_attn_q_proj`."""
    if component != "unet" and not module.startswith("text_model."):
        module = f"text_model.{module}"
    return f"{KOHYA_PREFIXES[arch][component]}_{module.replace('.', '_')}"


def to_kohya(components: Mapping[str, ComponentLora], arch: str) -> dict[str, torch.Tensor]:
    """The kohya state dict, renamed by diffusers' `convert_state_dict_to_kohya`, with true alphas."""
    import torch
    from diffusers.utils import convert_state_dict_to_kohya

    if arch not in KOHYA_PREFIXES:
        raise ValueError(f"arch: expected sd15 or sdxl, got {arch!r}")
    peft_state: dict[str, torch.Tensor] = {}
    wanted_alpha: dict[str, float] = {}
    for component, lora in components.items():
        if component not in KOHYA_PREFIXES[arch]:
            raise LoraFileError(f"{component}: an {arch} LoRA cannot have {component} layers")
        for key, value in lora.peft_state_dict().items():
            if not key.endswith(".lora_magnitude_vector"):  # written below, in the kohya shape
                peft_state[f"{component}.{kohya_prefixed_path(component, key)}"] = value
        for module, alpha in lora.alpha.items():
            wanted_alpha[kohya_module_name(arch, component, module)] = alpha
    converted = convert_state_dict_to_kohya(peft_state)
    out: dict[str, torch.Tensor] = {}
    for key, value in converted.items():
        name, _, suffix = key.partition(".")
        if arch == "sd15" and name.startswith("lora_te1_"):
            name = "lora_te_" + name[len("lora_te1_") :]  # SD 1.5 tools read `lora_te_`
        if suffix == "alpha":
            # diffusers wrote the rank here; the true alpha keeps the LoRA's strength.
            value = torch.tensor(wanted_alpha[name], dtype=torch.float32)
        out[f"{name}.{suffix}"] = value.contiguous()
    for component, lora in components.items():
        for module, magnitude in lora.magnitude.items():
            out[f"{kohya_module_name(arch, component, module)}.dora_scale"] = magnitude.reshape(
                -1, 1
            ).contiguous()
    if {k.partition(".")[0] for k in out} != set(wanted_alpha):
        raise RuntimeError("kohya conversion: diffusers' key names differ from the expected kohya names")
    return out


def kohya_prefixed_path(component: str, key: str) -> str:
    """Text-encoder keys get the `text_model.` level kohya names carry."""
    if component != "unet" and not key.startswith("text_model."):
        return f"text_model.{key}"
    return key


def is_kohya(keys) -> bool:
    return any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys)


def components_from_kohya(tensors: Mapping[str, torch.Tensor], arch: str) -> dict[str, ComponentLora]:
    """A kohya file through diffusers' own kohya→diffusers conversion (`lora_state_dict`), then its
    peft converters; alphas ride along as `<down key>.alpha` entries so they are renamed the same way."""
    import torch
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    from infer.lora.files import _pipeline_class

    # diffusers 0.42 drops `dora_scale` from SD/SDXL kohya files (with a warning): read it ourselves.
    dora_scales = {
        k.removesuffix(".dora_scale"): v.reshape(-1) for k, v in tensors.items() if k.endswith(".dora_scale")
    }
    tensors = {k: v for k, v in tensors.items() if not k.endswith(".dora_scale")}
    state, alphas = _pipeline_class(arch).lora_state_dict(dict(tensors))
    merged = {**state, **{key: torch.tensor(float(value)) for key, value in (alphas or {}).items()}}
    out: dict[str, ComponentLora] = {}
    for component, part in split_components(merged).items():
        convert = convert_unet_state_dict_to_peft if component == "unet" else convert_state_dict_to_peft
        lora = ComponentLora()
        alpha_by_module: dict[str, float] = {}
        for key, value in convert(part).items():
            is_alpha = key.endswith(".alpha")
            match = _PEFT_SUFFIX.search(key[: -len(".alpha")] if is_alpha else key)
            if not match:
                raise LoraFileError(f"key {component}.{key}: expected a LoRA down/up weight")
            module = _strip_text_model(component, key[: match.start()])
            if is_alpha:
                alpha_by_module[module] = float(value)
            else:
                (lora.down if match.group(1) == "A" else lora.up)[module] = value
        for module in lora.down:
            lora.alpha[module] = alpha_by_module.get(module, float(lora.rank(module)))
            name = kohya_module_name(arch, component, module)
            if arch == "sd15" and component == "text_encoder" and name not in dora_scales:
                name = name.replace("lora_te_", "lora_te1_", 1)
            if name in dora_scales:
                lora.magnitude[module] = dora_scales.pop(name)
        out[component] = lora
    if dora_scales:
        raise LoraFileError(f"dora_scale without LoRA weights for {sorted(dora_scales)[:3]}")
    return out
