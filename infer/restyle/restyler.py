"""The restyler: diffusers' img2img pipeline for a base, with the artist LoRA (and its token embedding)
loaded, called once per batch. One loader for the command line, the evaluation and the web app:
`load_base` reads the base and hashes it, `attach_lora` loads and checks a LoRA, `Restyler.load` does
both for one run (fusing the LoRA when a single scale is used)."""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from infer.bases.resolve import load_img2img_pipeline, pipeline_arch, resolve_base
from infer.lora.files import LoraFileError, check_lora_fits
from infer.restyle.png_info import SAMPLER_NAMES
from infer.restyle.settings import Settings

ADAPTER = "style"


def file_sha256(path: Path, skip_header: bool = False) -> str:
    """sha256 of a file; with skip_header, of a safetensors file's tensor data (A1111's LoRA hash)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if skip_header:
            handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LoadedBase:
    """A base pipeline on its device, with what the outputs' metadata says about it."""

    base_model: str
    pipe: object
    device: str
    dtype: object
    arch: str
    sampler: str  # A1111's name for the pipeline's scheduler
    base_hash: str | None  # A1111's "Model hash": the UNet file's sha256, 10 hex digits
    controlnets: dict = field(default_factory=dict)  # ControlNet id/folder -> model, loaded once
    control_pipes: dict = field(default_factory=dict)  # (ControlNets...) -> pipeline sharing the base's


def control_pipeline(base: LoadedBase, models: tuple[str, ...]):
    """The base as diffusers' ControlNet img2img pipeline over `models` (several: multi-ControlNet), or
    the plain img2img pipeline for none. Each ControlNet is checked against the base's UNet before it
    loads, and loads once per process; the pipelines share the base's modules, LoRA layers included."""
    from infer.bases.controlnets import check_controlnet_fits, controlnet_config, load_controlnet

    if not models:
        return base.pipe
    if models not in base.control_pipes:
        for model in models:
            if model not in base.controlnets:
                config = controlnet_config(model)
                check_controlnet_fits(model, config, base.pipe.unet.config, base.arch, base.base_model)
                base.controlnets[model] = load_controlnet(model, base.dtype).to(base.device)
        from diffusers import (
            StableDiffusionControlNetImg2ImgPipeline,
            StableDiffusionXLControlNetImg2ImgPipeline,
        )

        cls = (
            StableDiffusionXLControlNetImg2ImgPipeline
            if base.arch == "sdxl"
            else StableDiffusionControlNetImg2ImgPipeline
        )
        nets = [base.controlnets[model] for model in models]
        pipe = cls.from_pipe(base.pipe, controlnet=nets if len(nets) > 1 else nets[0])
        pipe.set_progress_bar_config(disable=True)
        base.control_pipes[models] = pipe
    return base.control_pipes[models]


def load_base(base_model: str, device: str, dtype) -> LoadedBase:
    quiet_libraries()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipe = load_img2img_pipeline(base_model, dtype=dtype)
    pipe.to(device)  # LoRAs are loaded and fused where the pipeline will run
    pipe.set_progress_bar_config(disable=True)
    unet_files = sorted((resolve_base(base_model) / "unet").glob("*.safetensors"))
    return LoadedBase(
        base_model=base_model,
        pipe=pipe,
        device=device,
        dtype=dtype,
        arch=pipeline_arch(pipe),
        sampler=SAMPLER_NAMES.get(type(pipe.scheduler).__name__, type(pipe.scheduler).__name__),
        base_hash=file_sha256(unet_files[0])[:10] if unet_files else None,
    )


def attach_lora(base: LoadedBase, lora_file: Path, adapter: str) -> str:
    """Load `lora_file` as adapter `adapter` after checking it fits the base; returns its A1111 hash."""
    pipe = base.pipe
    check_lora_fits(lora_file, pipe, base.base_model)
    pipe.load_lora_weights(str(lora_file), adapter_name=adapter)
    if not any(adapter in names for names in pipe.get_list_adapters().values()):
        raise LoraFileError(
            f"{lora_file}: diffusers found no LoRA layers it could apply to base {base.base_model}; "
            "expected a diffusers- or kohya-format LoRA for this base"
        )
    return file_sha256(lora_file, skip_header=True)[:12]


