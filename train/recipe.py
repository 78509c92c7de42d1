"""The training recipe: set up, then loop over `training_step` with logging, validation and checkpoints.

`training_step` is the whole of one step, top to bottom; everything else here is bookkeeping."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from oeuvre.config_schema import Config, TrainConfig
from oeuvre.devices import freed_memory_returned, keep_freed_memory, release_module_pages, release_pages
from oeuvre.errors import OeuvreError
from oeuvre.paths import RunPaths
from train import checkpoints
from train.batches import Batch, fill_latent_cache, make_batch, micro_batches, step_generator
from train.buckets import make_buckets
from train.cache import LatentCache, PromptCache
from train.images import ArtistImages
from train.loss import (
    make_noise,
    per_sample_weights,
    sample_timesteps,
    target_for,
    timestep_weights,
    weighted_mse,
)
from train.masks import loss_weights, to_latent_grid
from train.models import Components, add_lora_adapters, load_components
from train.optimizer import make_optimizer
from train.phases import PhaseClock
from train.pivotal import NewTokens, add_trigger_tokens
from train.preservation import Preservation

log = logging.getLogger("oeuvre.train")


class TrainingDiverged(OeuvreError):
    exit_code = 1


class DistributedSetupError(OeuvreError):
    exit_code = 2


@dataclass
class Step:
    """Everything training_step reads besides the batch."""

    parts: Components
    cfg: TrainConfig
    encode: object  # prompts -> (embeddings, pooled or None)
    timestep_weights: torch.Tensor
    device: torch.device
    weight_dtype: torch.dtype
    unet: torch.nn.Module | None = None  # the prepared (DDP-wrapped) UNet to train through; None: parts.unet
    trigger: str = ""  # output preservation swaps it for train.preservation_prompt


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
    time_ids = batch.time_ids.to(step.device)
    added = None if pooled is None else {"text_embeds": pooled, "time_ids": time_ids}
    embeddings = embeddings.to(step.weight_dtype)
    n = latents.shape[0] - batch.num_class
    preserve = None
    if cfg.preservation_weight:  # the class-word prompt too, its target from the base with adapters off
        preserve = Preservation.make(parts, step, batch.captions[:n], noisy[:n], timesteps[:n], time_ids[:n])
        noisy, timesteps, embeddings, added = preserve.extend(noisy, timesteps, embeddings, added)
    unet = parts.unet if step.unet is None else step.unet  # through DDP: gradients are all-reduced
    prediction = unet(noisy, timesteps, embeddings, added_cond_kwargs=added).sample
    # 4. loss: min-SNR weighted MSE; class images weigh prior_loss_weight, preservation preservation_weight
    timesteps = timesteps[: latents.shape[0]]
    target = target_for(parts.noise_scheduler, latents, noise, timesteps)
    weights = per_sample_weights(parts.noise_scheduler, timesteps.cpu(), cfg.snr_gamma)
    pixel_weights = None
    if batch.masks is not None:  # frames, signatures: weigh mask_floor_weight where the mask is 0
        grid = to_latent_grid(batch.masks.to(step.device), tuple(latents.shape[-2:]))
        pixel_weights = loss_weights(grid, cfg.mask_floor_weight)
    loss = weighted_mse(prediction[:n], target[:n], weights[:n], pixel_weights)
    if batch.num_class:
        loss = loss + cfg.prior_loss_weight * weighted_mse(
            prediction[n : latents.shape[0]], target[n:], weights[n:]
        )
    if preserve is not None:
        loss = loss + cfg.preservation_weight * weighted_mse(
            prediction[latents.shape[0] :], preserve.target, weights[:n]
        )
    return loss


def trainable_text_encoders(parts: Components) -> list[torch.nn.Module]:
    return [m for m in parts.text_encoders if any(p.requires_grad for p in m.parameters())]


@dataclass
class Run:
    """What `setup` builds and the loop uses: the prepared models, data, optimiser and where we are."""

    accelerator: object
    paths: RunPaths
    parts: Components
    step: Step
    new_tokens: list[NewTokens]
    trained_modules: list[torch.nn.Module]  # the UNet first, then the text encoders that train
    train_set: ArtistImages
    holdout_set: ArtistImages | None  # None: the dataset holds no holdout works
    class_set: ArtistImages | None
    latent_cache: LatentCache | None
    optimizer: object
    lr_scheduler: object
    global_step: int
    clock: PhaseClock  # time and memory per phase, into report/train_phases.json


def run(config: Config) -> Path:
    """Train the artist LoRA; returns the LoRA file. Resumes from the latest checkpoint by default."""
    state = setup(config)
    world = default_process_group()
    lora_file = train_and_save(config, state)
    # Torch frees a DDP model's gloo group from the model's Reducer with the GIL held, and the group's
    # destructor then waits for a worker thread that needs the GIL to release a tensor: a deadlock at
    # exit (one two-process run in ten on 2 cores). So the models go first, while `world` still holds
    # the group, and the group last, through its own binding, which releases the GIL.
    del state
    gc.collect()
    del world
    return lora_file


def default_process_group():
    """The default process group when running distributed (a reference that keeps it alive), else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    return None


