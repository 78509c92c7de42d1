"""Control images for ControlNet: the photo's edges (OpenCV's Canny) or its depth (a transformers
depth-estimation model), drawn as the RGB pictures the ControlNets were trained on (white edges on
black; near is bright)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from oeuvre.errors import BaseModelError

KINDS = ("canny", "depth")


def canny_image(image: Image.Image, low: int, high: int) -> Image.Image:
    """OpenCV's Canny edges of the photo's luminance, hysteresis thresholds `low` < `high` (0-255)."""
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("L")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


@functools.lru_cache(maxsize=2)
def depth_estimator(model: str, device: str = "cpu"):
    """transformers' depth-estimation pipeline (Depth Anything, DPT, ...) from a hub id or folder,
    safetensors weights only; loaded once per process."""
    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    try:
        return pipeline(
            "depth-estimation", model=model, device=device, model_kwargs={"use_safetensors": True}
        )
    except (OSError, ValueError) as exc:
        where = "folder" if Path(model).expanduser().exists() else "hub id (not cached, or offline?)"
        raise BaseModelError(
            f"depth estimator {model}: could not load it as a {where} with safetensors weights ({exc}); "
            "pass another with --depth-model ID|DIR"
        ) from exc


def depth_image(image: Image.Image, model: str, device: str = "cpu") -> Image.Image:
    """The estimated depth map at the photo's size, as RGB."""
    depth = depth_estimator(model, device)(image.convert("RGB"))["depth"]
    return depth.convert("RGB").resize(image.size, Image.Resampling.BILINEAR)


def control_image(
    kind: str, image: Image.Image, canny_low: int, canny_high: int, depth_model: str | None, device="cpu"
) -> Image.Image:
    if kind == "canny":
        return canny_image(image, canny_low, canny_high)
    if kind == "depth":
        if depth_model is None:
            raise BaseModelError("--control depth: no depth estimator; pass one with --depth-model ID|DIR")
        return depth_image(image, depth_model, device)
    raise BaseModelError(f"control {kind}: expected one of {', '.join(KINDS)}")


def write_tiny_depth_estimator(out: Path, seed: int = 0) -> Path:
    """A tiny random Depth Anything (DINOv2 backbone) with its image processor, for offline tests."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        patch_size=14,
        image_size=56,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        patch_size=14,
    )
    torch.manual_seed(seed)
    DepthAnythingForDepthEstimation(config).save_pretrained(out, safe_serialization=True)
    processor = DPTImageProcessor(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False
    )
    processor.save_pretrained(out)
    return out
