"""Shared fixtures: tiny bases built once per session, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's models are tiny: on 2 cores one thread per process runs their few hundred small operators
# faster than two threads handing each one over (bench/README.md, "Threads"), and the two-process tests
# no longer put four threads on two cores. Set before torch loads; a caller's own setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory) -> dict[str, Path]:
    """Tiny random SD 1.5- and SDXL-shaped pipeline folders, built here, never downloaded."""
    from infer.bases.tiny import write_tiny_base

    root = tmp_path_factory.mktemp("bases")
    return {arch: write_tiny_base(root / arch, arch, "tiny", seed=0) for arch in ("sd15", "sdxl")}


@pytest.fixture
def run_cli():
    """Run `python -m <module> args...` from the repo root as a user would; returns the CompletedProcess."""

    def run(module: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        return subprocess.run(
            [sys.executable, "-m", module, *map(str, args)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


@pytest.fixture(scope="session")
def tiny_loras(tiny_bases, tmp_path_factory) -> dict[str, Path]:
    """Random LoRAs (alpha != rank, non-zero lora_B) for each tiny base, saved with save_lora_file."""
    from lora_helpers import make_random_lora

    root = tmp_path_factory.mktemp("loras")
    return {
        arch: make_random_lora(base, arch, root / f"{arch}.safetensors") for arch, base in tiny_bases.items()
    }


@pytest.fixture(scope="session")
def tiny_controlnets(tiny_bases, tmp_path_factory) -> dict[str, Path]:
    """An untrained ControlNet per tiny base (from its UNet), with its zero convolutions made random so
    that the control image visibly acts."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    root = tmp_path_factory.mktemp("controlnets")
    folders = {}
    for arch, base in tiny_bases.items():
        unet = UNet2DConditionModel.from_pretrained(base / "unet")
        torch.manual_seed(1)
        controlnet = ControlNetModel.from_unet(unet)  # the tiny VAE is 8x: the default 4-stage encoder
        with torch.no_grad():
            for name, param in controlnet.named_parameters():
                if "zero_conv" in name or "controlnet_mid_block" in name or "conv_out" in name:
                    param.copy_(torch.randn_like(param) * 0.05)
        folders[arch] = root / f"{arch}-controlnet"
        controlnet.save_pretrained(folders[arch], safe_serialization=True)
    return folders
