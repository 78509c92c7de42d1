"""The metadata every LoRA and embedding file carries: kohya `ss_*`, ModelSpec `modelspec.*`, ours `oeuvre.*`.

kohya's keys are what A1111's and ComfyUI's LoRA browsers and Civitai show; ModelSpec (Stability's
`sai_model_spec`) is what model managers read; ours let `python -m infer restyle` find the base and
the trigger. `sshs_*` are kohya's hashes of the tensor data (so they differ between the two formats).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from oeuvre.config_schema import Config

SS_BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCH = {"sd15": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}
IMPLEMENTATION = {
    "diffusers": "https://github.com/huggingface/diffusers",
    "kohya": "https://github.com/kohya-ss/sd-scripts",
    "embedding": "https://github.com/AUTOMATIC1111/stable-diffusion-webui",
}
# The keys every file written at the end of training carries (file-specific ones added by for_file).
REQUIRED_KEYS = (
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_base_model_version",
    "ss_resolution",
    "ss_num_train_images",
    "ss_tag_frequency",
    "ss_output_name",
    "ss_training_comment",
    "sshs_model_hash",
    "sshs_legacy_hash",
    "modelspec.sai_model_spec",
    "modelspec.architecture",
    "modelspec.title",
    "modelspec.trigger_phrase",
    "modelspec.resolution",
    "modelspec.date",
    "modelspec.license",
    "oeuvre.base_model",
    "oeuvre.trigger_token",
    "oeuvre.arch",
    "oeuvre.config",
    "oeuvre.dataset_sha256",
    "oeuvre.version",
)


def oeuvre_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oeuvre")
    except PackageNotFoundError:
        return "unknown"


def dataset_sha256(image_sha256s: Iterable[str]) -> str:
    """One hash for the training set: the sorted per-image sha256s, so order does not matter."""
    return hashlib.sha256("\n".join(sorted(image_sha256s)).encode()).hexdigest()


def tag_frequency(captions: Iterable[str], dataset_name: str) -> dict[str, dict[str, int]]:
    """kohya's `ss_tag_frequency`: {dataset: {tag: count}}, tags being comma-separated caption parts."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(tag.strip() for tag in caption.split(",") if tag.strip())
    return {dataset_name: dict(counts.most_common())}


def portable_base(base_model: str) -> str:
    """A local base folder as an absolute path (so the file finds it from any directory); hub ids as-is."""
    path = Path(base_model)
    return str(path.resolve()) if path.is_dir() else base_model


def run_metadata(
    config: Config,
    *,
    arch: str,
    captions: Sequence[str],
    image_sha256s: Sequence[str],
    date: dt.datetime | None = None,
    holdout_works: int | None = None,
    prediction_type: str = "epsilon",
    lora_blocks: Sequence[str] | None = None,
    masked_works: int = 0,
) -> dict[str, str]:
    """The metadata of a finished run, shared by all its files. `lora_blocks`: the UNet blocks the
    LoRA is on (None: all); `masked_works`: training works whose loss was masked."""
    from oeuvre.config import to_plain

    cfg = config.train
    when = (date or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    caption = config.data.caption_template.replace("{token}", config.trigger_token)
    resolution = cfg.resolution_px
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg.lora_rank),
        "ss_network_alpha": str(cfg.lora_alpha),
        "ss_network_args": json.dumps({"use_dora": cfg.use_dora}),
        "ss_base_model_version": SS_BASE_MODEL_VERSION[arch],
        "ss_sd_model_name": config.base_model,
        "ss_v2": "False",
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_num_train_images": str(len(captions)),
        "ss_tag_frequency": json.dumps(tag_frequency(captions, config.artist)),
        "ss_output_name": config.artist,
        "ss_training_comment": (
            f"oeuvre {oeuvre_version()}: style of {config.artist}, trigger {config.trigger_token}"
        ),
        "ss_max_train_steps": str(cfg.max_train_steps),
        "ss_learning_rate": str(cfg.lr),
        "ss_text_encoder_lr": str(cfg.text_encoder_lr) if cfg.train_text_encoder else "0",
        "ss_unet_lr": str(cfg.lr),
        "ss_train_text_encoder": str(cfg.train_text_encoder),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_seed": str(config.seed),
        "ss_min_snr_gamma": str(cfg.snr_gamma),
        "ss_noise_offset": str(cfg.noise_offset),
        "ss_training_finished_at": str(when.timestamp()),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{MODELSPEC_ARCH[arch]}/lora",
        "modelspec.title": f"{config.artist} style",
        "modelspec.description": f"Style LoRA for {config.artist}; trigger: {config.trigger_token}",
        "modelspec.author": "oeuvre",
        "modelspec.trigger_phrase": config.trigger_token,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": when.isoformat(),
        "modelspec.license": config.data.license,
        "modelspec.prediction_type": prediction_type,
        "oeuvre.artist": config.artist,
        "oeuvre.base_model": portable_base(config.base_model),
        "oeuvre.trigger_token": config.trigger_token,
        "oeuvre.caption": caption,
        "oeuvre.arch": arch,
        "oeuvre.pivotal_tuning": str(cfg.pivotal_tuning).lower(),
        "oeuvre.max_train_steps": str(cfg.max_train_steps),
        "oeuvre.train_images": str(len(captions)),
        **({} if holdout_works is None else {"oeuvre.holdout_works": str(holdout_works)}),
        "oeuvre.preservation_weight": str(cfg.preservation_weight),
        "oeuvre.preservation_prompt": cfg.preservation_prompt,
        "oeuvre.lora_blocks": json.dumps(list(lora_blocks) if lora_blocks is not None else "all"),
        "oeuvre.masked_works": str(masked_works if cfg.masked_loss else 0),
        "oeuvre.mask_floor_weight": str(cfg.mask_floor_weight),
        "oeuvre.config": json.dumps(to_plain(config), sort_keys=True),
        "oeuvre.dataset_sha256": dataset_sha256(image_sha256s),
        "oeuvre.version": oeuvre_version(),
    }