def load_embedding(pipe, path: Path, token: str | None, arch: str) -> None:
    """A pivotal-tuning embedding (A1111 layout) under the trigger token, into each text encoder."""
    from safetensors.torch import load_file

    if not token:
        raise LoraFileError(
            f"{path}: no oeuvre.trigger_token in its metadata or the LoRA's; cannot name the tokens"
        )
    state = load_file(path)
    wanted = {"sd15": [("emb_params", "text_encoder", "tokenizer")]}
    wanted["sdxl"] = [("clip_l", "text_encoder", "tokenizer"), ("clip_g", "text_encoder_2", "tokenizer_2")]
    for key, encoder_name, tokenizer_name in wanted[arch]:
        encoder = getattr(pipe, encoder_name)
        vectors = state.get(key)
        hidden = encoder.get_input_embeddings().weight.shape[1]
        if vectors is None or vectors.dim() != 2 or vectors.shape[1] != hidden:
            found = {k: tuple(v.shape) for k, v in state.items()}
            raise LoraFileError(
                f"{path}: expected an {arch} embedding with {key} of shape [n, {hidden}], found {found}"
            )
        pipe.load_textual_inversion(
            vectors, token=token, text_encoder=encoder, tokenizer=getattr(pipe, tokenizer_name)
        )


class Restyler:
    """One run's settings over a loaded base whose LoRA (if any) is adapter `adapter`, or already fused.

    `pipe` stands in for the base's pipeline where a caller wraps it (the web app reports each step)."""

    def __init__(
        self,
        settings: Settings,
        base: LoadedBase,
        adapter: str | None,
        lora_hash: str | None,
        fused: bool,
        pipe=None,
    ):
        self.settings = settings
        self.device, self.dtype, self.arch = base.device, base.dtype, base.arch
        self.sampler, self.base_hash, self.lora_hash = base.sampler, base.base_hash, lora_hash
        self.pipe = pipe if pipe is not None else base.pipe
        self.adapter = adapter
        self.fused = fused
        self._embeds: dict[tuple, dict] = {}

    @classmethod
    def load(cls, settings: Settings, device: str) -> Restyler:
        """Load the base, the LoRA (fused when one scale is used), the embedding and the IP-Adapter."""
        from oeuvre.devices import choose_dtype, keep_freed_memory

        if device == "cpu":
            keep_freed_memory()  # CPU steps otherwise page-fault their activations back in each time
        base = load_base(settings.base_model, device, choose_dtype(device.split(":")[0], settings.dtype))
        pipe, lora_hash, fused = base.pipe, None, False
        if settings.lora_file is not None:
            lora_hash = attach_lora(base, settings.lora_file, ADAPTER)
            if len(settings.scales) == 1:
                # One scale: fold the LoRA into the weights, then drop the LoRA layers (no per-step cost).
                pipe.fuse_lora(lora_scale=settings.scales[0], adapter_names=[ADAPTER])
                pipe.unload_lora_weights()
                fused = True
        if settings.embedding_file is not None:
            load_embedding(pipe, settings.embedding_file, settings.trigger_token, base.arch)
        if settings.ip_adapter and settings.reference == "nearest":
            from infer.restyle.reference import load_style_ip_adapter

            load_style_ip_adapter(
                pipe, settings.ip_adapter, base.arch, settings.ip_adapter_weight, settings.ip_adapter_scale
            )
        adapter = ADAPTER if settings.lora_file is not None and not fused else None
        pipe = control_pipeline(base, tuple(c.model for c in settings.controls))
        return cls(settings, base, adapter, lora_hash, fused, pipe=pipe)

    def set_scale(self, scale: float) -> None:
        if self.adapter is not None:
            self.pipe.set_adapters([self.adapter], adapter_weights=[scale])

    def _prompt_embeds(self, scale: float, prompt: str | None = None) -> dict:
        """Text embeddings once per scale (a text-encoder LoRA changes them), not once per call."""
        prompt = self.settings.prompt if prompt is None else prompt
        if (scale, prompt) not in self._embeds:
            pipe, s = self.pipe, self.settings
            cfg = s.guidance > 1
            if self.arch == "sdxl":
                out = pipe.encode_prompt(
                    prompt,
                    device=self.device,
                    do_classifier_free_guidance=cfg,
                    negative_prompt=s.negative_prompt,
                )
                keys = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds")
                keys += ("negative_pooled_prompt_embeds",)
            else:
                out = pipe.encode_prompt(prompt, self.device, 1, cfg, negative_prompt=s.negative_prompt)
                keys = ("prompt_embeds", "negative_prompt_embeds")
            self._embeds[scale, prompt] = {
                key: value for key, value in zip(keys, out, strict=True) if value is not None
            }
        return self._embeds[scale, prompt]

    def __call__(
        self,
        images: list,
        seeds: list[int],
        strength: float,
        scale: float,
        prompt=None,
        reference=None,
        controls: list[list] | None = None,
        control_weights: tuple[float, ...] = (),
    ) -> list:
        """prompt: instead of the settings' one; reference: the IP-Adapter image (--reference nearest);
        controls: each image's control images, one per ControlNet, weighted by control_weights."""
        import torch

        embeds = {
            k: v.repeat(len(images), *([1] * (v.dim() - 1)))
            for k, v in self._prompt_embeds(scale, prompt).items()
        }
        if reference is not None and self.settings.ip_adapter:
            embeds["ip_adapter_image"] = [reference] * len(images)
        if self.settings.controls:
            embeds.update(self._control_kwargs(controls, control_weights))
        # CPU generators: the same seed gives the same noise on any device and in any process.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        steps = steps_for_one_denoise(self.settings.steps, strength)
        embeds.update(self._cutoff_kwargs())
        with torch.inference_mode():
            return self.pipe(
                image=images,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=self.settings.guidance,
                generator=generators,
                **embeds,
            ).images

    def _cutoff_kwargs(self) -> dict:
        """--guidance-cutoff below 1: the step-end callback that stops guidance after the guided steps."""
        s = self.settings
        if s.guidance <= 1 or s.guidance_cutoff >= 1:
            return {}
        inputs = ["prompt_embeds"] + (["add_text_embeds", "add_time_ids"] if self.arch == "sdxl" else [])
        return {
            "callback_on_step_end": GuidanceCutoff(s.guidance_cutoff),
            "callback_on_step_end_tensor_inputs": inputs,
        }

    def _control_kwargs(self, controls: list[list] | None, weights: tuple[float, ...]) -> dict:
        s = self.settings
        if controls is None or len(weights) != len(s.controls):
            raise ValueError("restyling with ControlNets needs each image's control images and weights")
        per_net = [[images[i] for images in controls] for i in range(len(s.controls))]
        single = len(s.controls) == 1  # one ControlNet takes plain values, several take lists
        if not single:  # diffusers' multi-ControlNet takes one image, or one batch tensor, per net
            per_net = [_batch_tensor(images) for images in per_net]
        return {
            "control_image": per_net[0] if single else per_net,
            "controlnet_conditioning_scale": weights[0] if single else list(weights),
            "control_guidance_start": s.control_start,
            "control_guidance_end": s.control_end,
        }


