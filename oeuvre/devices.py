"""Choose the device and dtype: CUDA, then MPS, then CPU; half precision on GPUs, fp32 on CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oeuvre.errors import OeuvreError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("fp32", "fp16", "bf16")


def choose_device(preference: str = "auto") -> str:
    import torch

    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if preference == "auto":
        return next(name for name, ok in available.items() if ok)
    if preference not in available:
        raise OeuvreError(f"--device: expected one of auto, cuda, mps, cpu, got {preference!r}")
    if not available[preference]:
        raise OeuvreError(f"--device {preference}: no {preference.upper()} device is available here")
    return preference


def choose_dtype(device: str, preference: str = "auto") -> torch.dtype:
    import torch

    by_name = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if preference != "auto":
        if preference not in by_name:
            raise OeuvreError(f"--dtype: expected one of auto, {', '.join(DTYPE_NAMES)}, got {preference!r}")
        return by_name[preference]
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32