def train_and_save(config: Config, state: Run) -> Path:
    """The training loop, the last validation, the rank check and the output files."""
    from train import finish, validation

    first_step = state.global_step
    train_loop(config, state)
    state.clock.mark("training")
    if first_step < state.global_step == config.train.max_train_steps:  # the last step's samples
        with sampling_memory(state.accelerator):
            validation.run(
                config, state.parts, state.holdout_set, state.step, state.accelerator, state.global_step,
                state.paths,
            )  # fmt: skip
        state.clock.mark("final validation")
    state.accelerator.wait_for_everyone()
    checkpoints.check_ranks_agree(state.accelerator, state.trained_modules)
    holdout_works = len(state.holdout_set) if state.holdout_set is not None else 0
    lora_file = finish.save_outputs(
        config, state.parts, state.new_tokens, state.accelerator, state.paths, state.train_set, holdout_works
    )
    state.clock.mark("writing files")
    state.accelerator.end_training()
    if state.accelerator.is_main_process:
        state.clock.write(state.paths.report / "train_phases.json")
        state.accelerator.print(state.clock.line())
    return lora_file


def setup(config: Config) -> Run:
    """Check the input, start Accelerate, load and prepare the models and data, resume if asked."""
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    from train import preflight
    from train.prior import class_images

    clock = PhaseClock()
    cfg = config.train
    paths = RunPaths(config.output_dir)
    plan = preflight.check(config)  # bad input fails here, before any model loads
    accelerator = make_accelerator(cfg, paths)
    set_seed(config.seed)  # the same LoRA initialisation on every process
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )
    parts = load_components(config.base_model)
    # Adapters first: peft's injection freezes every other weight, the new token rows included.
    add_lora_adapters(parts, cfg)
    new_tokens: list[NewTokens] = []
    if cfg.pivotal_tuning:
        new_tokens = add_trigger_tokens(
            parts.tokenizers,
            parts.text_encoders,
            config.trigger_token,
            cfg.num_new_tokens,
            cfg.initializer_token,
        )
    trained_encoders = trainable_text_encoders(parts)
    place_for_training(parts, accelerator.device, weight_dtype, trained_encoders, cfg.gradient_checkpointing)
    if cfg.compile:
        compile_unet(parts.unet)
    clock.mark("load models")

    buckets = make_buckets(cfg.resolution_px)
    train_set = ArtistImages.from_split(plan.dataset_dir, "train", buckets, plan.hint)
    holdout_set = (
        ArtistImages.from_split(plan.dataset_dir, "holdout", buckets, plan.hint) if plan.has_holdout else None
    )
    class_set = class_images(config, parts, buckets, accelerator) if cfg.with_prior_preservation else None
    latent_cache = LatentCache(paths.root / "cache" / "latents", parts.vae) if plan.cache_latents else None
    if latent_cache is not None:
        fill_latent_cache(latent_cache, train_set, class_set, parts.vae, accelerator)
        if accelerator.device.type == "cpu":  # the steps read latents; the VAE's pages can go
            release_module_pages(parts.vae)
    clock.mark("latent cache")
    encode = prompt_encoder(parts, accelerator.device)
    if plan.cache_text_embeddings:
        prompts = PromptCache(encode)
        for images in (train_set, class_set, holdout_set):  # every caption now: the encoders can rest
            for row in images.rows if images is not None else []:
                prompts(row["text"])
        prompts("")  # caption dropout's unconditional caption
        if accelerator.device.type == "cpu":  # a prompt not seen yet brings their pages back
            for encoder in parts.text_encoders:
                release_module_pages(encoder)
        encode = batch_of(prompts)

    optimizer = make_optimizer(cfg, parts, trained_encoders, new_tokens)
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=cfg.max_train_steps * accelerator.num_processes,
    )
    # The UNet's forward must go through the prepared (DDP) module: that is what all-reduces gradients.
    unet, optimizer, lr_scheduler = accelerator.prepare(parts.unet, optimizer, lr_scheduler)
    trained_modules = [parts.unet, *trained_encoders]
    checkpoints.register_trainable_only_hooks(accelerator, trained_modules)
    global_step = resume(accelerator, paths, cfg)
    accelerator.init_trackers("oeuvre", config=tracker_config(config))
    weights = timestep_weights(cfg, parts.noise_scheduler.config.num_train_timesteps)
    step = Step(parts, cfg, encode, weights, accelerator.device, weight_dtype, unet, config.trigger_token)
    clock.mark("prepare")
    return Run(
        accelerator, paths, parts, step, new_tokens, trained_modules, train_set, holdout_set,
        class_set, latent_cache, optimizer, lr_scheduler, global_step, clock,
    )  # fmt: skip


