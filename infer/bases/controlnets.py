"""ControlNets for a base: find one (hub id or folder), say which architecture it is for from its
config.json, refuse one that does not fit the base's UNet, and load it with diffusers (safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

from infer.bases.resolve import Arch
from oeuvre.errors import BaseModelError

# Shapes a ControlNet shares with the UNet it steers: its residuals are added block by block.
MATCHING_KEYS = ("cross_attention_dim", "block_out_channels", "layers_per_block", "addition_embed_type")


def controlnet_config(model: str) -> dict:
    """The ControlNet's config.json, from a folder or the hub (offline: the cache, else a clear error)."""
    path = Path(model).expanduser()
    if path.exists():
        file = path / "config.json"
        if not file.is_file():
            raise BaseModelError(
                f"ControlNet {model}: folder has no config.json; expected a diffusers ControlNet"
            )
    elif model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise BaseModelError(f"ControlNet {model}: no such folder, and not a hub id of the form owner/name")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            file = Path(hf_hub_download(model, "config.json"))
        except LocalEntryNotFoundError as exc:
            raise BaseModelError(
                f"ControlNet {model}: not in the local Hugging Face cache and the hub is offline "
                "(HF_HUB_OFFLINE=1); run once online, or pass a folder with --control-model KIND=DIR"
            ) from exc
        except Exception as exc:  # network errors, gated or missing repos: say which id
            raise BaseModelError(f"ControlNet {model}: could not be fetched ({exc})") from exc
    try:
        config = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BaseModelError(f"{file}: unreadable ControlNet config ({exc})") from exc
    if not str(config.get("_class_name", "")).startswith("ControlNet"):
        raise BaseModelError(
            f"ControlNet {model}: {file} is a {config.get('_class_name')}, not a ControlNetModel"
        )
    return config


def controlnet_arch(config: dict) -> Arch:
    """SDXL ControlNets, like SDXL UNets, take the pooled text and size ids ("text_time")."""
    return "sdxl" if config.get("addition_embed_type") == "text_time" else "sd15"


def check_controlnet_fits(model: str, config: dict, unet_config, arch: Arch, base_model: str) -> None:
    """Refuse a ControlNet for another architecture (or another UNet shape) before anything runs."""
    wrong = [
        f"{key} {_plain(config.get(key))} vs {_plain(unet_config.get(key))}"
        for key in MATCHING_KEYS
        if _plain(config.get(key)) != _plain(unet_config.get(key))
    ]
    theirs = controlnet_arch(config)
    if theirs != arch or wrong:
        detail = f" ({'; '.join(wrong)})" if wrong else ""
        raise BaseModelError(
            f"ControlNet {model} is made for {theirs}, and does not fit base {base_model} ({arch}){detail}; "
            f"pass a ControlNet for this base with --control-model KIND=ID|DIR"
        )


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def load_controlnet(model: str, dtype=None):
    from diffusers import ControlNetModel

    kwargs = {"torch_dtype": dtype} if dtype is not None else {}
    try:
        return ControlNetModel.from_pretrained(model, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise BaseModelError(
            f"ControlNet {model}: could not load it with safetensors weights ({exc})"
        ) from exc