def guided_steps(denoising_steps: int, cutoff: float) -> int:
    """How many of the denoising steps keep classifier-free guidance: at least one."""
    return max(1, math.ceil(denoising_steps * cutoff - 1e-9))


class GuidanceCutoff:
    """diffusers' dynamic classifier-free guidance: after the first `cutoff` of the run's denoising
    steps (`guided_steps`), set the pipeline's guidance scale to 0 (its `do_classifier_free_guidance`
    turns false) and keep only the prompted half of the conditioning, so every later UNet call runs on
    half the batch. Not exact: the later steps follow the prompt's prediction alone, unguided."""

    def __init__(self, cutoff: float):
        self.cutoff = cutoff

    def __call__(self, pipe, step_index: int, timestep, tensors: dict) -> dict:
        if step_index + 1 == guided_steps(pipe.num_timesteps, self.cutoff):
            pipe._guidance_scale = 0.0  # the pipeline sets it afresh on its next call
            tensors = {key: value.chunk(2)[-1] for key, value in tensors.items()}
        return tensors


def _batch_tensor(images: list):
    """PIL images as one [batch, 3, H, W] tensor in [0, 1], as the pipelines take control images."""
    import numpy as np
    import torch

    arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255 for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


def process_state(preference: str):
    """This process's Accelerate state and device: under `accelerate launch` each process takes its own
    GPU; on CPU the processes talk over gloo (PartialState must be told cpu=True to see them)."""
    from accelerate import PartialState

    from oeuvre.devices import choose_device

    device = choose_device(preference)
    state = PartialState(cpu=device == "cpu")
    if device == "cuda" and state.num_processes > 1:
        device = str(state.device)
    return state, device


def quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def steps_for_one_denoise(steps: int, strength: float) -> int:
    """img2img runs int(steps x strength) steps; under one, DDIM and Euler have no timestep left and
    crash. Raise the count just enough for one step (PNDM hid this by running one step anyway)."""
    return max(steps, math.ceil(1.0 / strength - 1e-9)) if strength > 0 else steps
