"""Every knob of an oeuvre run, as frozen typed dataclasses: one section per package plus shared keys.

Values live in configs/base.yaml (every default, once); these classes only say what each key is and
which values are allowed. Constraints sit in field metadata so the loader can name them in errors.
Only list items (data sources) carry defaults here, since a YAML file cannot hold defaults for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def rule(**constraints: Any) -> Any:
    """A field with range rules the loader checks: gt, ge, lt, le, multiple_of, nonempty, pattern."""
    return field(metadata=constraints)


# -- data sources: a list in data.sources, each item one of these shapes -------------------------


@dataclass(frozen=True)
class FolderSource:
    """Images under a local folder, recursively; a sidecar .txt next to an image is its caption."""

    folder: str = rule(nonempty=True)


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset filtered by column values. A hub id is streamed (see data/hub_plan.py);
    a local parquet, imagefolder or `save_to_disk` folder goes through `datasets`."""

    hf: str = rule(nonempty=True)
    split: str = "train"
    config_name: str | None = None
    image_column: str = "image"
    # Column -> wanted value(s); ClassLabel columns are matched by label name (e.g. artist: vincent-van-gogh).
    filter: dict[str, str | int | list[str | int]] = field(default_factory=dict)
    # How a hub id's matching rows are fetched: auto picks whichever reads fewer bytes.
    read: Literal["auto", "row_groups", "filter"] = "auto"


@dataclass(frozen=True)
class UrlListSource:
    """A text file with one image URL a line."""

    urls: str = rule(nonempty=True)


Source = FolderSource | HubSource | UrlListSource


# -- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """`python -m data`: gather, curate, caption and split the artist's works."""

    sources: tuple[Source, ...]
    caption_template: str = rule(nonempty=True, contains="{token}")
    min_side_px: int = rule(gt=0)
    max_aspect_ratio: float = rule(ge=1.0)
    max_image_pixels: int = rule(gt=0)
    near_duplicate_max_distance: int = rule(ge=0, le=64)
    holdout_fraction: float = rule(ge=0.0, lt=1.0)
    auto_caption: bool
    auto_caption_model: str = rule(nonempty=True)
    download_timeout_s: float = rule(gt=0)
    download_retries: int = rule(ge=0)
    download_max_bytes: int = rule(gt=0)
    max_works: int | None = rule(gt=0)
    detect_frames: bool
    license: str = rule(nonempty=True)


@dataclass(frozen=True)
class TrainConfig:
    """`accelerate launch -m train`: DreamBooth/LoRA with pivotal tuning for SD 1.5 and SDXL."""

    resolution_px: int = rule(gt=0, multiple_of=8)
    train_batch_size: int = rule(gt=0)
    gradient_accumulation_steps: int = rule(gt=0)
    max_train_steps: int = rule(gt=0)
    lr: float = rule(gt=0)
    text_encoder_lr: float = rule(gt=0)
    embedding_lr: float = rule(gt=0)
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ]
    lr_warmup_steps: int = rule(ge=0)
    adam_weight_decay: float = rule(ge=0)
    max_grad_norm: float = rule(gt=0)
    use_8bit_adam: bool
    lora_rank: int = rule(gt=0)
    lora_alpha: float = rule(gt=0)
    lora_dropout: float = rule(ge=0, lt=1)
    lora_target_modules: tuple[str, ...] = rule(nonempty=True)
    use_dora: bool
    train_text_encoder: bool
    pivotal_tuning: bool
    num_new_tokens: int = rule(gt=0)
    initializer_token: str = rule(nonempty=True)
    with_prior_preservation: bool
    class_prompt: str = rule(nonempty=True)
    class_data_dir: str | None
    generate_class_images: bool
    num_class_images: int = rule(ge=0)
    prior_loss_weight: float = rule(ge=0)
    preservation_weight: float = rule(ge=0)
    preservation_prompt: str = rule(nonempty=True)
    lora_blocks: Literal["all", "style", "custom"]
    lora_block_patterns: tuple[str, ...]
    masked_loss: bool
    mask_floor_weight: float = rule(ge=0, le=1)
    center_crop: bool
    random_flip: bool
    caption_dropout: float = rule(ge=0, le=1)
    cache_latents: bool
    cache_text_embeddings: bool
    snr_gamma: float | None = rule(gt=0)
    noise_offset: float = rule(ge=0)
    timestep_bias: Literal["none", "earlier", "later", "range"]
    timestep_bias_multiplier: float = rule(gt=0)
    timestep_bias_range: tuple[int, ...] = rule(length=2, ge=0, le=1000)
    mixed_precision: Literal["no", "fp16", "bf16"]
    gradient_checkpointing: bool
    compile: bool  # torch.compile the UNet's repeated transformer blocks (regional compilation)
    validation_every: int = rule(gt=0)
    validation_prompts: tuple[str, ...]
    checkpoint_every: int = rule(gt=0)
    checkpoints_keep: int = rule(gt=0)
    resume: str = rule(nonempty=True)
    recommend: bool  # after training, `infer recommend` when the dataset has held-out works


