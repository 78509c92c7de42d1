"""A tiny ControlNet for the tiny base: copied from its UNet (diffusers' `ControlNetModel.from_unet`)
and trained briefly on the generic pictures the base pre-trains on, conditioned on their canny edges
(or depth maps), so that the offline demo and tests can show what a ControlNet keeps.

Only the ControlNet trains; the UNet is frozen, as in diffusers' train_controlnet.py. Written beside
the base's own folders as `controlnet-<kind>/` (and `depth-estimator/`, a tiny random Depth Anything,
for depth), where `python -m infer restyle --control KIND` finds it by default.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from infer.bases.control_images import control_image, write_tiny_depth_estimator
from infer.bases.tiny_pretrain import noisy_batch, training_set

CANNY_THRESHOLDS = (100, 200)  # as configs/base.yaml's infer.control defaults
DEPTH_ESTIMATOR = "depth-estimator"


def controlnet_folder(base: Path, kind: str) -> Path:
    return Path(base) / f"controlnet-{kind}"


def build_controlnet(pipe):
    """A ControlNet with the UNet's weights, its conditioning encoder downsampling as much as the VAE."""
    from diffusers import ControlNetModel

    stages = int(math.log2(pipe.vae_scale_factor)) + 1  # stride-2 stages: image pixels -> latent pixels
    channels = (16, 32, 96, 256)[:stages]
    return ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=channels)


def train_controlnet(
    pipe,
    kind: str,
    steps: int,
    *,
    depth_model: str | None = None,
    pictures: int = 256,
    batch_size: int = 8,
    size: int = 64,
    lr: float = 5e-3,  # high for a ControlNet, but it has little time: its zero convolutions start at 0
    seed: int = 0,
) -> tuple[object, list[float]]:
    """A new ControlNet trained `steps` steps to help `pipe.unet` denoise from the control image."""
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    drawn, latents, text, extra = training_set(pipe, pictures, size, seed)
    controls = [control_image(kind, image, *CANNY_THRESHOLDS, depth_model) for image in drawn]
    # The pipelines feed control images in [0, 1], channels first.
    cond = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float32) / 255 for c in controls]))
    cond = cond.permute(0, 3, 1, 2).contiguous()
    controlnet = build_controlnet(pipe).train()
    unet = pipe.unet.eval().requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    generator = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in tqdm(range(steps), desc=f"training the tiny {kind} ControlNet", unit="step"):
        index, clean, noise, timesteps, noisy = noisy_batch(latents, noise_scheduler, batch_size, generator)
        kwargs = {k: {n: t[index] for n, t in v.items()} for k, v in extra.items()}
        down, mid = controlnet(
            noisy, timesteps, text[index], controlnet_cond=cond[index], return_dict=False, **kwargs
        )
        prediction = unet(
            noisy,
            timesteps,
            text[index],
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            **kwargs,
        ).sample
        loss = torch.nn.functional.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    controlnet.eval().requires_grad_(False)
    return controlnet, losses


def write_tiny_controlnets(pipe, folder: Path, kinds: list[str], steps: int, seed: int = 0) -> None:
    """Train and save one ControlNet per kind into `folder` (the base being written)."""
    from oeuvre.atomic import atomic_directory

    folder = Path(folder)
    depth_model = None
    if "depth" in kinds:
        with atomic_directory(folder / DEPTH_ESTIMATOR, overwrite=True) as tmp:
            write_tiny_depth_estimator(tmp, seed)
        depth_model = str(folder / DEPTH_ESTIMATOR)
    for kind in kinds:
        controlnet, losses = train_controlnet(pipe, kind, steps, depth_model=depth_model, seed=seed)
        with atomic_directory(controlnet_folder(folder, kind), overwrite=True) as tmp:
            controlnet.save_pretrained(tmp, safe_serialization=True)
        if losses:
            first, last = losses[0], losses[-1]
            print(f"trained the tiny {kind} ControlNet for {steps} steps: loss {first:.3f} -> {last:.3f}")


def add_tiny_controlnets(
    base: Path, kinds: list[str], steps: int, seed: int = 0, overwrite: bool = False
) -> None:
    """Train ControlNets for an existing tiny base folder (the demo's, say) and write them into it."""
    from diffusers import DiffusionPipeline

    from oeuvre.errors import OeuvreError

    base = Path(base)
    if not (base / "model_index.json").is_file():
        raise OeuvreError(f"{base}: not a base folder (no model_index.json) to add ControlNets to")
    existing = [kind for kind in kinds if controlnet_folder(base, kind).exists()]
    if existing and not overwrite:
        raise OeuvreError(f"{controlnet_folder(base, existing[0])}: already exists; pass --overwrite")
    write_tiny_controlnets(
        DiffusionPipeline.from_pretrained(base, use_safetensors=True), base, kinds, steps, seed
    )
