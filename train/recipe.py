"""The training recipe: set up, then loop over `training_step` with logging, validation and checkpoints.

`training_step` is the whole of one step, top to bottom; everything else here is bookkeeping."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from oeuvre.config_schema import Config, TrainConfig
from oeuvre.devices import keep_freed_memory
from oeuvre.errors import OeuvreError
from oeuvre.paths import RunPaths
from train import checkpoints
from train.buckets import epoch_batches, make_buckets
from train.cache import LatentCache, PromptCache
from train.images import ArtistImages, to_bucket
from train.loss import (
    make_noise,
    per_sample_weights,
    sample_timesteps,
    target_for,
    timestep_weights,
    weighted_mse,
)
from train.models import Components, add_lora_adapters, load_components, lora_parameters
from train.pivotal import NewTokens, add_trigger_tokens

log = logging.getLogger("oeuvre.train")


class TrainingDiverged(OeuvreError):
    exit_code = 1


@dataclass
class Batch:
    captions: list[str]
    latent_dists: torch.Tensor | None  # cached (mean, logvar) parameters, or None to encode pixels
    pixels: torch.Tensor | None
    time_ids: torch.Tensor  # SDXL micro-conditioning: original size, crop corner, target size
    num_class: int  # the last num_class samples are prior-preservation (class) images


@dataclass
class Step:
    """Everything training_step reads besides the batch."""

    parts: Components
    cfg: TrainConfig
    encode: object  # prompts -> (embeddings, pooled or None)
    timestep_weights: torch.Tensor
    device: torch.device
    weight_dtype: torch.dtype


def training_step(batch: Batch, step: Step, generator: torch.Generator) -> torch.Tensor:
    """One step's loss: latents, noise, prediction, weighted loss. The caller does backward and step."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    parts, cfg = step.parts, step.cfg
    # 1. latents: sampled from the (cached or freshly encoded) distribution with our own generator,
    #    so cached and uncached runs are the same run.
    if batch.latent_dists is None:
        with torch.no_grad():
            dists = parts.vae.encode(batch.pixels.to(step.device, parts.vae.dtype)).latent_dist.parameters
    else:
        dists = batch.latent_dists.to(step.device)
    latents = DiagonalGaussianDistribution(dists.float()).sample(generator=generator)
    latents = (latents * parts.vae.config.scaling_factor).to(step.weight_dtype)
    # 2. noise at sampled timesteps
    noise = make_noise(latents, cfg.noise_offset, generator)
    timesteps = sample_timesteps(step.timestep_weights, latents.shape[0], generator).to(step.device)
    noisy = step.parts.noise_scheduler.add_noise(latents, noise, timesteps)
    # 3. prediction, conditioned on the captions (and SDXL's pooled embedding and size ids)
    embeddings, pooled = step.encode(batch.captions)
    added = None if pooled is None else {"text_embeds": pooled, "time_ids": batch.time_ids.to(step.device)}
    prediction = parts.unet(
        noisy, timesteps, embeddings.to(step.weight_dtype), added_cond_kwargs=added
    ).sample
    # 4. loss: min-SNR weighted MSE; class images weigh prior_loss_weight
    target = target_for(parts.noise_scheduler, latents, noise, timesteps)
    weights = per_sample_weights(parts.noise_scheduler, timesteps.cpu(), cfg.snr_gamma)
    n = latents.shape[0] - batch.num_class
    loss = weighted_mse(prediction[:n], target[:n], weights[:n])
    if batch.num_class:
        loss = loss + cfg.prior_loss_weight * weighted_mse(prediction[n:], target[n:], weights[n:])
    return loss


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """All randomness of one micro-step (crops, flips, caption dropout, noise, timesteps) comes from
    here, so a resumed run replays exactly what an uninterrupted one would have done."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + micro_step) * 1009 + rank) % (2**63))


def micro_batches(
    images: ArtistImages, batch_size: int, seed: int, rank: int, world: int, start: int
) -> Iterator:
    """This process's index batches from micro-step `start` on, epoch after epoch."""
    position = 0
    for epoch in range(10**9):
        batches = epoch_batches(images.bucket_of, batch_size, seed, epoch)
        batches += batches[: (-len(batches)) % world]  # every process gets the same number of steps
        mine = batches[rank::world]
        if position + len(mine) <= start:
            position += len(mine)
            continue
        for index_batch in mine:
            if position >= start:
                yield position, index_batch
            position += 1