@dataclass(frozen=True)
class ControlModels:
    """The ControlNet each `--control KIND` loads for one architecture (hub id or folder)."""

    canny: str = rule(nonempty=True)
    depth: str = rule(nonempty=True)


@dataclass(frozen=True)
class ControlNetModels:
    sd15: ControlModels
    sdxl: ControlModels


@dataclass(frozen=True)
class ControlConfig:
    """`restyle --control canny|depth`: ControlNet img2img that keeps the photo's structure."""

    weight: float = rule(ge=0)  # controlnet_conditioning_scale when --control KIND has no :WEIGHT
    guidance_start: float = rule(ge=0, le=1)
    guidance_end: float = rule(ge=0, le=1)
    canny_low: int = rule(ge=0, le=255)
    canny_high: int = rule(ge=0, le=255)
    depth_estimator: str = rule(nonempty=True)  # a transformers depth-estimation model (safetensors)
    models: ControlNetModels


@dataclass(frozen=True)
class InferConfig:
    """`python -m infer restyle`: img2img with the artist LoRA."""

    prompt: str | None
    negative_prompt: str
    strength: float = rule(gt=0, le=1)
    lora_scale: float
    steps: int = rule(gt=0)
    guidance: float = rule(ge=0)
    # Fraction of the denoising steps run with classifier-free guidance; the rest run the prompted half
    # only (half the UNet work). 1.0: every step, exact. Below it an approximation, see bench/README.md.
    guidance_cutoff: float = rule(gt=0, le=1)
    size_px: int = rule(gt=0, multiple_of=8)
    num_images: int = rule(gt=0)
    batch_size: int = rule(gt=0)
    device: Literal["auto", "cuda", "mps", "cpu"]
    dtype: Literal["auto", "fp32", "fp16", "bf16"]
    recommend_content_floor: float | None = rule(ge=0, le=1)  # None: 0.9 x the base model's own
    control: ControlConfig


@dataclass(frozen=True)
class AppConfig:
    """`python -m infer app`: limits the server enforces on every request, the API included."""

    workers: int = rule(gt=0)  # renders at once, each with its own pipeline (and its memory)
    queue_size: int = rule(gt=0)  # requests waiting beyond the workers; more get "queue is full"
    max_steps: int = rule(gt=0)
    max_size_px: int = rule(gt=0, multiple_of=8)
    max_images: int = rule(gt=0)  # photos in one restyle request
    max_sweep_cells: int = rule(gt=0)  # strengths x scales in one sweep
    max_upload_mb: float = rule(gt=0)
    max_upload_pixels: int = rule(gt=0)
    output_retention_minutes: float = rule(gt=0)  # request folders older than this are deleted


@dataclass(frozen=True)
class Config:
    """A whole run: shared keys, then one section per package (each package reads only its own)."""

    artist: str = rule(pattern=r"[a-z0-9][a-z0-9_-]*")
    trigger_token: str = rule(pattern=r"\S+")
    base_model: str = rule(nonempty=True)
    output_dir: str = rule(nonempty=True)
    seed: int = rule(ge=0)
    data: DataConfig
    train: TrainConfig
    infer: InferConfig
    app: AppConfig