def make_accelerator(cfg: TrainConfig, paths: RunPaths):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    check_backend_fits_device()
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(paths.root), logging_dir=str(paths.logs)),
        # Several processes without CUDA (accelerate launch --multi_gpu on CPU): gloo, not one process each.
        cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
    )
    accelerator.print(
        f"training on {accelerator.num_processes} process(es), device {accelerator.device}, "
        f"{accelerator.distributed_type.value}"
    )
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # CPU steps otherwise page-fault their activations back in each time
    return accelerator


def resume(accelerator, paths: RunPaths, cfg: TrainConfig) -> int:
    """The optimiser step to continue from: the checkpoint's (its state loaded), else 0."""
    resume_from = checkpoints.resume_point(paths.checkpoints, cfg.resume)
    if resume_from is None:
        return 0
    accelerator.load_state(str(resume_from))
    global_step = checkpoints.checkpoint_step(resume_from)
    accelerator.print(f"resumed from {resume_from} (step {global_step})")
    if global_step >= cfg.max_train_steps:
        accelerator.print(f"already trained to step {global_step}; writing the LoRA files")
    return global_step


def train_loop(config: Config, state: Run) -> None:
    """Micro-batch after micro-batch: step, backward, (every k-th) optimiser step, log, validate, save."""
    from tqdm.auto import tqdm

    from train import validation

    cfg, accelerator, step = config.train, state.accelerator, state.step
    progress = tqdm(
        total=cfg.max_train_steps,
        initial=state.global_step,
        desc="train",
        disable=not accelerator.is_local_main_process,
    )
    trained_encoders = state.trained_modules[1:]
    params = [p for m in state.trained_modules for p in m.parameters() if p.requires_grad]
    batches = micro_batches(
        state.train_set,
        cfg.train_batch_size,
        config.seed,
        accelerator.process_index,
        accelerator.num_processes,
        state.global_step * cfg.gradient_accumulation_steps,
    )
    for position, indices in batches:
        if state.global_step >= cfg.max_train_steps:
            break
        generator = step_generator(config.seed, position)
        batch = make_batch(indices, state.train_set, state.class_set, cfg, state.latent_cache, generator)
        with accelerator.accumulate(step.unet):
            loss = training_step(batch, step, generator)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"non-finite loss ({loss.item()}) at step {state.global_step + 1}; stopped without "
                    f"saving it. The last good checkpoint stays in {state.paths.checkpoints}; "
                    "lower train.lr or use fp32"
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                sync_unwrapped_grads(accelerator, trained_encoders)
                grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            state.optimizer.step()
            state.lr_scheduler.step()
            state.optimizer.zero_grad(set_to_none=True)
            for tokens in state.new_tokens:
                tokens.restore_frozen_rows()
        if not accelerator.sync_gradients:
            continue
        state.global_step += 1
        progress.update(1)
        logs = {"loss": loss.item(), "lr": state.lr_scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)}
        progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        accelerator.log(logs, step=state.global_step)
        if state.global_step % cfg.validation_every == 0 and state.global_step < cfg.max_train_steps:
            with sampling_memory(accelerator):
                validation.run(
                    config, state.parts, state.holdout_set, step, accelerator, state.global_step, state.paths
                )
        if state.global_step % cfg.checkpoint_every == 0 and state.global_step < cfg.max_train_steps:
            if not checkpoints.all_finite(state.trained_modules):
                raise TrainingDiverged(
                    f"non-finite weights at step {state.global_step}; checkpoint not written"
                )
            checkpoints.save_checkpoint(
                accelerator, state.paths.checkpoints, state.global_step, cfg.checkpoints_keep
            )
    progress.close()