def trainable_text_encoders(parts: Components) -> list[torch.nn.Module]:
    return [m for m in parts.text_encoders if any(p.requires_grad for p in m.parameters())]


def run(config: Config) -> Path:
    """Train the artist LoRA; returns the LoRA file. Resumes from the latest checkpoint by default."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from train import finish, preflight, validation
    from train.prior import class_images

    cfg = config.train
    paths = RunPaths(config.output_dir)
    plan = preflight.check(config)  # bad input fails here, before any model loads
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(paths.root), logging_dir=str(paths.logs)),
        # Several processes without CUDA (accelerate launch --multi_gpu on CPU): gloo, not one process each.
        cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
    )
    accelerator.print(f"training on {accelerator.num_processes} process(es), device {accelerator.device}")
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # CPU steps otherwise page-fault their activations back in each time
    set_seed(config.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )

    parts = load_components(config.base_model)
    new_tokens: list[NewTokens] = []
    if cfg.pivotal_tuning:
        new_tokens = add_trigger_tokens(
            parts.tokenizers,
            parts.text_encoders,
            config.trigger_token,
            cfg.num_new_tokens,
            cfg.initializer_token,
        )
    add_lora_adapters(parts, cfg)
    trained_encoders = trainable_text_encoders(parts)
    place_for_training(parts, accelerator.device, weight_dtype, trained_encoders, cfg.gradient_checkpointing)

    buckets = make_buckets(cfg.resolution_px)
    train_set = ArtistImages.from_split(plan.dataset_dir, "train", buckets, plan.hint)
    holdout_set = ArtistImages.from_split(plan.dataset_dir, "holdout", buckets, plan.hint)
    class_set = class_images(config, parts, buckets, accelerator) if cfg.with_prior_preservation else None

    cache_latents = plan.cache_latents
    latent_cache = LatentCache(paths.root / "cache" / "latents", parts.vae) if cache_latents else None
    encode = prompt_encoder(parts, accelerator.device)
    if plan.cache_text_embeddings:
        encode = batch_of(PromptCache(encode))
    if latent_cache is not None:
        fill_latent_cache(latent_cache, [train_set, class_set], parts.vae, accelerator)

    optimizer = make_optimizer(cfg, parts, trained_encoders, new_tokens)
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=cfg.max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(parts.unet, optimizer, lr_scheduler)
    trained_modules = [parts.unet, *trained_encoders]
    checkpoints.register_trainable_only_hooks(accelerator, trained_modules)

    global_step = 0
    resume_from = checkpoints.resume_point(paths.checkpoints, cfg.resume)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        global_step = checkpoints.checkpoint_step(resume_from)
        accelerator.print(f"resumed from {resume_from} (step {global_step})")
    if global_step >= cfg.max_train_steps:
        accelerator.print(f"already trained to step {global_step}; writing the LoRA files")
    accelerator.init_trackers("oeuvre", config=tracker_config(config))

    step = Step(
        parts,
        cfg,
        encode,
        timestep_weights(cfg, parts.noise_scheduler.config.num_train_timesteps),
        accelerator.device,
        weight_dtype,
    )
    progress = tqdm(
        total=cfg.max_train_steps,
        initial=global_step,
        desc="train",
        disable=not accelerator.is_local_main_process,
    )
    params = [p for m in trained_modules for p in m.parameters() if p.requires_grad]
    batches = micro_batches(
        train_set,
        cfg.train_batch_size,
        config.seed,
        accelerator.process_index,
        accelerator.num_processes,
        global_step * cfg.gradient_accumulation_steps,
    )
    for micro_step, indices in batches:
        if global_step >= cfg.max_train_steps:
            break
        generator = step_generator(config.seed, micro_step, accelerator.process_index)
        batch = make_batch(indices, train_set, class_set, cfg, latent_cache, generator)
        with accelerator.accumulate(unet):
            loss = training_step(batch, step, generator)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"non-finite loss ({loss.item()}) at step {global_step + 1}; stopped without saving it. "
                    f"The last good checkpoint stays in {paths.checkpoints}; lower train.lr or use fp32"
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                sync_unwrapped_grads(accelerator, trained_encoders)
                grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            for tokens in new_tokens:
                tokens.restore_frozen_rows()
        if not accelerator.sync_gradients:
            continue
        global_step += 1
        progress.update(1)
        logs = {"loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)}
        progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        accelerator.log(logs, step=global_step)
        if global_step % cfg.validation_every == 0 or global_step == cfg.max_train_steps:
            validation.run(config, parts, holdout_set, step, accelerator, global_step, paths)
        if global_step % cfg.checkpoint_every == 0 and global_step < cfg.max_train_steps:
            if not checkpoints.all_finite(trained_modules):
                raise TrainingDiverged(f"non-finite weights at step {global_step}; checkpoint not written")
            checkpoints.save_checkpoint(accelerator, paths.checkpoints, global_step, cfg.checkpoints_keep)
    progress.close()
    accelerator.wait_for_everyone()
    lora_file = finish.save_outputs(config, parts, new_tokens, accelerator, paths, train_set)
    accelerator.end_training()
    return lora_file


def place_for_training(
    parts: Components,
    device,
    weight_dtype: torch.dtype,
    trained_encoders: list,
    gradient_checkpointing: bool,
    memory_format: torch.memory_format = torch.channels_last,
) -> None:
    """Frozen weights in the training dtype on the device, trained (LoRA) weights in fp32.

    channels_last: oneDNN (CPU) and cuDNN (GPU) convolutions run faster in it (same maths, other layout)."""
    from diffusers.training_utils import cast_training_params

    parts.unet.to(device, weight_dtype, memory_format=memory_format)
    parts.vae.to(device, torch.float32)  # the SDXL VAE overflows in fp16; it mostly runs once anyway
    for encoder in parts.text_encoders:
        encoder.to(device, torch.float32 if encoder in trained_encoders else weight_dtype)
    cast_training_params([parts.unet, *trained_encoders], dtype=torch.float32)
    if gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()


def prompt_encoder(parts: Components, device):
    """Captions -> (embeddings, pooled) with the pipeline's own encode_prompt (it also expands a
    multi-token trigger the way load_textual_inversion does)."""

    def encode(prompts: list[str]):
        out = parts.pipe.encode_prompt(
            prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return (out[0], out[2]) if parts.arch == "sdxl" else (out[0], None)

    return encode


def batch_of(cache: PromptCache):
    def encode(prompts: list[str]):
        entries = [cache(p) for p in prompts]
        pooled = None if entries[0][1] is None else torch.cat([e[1] for e in entries])
        return torch.cat([e[0] for e in entries]), pooled

    return encode


def make_batch(indices, train_set, class_set, cfg: TrainConfig, cache, generator) -> Batch:
    examples = [train_set.example(i) for i in indices]
    if class_set is not None:
        bucket = examples[0].bucket  # class images join the instance batch's bucket
        picks = torch.randint(len(class_set), (len(examples),), generator=generator).tolist()
        examples += [class_set.example(i, bucket) for i in picks]
    captions, pixels, dists, time_ids = [], [], [], []
    for number, example in enumerate(examples):
        caption = example.caption
        if (
            number < len(indices)
            and cfg.caption_dropout
            and float(torch.rand((), generator=generator)) < cfg.caption_dropout
        ):
            caption = ""  # unconditional: keeps classifier-free guidance working
        captions.append(caption)
        flip = cfg.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        cached = cache.get(example.key, example.bucket) if cache is not None else None
        if cached is None:
            tensor, (top, left) = to_bucket(example.image, example.bucket, cfg.center_crop, flip, generator)
            pixels.append(tensor)
        else:
            dists.append(cached)
            top, left = center_crop_corner(example.size, example.bucket)
        width, height = example.bucket
        time_ids.append(torch.tensor([example.size[1], example.size[0], top, left, height, width]))
    return Batch(
        captions=captions,
        latent_dists=torch.stack(dists) if len(dists) == len(examples) else None,
        pixels=torch.stack(pixels) if pixels else None,
        time_ids=torch.stack(time_ids).float(),
        num_class=len(examples) - len(indices),
    )


def center_crop_corner(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = max(bucket[0] / width, bucket[1] / height)
    spare_x = max(bucket[0], round(width * scale)) - bucket[0]
    spare_y = max(bucket[1], round(height * scale)) - bucket[1]
    return spare_y // 2, spare_x // 2


def fill_latent_cache(cache: LatentCache, sets, vae, accelerator) -> None:
    """Encode every image once, at its bucket, centre-cropped (caching is only on when that is exact)."""
    from tqdm.auto import tqdm

    todo = [(s, i) for s in sets if s is not None for i in range(len(s))]
    todo = [(s, i) for s, i in todo if not cache.path(s.rows[i]["sha256"], s.bucket_of[i]).is_file()]
    mine = todo[accelerator.process_index :: accelerator.num_processes]
    for images, index in tqdm(
        mine, desc="cache latents", disable=not mine or not accelerator.is_local_main_process
    ):
        example = images.example(index)
        pixels, _ = to_bucket(example.image, example.bucket, True, False, torch.Generator())
        with torch.no_grad():
            dist = vae.encode(pixels[None].to(accelerator.device, vae.dtype)).latent_dist.parameters[0]
        cache.put(example.key, example.bucket, dist)
    accelerator.wait_for_everyone()


def make_optimizer(cfg: TrainConfig, parts: Components, trained_encoders, new_tokens: list[NewTokens]):
    groups = [{"params": lora_parameters(parts.unet), "lr": cfg.lr, "weight_decay": cfg.adam_weight_decay}]
    for encoder in trained_encoders:
        lora = lora_parameters(encoder)
        if lora:
            groups.append({"params": lora, "lr": cfg.text_encoder_lr, "weight_decay": cfg.adam_weight_decay})
    if new_tokens:
        groups.append({"params": [t.weight for t in new_tokens], "lr": cfg.embedding_lr, "weight_decay": 0.0})
    cls = optimizer_class(cfg.use_8bit_adam)
    params = [p for group in groups for p in group["params"]]
    if cls is torch.optim.AdamW and all(p.device.type in ("cpu", "cuda") for p in params):
        # One fused kernel for all parameters instead of a Python loop over a few hundred small
        # LoRA tensors: a fifth of a tiny CPU step went to the optimiser's loop.
        return cls(groups, fused=True)
    return cls(groups)


def optimizer_class(use_8bit_adam: bool):
    if use_8bit_adam:
        if torch.cuda.is_available():
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit
            except ImportError:
                log.warning(
                    "train.use_8bit_adam: bitsandbytes is not installed (pip install bitsandbytes); "
                    "using torch AdamW"
                )
        else:
            log.warning("train.use_8bit_adam: 8-bit AdamW needs CUDA; using torch AdamW on this device")
    return torch.optim.AdamW


def sync_unwrapped_grads(accelerator, modules) -> None:
    """Text-encoder weights are trained outside DDP (the pipeline calls them directly): average their
    gradients across processes by hand."""
    if accelerator.num_processes == 1:
        return
    for module in modules:
        for parameter in module.parameters():
            if parameter.grad is not None:
                parameter.grad = accelerator.reduce(parameter.grad, reduction="mean")


def tracker_config(config: Config) -> dict:
    flat = {"artist": config.artist, "base_model": config.base_model, "seed": config.seed}
    for key, value in vars(config.train).items():
        if isinstance(value, int | float | str | bool):
            flat[f"train.{key}"] = value
    return flat
