"""What the run shows while it trains: sample grids (with trigger / without / LoRA off), the
style-leak number, and a validation loss on the holdout at fixed noise, comparable across steps."""

from __future__ import annotations

import contextlib
import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw

from oeuvre.atomic import atomic_write_png
from oeuvre.config_schema import Config
from oeuvre.devices import release_module_pages
from train.images import to_bucket
from train.loss import target_for

FIXED_TIMESTEP_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
MAX_HOLDOUT_FOR_LOSS = 8
MAX_CONTENT_SAMPLES = 2
COLUMNS = ("with trigger", "without trigger", "LoRA off")


def strip_trigger(prompt: str, token: str) -> str:
    return " ".join(prompt.replace(token, " ").replace(" ,", ",").split()).strip(" ,")


@torch.no_grad()
def holdout_loss(parts, holdout, step, seed: int) -> float:
    """Mean unweighted MSE over holdout works at fixed timesteps and fixed noise."""
    total, count = 0.0, 0
    steps = parts.noise_scheduler.config.num_train_timesteps
    for index in range(min(len(holdout), MAX_HOLDOUT_FOR_LOSS)):
        example = holdout.example(index)
        generator = torch.Generator().manual_seed(seed + index)
        pixels, _ = to_bucket(example.image, example.bucket, True, False, generator)
        dist = parts.vae.encode(pixels[None].to(step.device, parts.vae.dtype)).latent_dist
        latents = (dist.mean * parts.vae.config.scaling_factor).to(step.weight_dtype)
        embeddings, pooled = step.encode([example.caption])
        for fraction in FIXED_TIMESTEP_FRACTIONS:
            timestep = torch.tensor([int(fraction * steps)], device=step.device)
            noise = torch.randn(latents.shape, generator=generator).to(latents)
            noisy = parts.noise_scheduler.add_noise(latents, noise, timestep)
            added = None
            if pooled is not None:
                height, width = example.bucket[1], example.bucket[0]
                time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=step.device).float()
                added = {"text_embeds": pooled, "time_ids": time_ids}
            pred = parts.unet(
                noisy, timestep, embeddings.to(step.weight_dtype), added_cond_kwargs=added
            ).sample
            target = target_for(parts.noise_scheduler, latents, noise, timestep)
            total += float((pred.float() - target.float()).pow(2).mean())
            count += 1
    return total / count


@torch.no_grad()
def sample_rows(config: Config, parts, holdout) -> tuple[list[str], list[list[Image.Image]]]:
    """Rows of [with trigger, without trigger, LoRA off (without trigger)] images, fixed seeds."""
    cfg, size = config.train, config.train.resolution_px
    token = config.trigger_token
    text2img = parts.pipe
    img2img = img2img_pipeline(parts)
    jobs = [(p.replace("{token}", token), None) for p in cfg.validation_prompts]
    jobs += [
        (holdout.rows[i]["text"], holdout.example(i).image)
        for i in range(min(len(holdout) if holdout else 0, MAX_CONTENT_SAMPLES))
    ]
    labels, rows = [], []
    for number, (prompt, content) in enumerate(jobs):
        plain = strip_trigger(prompt, token) or "a picture"

        pipe = text2img if content is None else img2img
        with_trigger, without = (
            prompt_embeddings(pipe, text, config.infer.guidance) for text in (prompt, plain)
        )
        with lora_off(parts):  # a text-encoder LoRA is off in this column too
            lora_off_embeddings = prompt_embeddings(pipe, plain, config.infer.guidance)
        if parts.unet.device.type == "cpu":  # the prompts are encoded: the encoders' mapped pages can go
            for encoder in parts.text_encoders:
                release_module_pages(encoder)

        def make(embeddings: dict, content=content, number=number) -> Image.Image:
            generator = torch.Generator().manual_seed(config.seed + number)
            common = dict(
                num_inference_steps=config.infer.steps,
                generator=generator,
                guidance_scale=config.infer.guidance,
                **embeddings,
            )
            if content is None:
                return text2img(height=size, width=size, **common).images[0]
            return img2img(
                image=content.resize((size, size)), strength=config.infer.strength, **common
            ).images[0]

        row = [make(with_trigger), make(without)]
        with lora_off(parts):
            row.append(make(lora_off_embeddings))
        labels.append(("restyle: " if content is not None else "") + prompt)
        rows.append(row)
    return labels, rows


def prompt_embeddings(pipe, prompt: str, guidance: float) -> dict:
    """The embeddings `pipe(prompt, guidance_scale=guidance)` would compute for itself (its own
    encode_prompt, the same arguments), as keyword arguments for the call: encoded up front, the text
    encoders are not needed while the images are made."""
    cfg = guidance > 1
    out = pipe.encode_prompt(
        prompt, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=cfg
    )
    names = [
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ]
    return {name: value for name, value in zip(names, out, strict=False) if value is not None}


@contextlib.contextmanager
def lora_off(parts):
    """Every LoRA (and DoRA) layer off, the UNet's and the text encoders' alike, then back on."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = [parts.unet, *parts.text_encoders]
    layers = [layer for m in modules for layer in m.modules() if isinstance(layer, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def img2img_pipeline(parts):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    cls = StableDiffusionXLImg2ImgPipeline if parts.arch == "sdxl" else StableDiffusionImg2ImgPipeline
    pipe = cls.from_pipe(parts.pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def style_leak(rows: list[list[Image.Image]]) -> float:
    """Mean absolute pixel change (0..1) the LoRA makes to images that never asked for the artist."""
    diffs = [np.abs(np.asarray(r[1], np.float32) - np.asarray(r[2], np.float32)).mean() / 255 for r in rows]
    return float(np.mean(diffs))


def grid(labels: list[str], rows: list[list[Image.Image]], title: str) -> Image.Image:
    tile = max(128, rows[0][0].width)  # 64 px demo samples are unreadable at their own size
    label_w, head_h = 220, 24
    sheet = Image.new("RGB", (label_w + tile * len(COLUMNS), head_h * 2 + tile * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill="black")
    for c, name in enumerate(COLUMNS):
        draw.text((label_w + c * tile + 4, head_h + 4), name, fill="black")
    for r, (label, row) in enumerate(zip(labels, rows, strict=True)):
        y = head_h * 2 + r * tile
        # Whole prompts, wrapped: the trigger token sits at their end, where a cut would fall.
        lines = textwrap.wrap(label, 34, break_on_hyphens=False)[: tile // 14]
        draw.multiline_text((4, y + 4), "\n".join(lines), fill="black")
        for c, image in enumerate(row):
            sheet.paste(image.resize((tile, tile)), (label_w + c * tile, y))
    return sheet


def run(config: Config, parts, holdout, step, accelerator, global_step: int, paths) -> dict:
    """Validation loss (every process agrees on it) and, on the main process, the sample grid."""
    training = parts.unet.training
    parts.unet.eval()
    metrics = {"validation_loss": holdout_loss(parts, holdout, step, config.seed)} if holdout else {}
    if accelerator.is_main_process:
        labels, rows = sample_rows(config, parts, holdout)
        metrics["style_leak"] = style_leak(rows)
        sheet = grid(
            labels, rows, f"{config.artist}: step {global_step}, style leak {metrics['style_leak']:.3f}"
        )
        atomic_write_png(paths.samples / f"step-{global_step:06d}.png", sheet)
        tracker = accelerator.get_tracker("tensorboard", unwrap=True)
        if hasattr(tracker, "add_image"):
            tracker.add_image("samples", np.asarray(sheet), global_step, dataformats="HWC")
    accelerator.log(metrics, step=global_step)
    parts.unet.train(training)
    return metrics
