"""Find a base pipeline (hub id or local folder), tell SD 1.5 from SDXL, and load it with diffusers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from oeuvre.errors import BaseModelError

Arch = Literal["sd15", "sdxl"]

LOCAL_BASE_HINT = (
    "build a local base with `python -m infer tiny-base runs/base --arch sd15` and pass "
    "base_model=runs/base, or run once online (without HF_HUB_OFFLINE=1) to cache it"
)


def resolve_base(base_model: str) -> Path:
    """The local folder holding the pipeline: the folder itself, or the hub snapshot in the cache.

    Offline (HF_HUB_OFFLINE=1) an uncached hub id fails at once instead of retrying for minutes."""
    path = Path(base_model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise BaseModelError(
                f"base_model {base_model}: folder has no model_index.json; expected a diffusers "
                f"pipeline folder (SD 1.5 or SDXL); {LOCAL_BASE_HINT}"
            )
        return path
    if base_model.startswith((".", "/", "~")) or base_model.count("/") != 1:
        raise BaseModelError(
            f"base_model {base_model}: no such folder, and not a hub id of the form owner/name"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        # model_index.json only: enough to know the architecture; from_pretrained fetches the rest.
        return Path(snapshot_download(base_model, allow_patterns=["model_index.json"]))
    except LocalEntryNotFoundError as exc:
        raise BaseModelError(
            f"base_model {base_model}: not in the local Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE=1); {LOCAL_BASE_HINT}"
        ) from exc
    except Exception as exc:  # network errors, gated or missing repos: say which id
        raise BaseModelError(
            f"base_model {base_model}: could not be fetched ({exc}); {LOCAL_BASE_HINT}"
        ) from exc


def detect_arch(base_model: str) -> Arch:
    """SD 1.5 or SDXL, read from the pipeline's own model_index.json."""
    index_file = resolve_base(base_model) / "model_index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BaseModelError(f"{index_file}: unreadable model_index.json ({exc})") from exc
    name = str(index.get("_class_name", ""))
    if "text_encoder_2" in index or name.startswith("StableDiffusionXL"):
        return "sdxl"
    if name.startswith("StableDiffusion") and "text_encoder" in index and "unet" in index:
        return "sd15"
    raise BaseModelError(
        f"{index_file}: pipeline class {name or '(none)'} is neither SD 1.5 nor SDXL "
        f"(expected StableDiffusion*Pipeline with unet and text_encoder)"
    )


def pipeline_arch(pipe) -> Arch:
    """SD 1.5 or SDXL for a loaded pipeline: only SDXL has a second text encoder."""
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15"


def load_img2img_pipeline(base_model: str, dtype=None):
    """diffusers' own img2img pipeline for the base, with its tokenizers checked."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    arch = detect_arch(base_model)
    cls = StableDiffusionXLImg2ImgPipeline if arch == "sdxl" else StableDiffusionImg2ImgPipeline
    kwargs = {"torch_dtype": dtype} if dtype is not None else {}
    if arch == "sd15":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = cls.from_pretrained(base_model, use_safetensors=True, **kwargs)
    except OSError as exc:
        raise BaseModelError(f"base_model {base_model}: could not load the pipeline ({exc})") from exc
    check_tokenizers(pipe, base_model)
    return pipe


def check_tokenizers(pipe, base_model: str) -> None:
    """A folder without tokenizer files can load as a 2-token tokenizer with no error: refuse it."""
    for name in ("tokenizer", "tokenizer_2"):
        tokenizer = getattr(pipe, name, None)
        if tokenizer is None:
            continue
        if len(tokenizer) < 1000 or tokenizer.model_max_length != 77:
            raise BaseModelError(
                f"base_model {base_model}: {name} has {len(tokenizer)} tokens and model_max_length "
                f"{tokenizer.model_max_length}; expected a CLIP tokenizer (>= 1000 tokens, 77)"
            )
