"""Give the tiny base a short pre-training on generic pictures, so it behaves like a (very small) base.

A random UNet predicts noise that has nothing to do with the image, so its img2img output is
coloured static, with or without a LoRA, and no style can show. Real LoRAs start from a base that
already denoises pictures in general; this recreates that in miniature: a few hundred full UNet
steps on procedurally drawn, style-free pictures (two-tone backgrounds and flat shapes in colours
from the whole gamut, captioned with their colour names), with the base's own objective (epsilon,
or v-prediction for a zero-SNR base). The artist's LoRA then has a denoiser to bend.

Only the UNet trains; the text encoders stay random (their embeddings still tell prompts apart).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

CAPTION_DROPOUT = 0.1
# Captions name the colours, so that prompt and picture agree: random captions would teach the base to
# ignore its prompt. (A thousand steps are too few for it to follow colour words yet.)
NAMED_COLOURS = {
    "red": (200, 40, 40),
    "dark red": (110, 20, 20),
    "orange": (235, 140, 40),
    "yellow": (235, 215, 60),
    "green": (60, 160, 60),
    "dark green": (20, 80, 30),
    "light green": (160, 220, 140),
    "blue": (50, 90, 210),
    "dark blue": (20, 30, 100),
    "light blue": (150, 195, 240),
    "purple": (130, 60, 170),
    "pink": (235, 150, 190),
    "brown": (120, 80, 40),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
}


def colour_name(rgb: tuple[int, int, int]) -> str:
    return min(
        NAMED_COLOURS,
        key=lambda name: sum((a - b) ** 2 for a, b in zip(NAMED_COLOURS[name], rgb, strict=True)),
    )


def generic_picture(rng: np.random.Generator, size: int) -> tuple[Image.Image, str]:
    """A style-free picture: a two-tone background and a few flat shapes, colours from the whole
    gamut, and a caption that names them."""
    top, bottom = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
    image = Image.new("RGB", (size, size), top)
    draw = ImageDraw.Draw(image)
    horizon = int(size * rng.uniform(0.3, 0.8))
    draw.rectangle([0, horizon, size, size], fill=bottom)
    words = [f"a picture, {colour_name(top)} top, {colour_name(bottom)} bottom"]
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
        box = [x0 - w // 2, y0 - h // 2, x0 + w // 2, y0 + h // 2]
        round_shape = rng.random() < 0.5
        (draw.ellipse if round_shape else draw.rectangle)(box, fill=colour)
        words.append(f"{colour_name(colour)} {'circle' if round_shape else 'square'}")
    return image.filter(ImageFilter.GaussianBlur(size / 128)), ", ".join(words)


def _conditioning(pipe, captions: list[str]) -> tuple[torch.Tensor, dict]:
    """The text conditioning the pipeline itself would compute (SD 1.5 or SDXL)."""
    if hasattr(pipe, "text_encoder_2"):
        embeds, _, pooled, _ = pipe.encode_prompt(captions, device="cpu", do_classifier_free_guidance=False)
        side = pipe.vae.config.sample_size
        time_ids = torch.tensor([[side, side, 0, 0, side, side]], dtype=embeds.dtype).repeat(len(captions), 1)
        return embeds, {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
    embeds, _ = pipe.encode_prompt(
        captions, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    return embeds, {}


def noisy_batch(
    latents: torch.Tensor,
    noise_scheduler,
    batch_size: int,
    generator: torch.Generator,
    noise_offset: float = 0.0,
):
    """A random batch of the latents, noised at random timesteps: (index, clean, noise, timesteps, noisy).

    `noise_offset`: a random constant per image and channel added to the noise (offset noise), so the
    mean colour cannot be read off a noisy input and the model learns to make it from the prompt."""
    index = torch.randint(0, latents.shape[0], (batch_size,), generator=generator)
    clean = latents[index]
    noise = torch.randn(clean.shape, generator=generator)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(clean.shape[:2] + (1, 1), generator=generator)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator
    )
    return index, clean, noise, timesteps, noise_scheduler.add_noise(clean, noise, timesteps)


def training_set(pipe, pictures: int, size: int, seed: int) -> tuple[list, torch.Tensor, torch.Tensor, dict]:
    """The drawn pictures, their latents, and their text conditioning (same seed, same set)."""
    rng = np.random.default_rng(seed)
    drawn = [generic_picture(rng, size) for _ in range(pictures)]
    with torch.no_grad():
        pixels = pipe.image_processor.preprocess([image for image, _ in drawn])  # [-1, 1] tensors
        latents = pipe.vae.encode(pixels).latent_dist.mode()
        latents = latents * pipe.vae.config.scaling_factor
        # Some captions empty, as in real pre-training, so the unconditional branch of
        # classifier-free guidance has learned something too.
        captions = [caption if rng.random() > CAPTION_DROPOUT else "" for _, caption in drawn]
        text, extra = _conditioning(pipe, captions)
    return [image for image, _ in drawn], latents, text, extra


def pretrain_unet(
    pipe,
    steps: int,
    *,
    pictures: int = 512,
    batch_size: int = 8,
    size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    noise_offset: float = 0.0,
) -> list[float]:
    """Train `pipe.unet` in place for `steps` steps; returns the loss of every step."""
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    _, latents, text, extra = training_set(pipe, pictures, size, seed)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet = pipe.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc="pre-training the tiny base", unit="step"):
        index, clean, noise, timesteps, noisy = noisy_batch(
            latents, noise_scheduler, batch_size, generator, noise_offset
        )
        kwargs = {k: {n: t[index] for n, t in v.items()} for k, v in extra.items()}
        prediction = unet(noisy, timesteps, text[index], **kwargs).sample
        target = noise
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    unet.eval().requires_grad_(False)
    return losses