def sampling_memory(accelerator):
    """On CPU, validation samples with glibc's default thresholds and the steps' freed memory handed
    back (oeuvre.devices.freed_memory_returned): kept, it would only add to sampling's own."""
    return freed_memory_returned() if accelerator.device.type == "cpu" else contextlib.nullcontext()


def check_backend_fits_device() -> None:
    """Fail at once, with what to do, for an Accelerate config this machine cannot run."""
    if (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        and not torch.cuda.is_available()
    ):
        raise DistributedSetupError(
            "DeepSpeed (configs/accelerate/deepspeed_zero2.yaml) needs CUDA GPUs and none is visible here; "
            "on CPU use `accelerate launch --multi_gpu --num_processes N` (DDP over gloo)"
        )


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

    parts.unet.to(device, weight_dtype)
    to_memory_format(parts.unet, memory_format)
    parts.vae.to(device, torch.float32)  # the SDXL VAE overflows in fp16; it mostly runs once anyway
    for encoder in parts.text_encoders:
        encoder.to(device, torch.float32 if encoder in trained_encoders else weight_dtype)
    cast_training_params([parts.unet, *trained_encoders], dtype=torch.float32)
    if gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()


def to_memory_format(module: torch.nn.Module, memory_format: torch.memory_format) -> None:
    """Each 4-D weight (the convolutions) into `memory_format`, one at a time, the old copy's pages
    handed back as it goes. `module.to(memory_format=...)` would leave the old weights' pages of the
    memory-mapped checkpoint resident: on CPU about 2.2 GB more peak memory for the SD 1.5 UNet. On a
    GPU the weights were copied to the device already, so nothing is doubled there either way."""
    for parameter in module.parameters():
        if parameter.dim() == 4 and not parameter.is_contiguous(memory_format=memory_format):
            old = parameter.data
            parameter.data = old.contiguous(memory_format=memory_format)
            release_pages(old)


def compile_unet(unet: torch.nn.Module) -> None:
    """Regional compilation: torch.compile each repeated transformer block (diffusers'
    compile_repeated_blocks) rather than the whole UNet. The blocks are all one class, so they share
    compiled code and the compile costs a fraction of a whole-model one; convolutions stay eager
    (oneDNN and cuDNN run them as they would compiled). The modules keep their names, so
    checkpoints and LoRA files are unchanged."""
    unet.compile_repeated_blocks()


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