def sshs_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """kohya's `precalculate_safetensors_hashes`: sha256 of the tensor bytes after the header of the
    file saved with only `ss_*` metadata, and the legacy 8-hex hash of 64 KiB at offset 1 MiB."""
    import safetensors.torch

    ss_only = {key: value for key, value in metadata.items() if key.startswith("ss_")}
    data = safetensors.torch.save(dict(tensors), metadata=ss_only)
    buffer = io.BytesIO(data)
    header_len = int.from_bytes(buffer.read(8), "little")
    buffer.seek(8 + header_len)
    model_hash = hashlib.sha256(buffer.read()).hexdigest()
    buffer.seek(0x100000)
    legacy_hash = hashlib.sha256(buffer.read(0x10000)).hexdigest()[:8]
    return model_hash, legacy_hash


def for_file(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor], kind: str) -> dict[str, str]:
    """`metadata` specialised for one file kind (diffusers, kohya, embedding), with its own hashes."""
    if kind not in IMPLEMENTATION:
        raise ValueError(f"kind: expected one of {sorted(IMPLEMENTATION)}, got {kind!r}")
    out = dict(metadata)
    out["modelspec.implementation"] = IMPLEMENTATION[kind]
    out["oeuvre.format"] = kind
    if kind == "embedding" and "modelspec.architecture" in out:
        out["modelspec.architecture"] = out["modelspec.architecture"].replace("/lora", "/textual-inversion")
    out["sshs_model_hash"], out["sshs_legacy_hash"] = sshs_hashes(tensors, out)
    return out


def summary(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The handful of facts a person wants first, from whatever metadata a file has."""
    config = json.loads(metadata.get("oeuvre.config") or "{}")
    return {
        "title": metadata.get("modelspec.title") or metadata.get("ss_output_name"),
        "trigger": metadata.get("oeuvre.trigger_token") or metadata.get("modelspec.trigger_phrase"),
        "base_model": metadata.get("oeuvre.base_model") or metadata.get("ss_sd_model_name"),
        "train_images": metadata.get("ss_num_train_images"),
        "resolution": metadata.get("modelspec.resolution"),
        "license": metadata.get("modelspec.license"),
        "has_config": bool(config),
    }


def style_training(metadata: Mapping[str, str]) -> dict[str, str]:
    """Which style-training features a run used (output preservation, block preset, masked loss), in
    words; `unknown` for files from before they existed or from other trainers."""
    weight = metadata.get("oeuvre.preservation_weight")
    preservation = "unknown"
    if weight is not None:
        prompt = metadata.get("oeuvre.preservation_prompt", "")
        preservation = "off" if float(weight) == 0 else f"weight {weight}, trigger -> {prompt!r}"
    blocks = json.loads(metadata.get("oeuvre.lora_blocks") or '"unknown"')
    masked = metadata.get("oeuvre.masked_works")
    masks = "unknown"
    if masked is not None:
        floor = metadata.get("oeuvre.mask_floor_weight", "?")
        masks = (
            "off"
            if masked == "0"
            else f"{masked} of {metadata.get('ss_num_train_images', '?')} works, floor {floor}"
        )
    return {
        "output_preservation": preservation,
        "lora_blocks": blocks if isinstance(blocks, str) else ", ".join(blocks),
        "masked_loss": masks,
    }
