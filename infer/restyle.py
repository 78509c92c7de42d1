"""`python -m infer restyle`: content photos in, the artist's style out, via diffusers' own img2img pipelines.

Reads top to bottom: settings -> LoRA and base -> inputs (split across Accelerate processes) -> load the
pipeline with the LoRA (fused for one scale, unfused for a sweep) -> batches of same-size images ->
PNGs with A1111 `parameters` and a JSON sidecar, plus a labelled grid for sweeps.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer.inputs import InputError, collect_inputs, open_image, output_stems, prepare
from infer.lora_files import LoraFileError, check_lora_fits, find_run_lora, read_lora_metadata
from infer.png_info import SAMPLER_NAMES, format_parameters, png_with_parameters
from infer.sweep import grid_image, parse_sweep
from oeuvre.atomic import atomic_write_bytes, atomic_write_text

ADAPTER = "style"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The restyle flags. Unset ones (None) come from the run's config.yaml, else configs/base.yaml."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive), globs")
    parser.add_argument(
        "--lora", required=True, help="a run folder (runs/<artist>), a .safetensors LoRA, or none"
    )
    parser.add_argument("--base", help="base model (hub id or folder); default: the LoRA's oeuvre.base_model")
    parser.add_argument("--strength", type=float, help="img2img denoising strength, in (0, 1]")
    parser.add_argument("--scale", type=float, help="LoRA scale, >= 0")
    parser.add_argument("--steps", type=int, help="inference steps (img2img runs about steps x strength)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, help="first seed; --num N uses seed .. seed+N-1")
    parser.add_argument("--num", type=int, help="images per input (one per seed)")
    parser.add_argument("--prompt", help="default: the LoRA's trigger caption")
    parser.add_argument("--negative", help="negative prompt")
    parser.add_argument("--size", type=int, help="about size x size pixels, aspect ratio kept")
    parser.add_argument("--keep-size", action="store_true", help="return each image at its original size")
    parser.add_argument("--batch-size", type=int, help="same-size images per pipeline call")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    parser.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument(
        "--sweep", nargs="+", metavar="KEY=V1,V2", help="e.g. strength=0.3,0.5,0.7 scale=0.5,1.0"
    )
    parser.add_argument("--out", type=Path, help="output folder; default RUN_DIR/restyled or ./restyled")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--reference",
        choices=["none", "nearest"],
        default="none",
        help="nearest: add each input's nearest work of the artist (title/caption; image with --ip-adapter)",
    )
    parser.add_argument("--ip-adapter", help="IP-Adapter folder or hub id, used with --reference nearest")
    parser.add_argument("--ip-adapter-weight", help="its weight file name (default: h94's for the arch)")
    parser.add_argument("--ip-adapter-scale", type=float, default=1.0, help="scale on the style layers")


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything one restyle run uses, resolved from flags, the run's config and the LoRA's metadata."""

    base_model: str
    lora_file: Path | None
    embedding_file: Path | None
    trigger_token: str | None
    prompt: str
    negative_prompt: str
    strengths: tuple[float, ...]
    scales: tuple[float, ...]  # (0.0,) and unused when there is no LoRA
    sweep: bool
    steps: int
    guidance: float
    seeds: tuple[int, ...]
    size_px: int
    keep_size: bool
    batch_size: int
    device: str
    dtype: str
    out: Path
    overwrite: bool
    reference: str = "none"  # none | nearest (infer/reference.py)
    run_dir: Path | None = None
    ip_adapter: str | None = None
    ip_adapter_weight: str | None = None
    ip_adapter_scale: float = 1.0


@dataclass(frozen=True)
class Job:
    """One output image."""

    input: Path
    stem: str
    seed: int
    strength: float
    scale: float

    def filename(self, has_lora: bool) -> str:
        lora = f"lora{self.scale:g}" if has_lora else "nolora"
        return f"{self.stem}_seed{self.seed}_str{self.strength:g}_{lora}.png"


def _check(name: str, value: float, ok: bool, expected: str) -> None:
    if not ok:
        raise InputError(f"{name} {value:g}: expected {expected}")


def resolve_settings(args: argparse.Namespace) -> Settings:
    from oeuvre.config import PROJECT_CONFIGS, load_config

    lora_file, embedding_file, run_dir = _resolve_lora(args.lora)
    metadata = read_lora_metadata(lora_file) if lora_file else {}
    run_config_file = run_dir / "config.yaml" if run_dir else None
    has_run_config = bool(run_config_file and run_config_file.is_file())
    config = load_config(run_config_file if has_run_config else PROJECT_CONFIGS / "base.yaml")
    infer = config.infer

    def pick(flag: Any, default: Any) -> Any:
        return default if flag is None else flag

    base = args.base or metadata.get("oeuvre.base_model") or (config.base_model if has_run_config else None)
    if base is None and lora_file is None:
        base = config.base_model
    if base is None:
        raise LoraFileError(
            f"{lora_file}: has no oeuvre.base_model metadata; pass the base model with --base"
        )

    trigger = (
        embedding_file and read_lora_metadata(embedding_file).get("oeuvre.trigger_token")
    ) or metadata.get("oeuvre.trigger_token")
    if has_run_config:
        trigger = trigger or config.trigger_token
    caption = metadata.get("oeuvre.caption")
    if caption is None and trigger and lora_file:
        caption = config.data.caption_template.replace("{token}", trigger)
    prompt = pick(args.prompt, infer.prompt if infer.prompt is not None else (caption or ""))

    sweep = parse_sweep(args.sweep or [])
    strengths = tuple(sweep.get("strength", [pick(args.strength, infer.strength)]))
    scales = tuple(sweep.get("scale", [pick(args.scale, infer.lora_scale)]))
    for strength in strengths:
        _check("--strength", strength, 0 < strength <= 1, "a value in (0, 1]")
    for scale in scales:
        _check("--scale", scale, scale >= 0, "a LoRA scale >= 0")
    if lora_file is None:
        if "scale" in sweep:
            raise InputError("--sweep scale=...: there is no LoRA to scale with --lora none")
        scales = (0.0,)
    steps = pick(args.steps, infer.steps)
    _check("--steps", steps, steps > 0, "a positive number of steps")
    guidance = pick(args.guidance, infer.guidance)
    _check("--guidance", guidance, guidance >= 0, "a guidance scale >= 0")
    num = pick(args.num, infer.num_images)
    _check("--num", num, num > 0, "at least one image per input")
    size = pick(args.size, infer.size_px)
    _check("--size", size, size >= 8, "at least 8 pixels")
    batch_size = pick(args.batch_size, infer.batch_size)
    _check("--batch-size", batch_size, batch_size > 0, "a positive batch size")
    seed = pick(args.seed, config.seed)
    _check("--seed", seed, seed >= 0, "a seed >= 0")
    out = args.out or (run_dir / "restyled" if run_dir else Path("restyled"))
    if getattr(args, "ip_adapter", None) and getattr(args, "reference", "none") != "nearest":
        raise InputError(f"--ip-adapter {args.ip_adapter}: only used with --reference nearest")
    return Settings(
        base_model=str(base),
        lora_file=lora_file,
        embedding_file=embedding_file,
        trigger_token=trigger or None,
        prompt=prompt,
        negative_prompt=pick(args.negative, infer.negative_prompt),
        strengths=strengths,
        scales=scales,
        sweep=bool(sweep),
        steps=steps,
        guidance=guidance,
        seeds=tuple(range(seed, seed + num)),
        size_px=size,
        keep_size=args.keep_size,
        batch_size=batch_size,
        device=pick(args.device, infer.device),
        dtype=pick(args.dtype, infer.dtype),
        out=Path(out),
        overwrite=args.overwrite,
        reference=getattr(args, "reference", "none"),
        run_dir=run_dir,
        ip_adapter=getattr(args, "ip_adapter", None),
        ip_adapter_weight=getattr(args, "ip_adapter_weight", None),
        ip_adapter_scale=getattr(args, "ip_adapter_scale", 1.0),
    )


def _resolve_lora(spec: str) -> tuple[Path | None, Path | None, Path | None]:
    """(LoRA file, embedding file beside it, run folder) for `--lora RUN_DIR|FILE|none`."""
    if spec.lower() == "none":
        return None, None, None
    path = Path(spec).expanduser()
    if path.is_dir():
        lora, embedding = find_run_lora(path)
        return lora, embedding, path
    read_lora_metadata(path)  # refuses pickles by name, missing and truncated files, before anything loads
    if not path.is_file():
        raise LoraFileError(f"--lora {spec}: no such file or run folder")
    embedding = path.with_name(f"{path.stem}_emb.safetensors")
    run_dir = path.parent.parent if path.parent.name == "lora" else None
    return path, embedding if embedding.is_file() else None, run_dir


def plan_jobs(settings: Settings, inputs: list[Path]) -> list[Job]:
    stems = output_stems(inputs)
    return [
        Job(path, stems[path], seed, strength, scale)
        for path in inputs
        for seed in settings.seeds
        for strength in settings.strengths
        for scale in settings.scales
    ]


def grid_name(stem: str, seed: int) -> str:
    return f"{stem}_seed{seed}_grid.png"


def refuse_overwrite(settings: Settings, jobs: list[Job]) -> None:
    """Fail before loading any model when an output exists and --overwrite was not given."""
    if settings.overwrite:
        return
    has_lora = settings.lora_file is not None
    names = [job.filename(has_lora) for job in jobs]
    if settings.sweep:
        names += sorted({grid_name(job.stem, job.seed) for job in jobs})
    existing = [name for name in names if (settings.out / name).exists()]
    if existing:
        raise InputError(
            f"{settings.out / existing[0]}: already exists ({len(existing)} of {len(names)} outputs do); "
            f"pass --overwrite to replace them or choose another --out"
        )


# -- the pipeline --------------------------------------------------------------------------------


def file_sha256(path: Path, skip_header: bool = False) -> str:
    """sha256 of a file; with skip_header, of a safetensors file's tensor data (A1111's LoRA hash)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if skip_header:
            handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Restyler:
    """diffusers' img2img pipeline with the artist LoRA (and embedding) loaded; one call per batch."""

    def __init__(self, settings: Settings, device: str):
        from infer.base_model import load_img2img_pipeline, resolve_base
        from oeuvre.devices import choose_dtype, keep_freed_memory

        self.settings = settings
        self.device = device
        if device == "cpu":
            keep_freed_memory()  # CPU steps otherwise page-fault their activations back in each time
        self.dtype = choose_dtype(self.device.split(":")[0], settings.dtype)
        _quiet_libraries()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = load_img2img_pipeline(settings.base_model, dtype=self.dtype)
        self.arch = "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15"
        pipe.to(self.device)  # load and fuse the LoRA where it will run
        if settings.lora_file is not None:
            check_lora_fits(settings.lora_file, pipe, settings.base_model)
            pipe.load_lora_weights(str(settings.lora_file), adapter_name=ADAPTER)
            if not any(ADAPTER in names for names in pipe.get_list_adapters().values()):
                raise LoraFileError(
                    f"{settings.lora_file}: diffusers found no LoRA layers it could apply to base "
                    f"{settings.base_model}; expected a diffusers- or kohya-format LoRA for this base"
                )
            if len(settings.scales) == 1:
                # One scale: fold the LoRA into the weights, then drop the LoRA layers (no per-step cost).
                pipe.fuse_lora(lora_scale=settings.scales[0], adapter_names=[ADAPTER])
                pipe.unload_lora_weights()
        if settings.embedding_file is not None:
            load_embedding(pipe, settings.embedding_file, settings.trigger_token, self.arch)
        if settings.ip_adapter and settings.reference == "nearest":
            from infer.reference import load_style_ip_adapter

            load_style_ip_adapter(
                pipe, settings.ip_adapter, self.arch, settings.ip_adapter_weight, settings.ip_adapter_scale
            )
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.fused = settings.lora_file is not None and len(settings.scales) == 1
        self._embeds: dict[float, tuple] = {}
        self.sampler = SAMPLER_NAMES.get(type(pipe.scheduler).__name__, type(pipe.scheduler).__name__)
        base_dir = resolve_base(settings.base_model)
        unet_files = sorted((base_dir / "unet").glob("*.safetensors"))
        self.base_hash = file_sha256(unet_files[0])[:10] if unet_files else None
        self.lora_hash = (
            file_sha256(settings.lora_file, skip_header=True)[:12] if settings.lora_file else None
        )

    def set_scale(self, scale: float) -> None:
        if self.settings.lora_file is not None and not self.fused:
            self.pipe.set_adapters([ADAPTER], adapter_weights=[scale])

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
        self, images: list, seeds: list[int], strength: float, scale: float, prompt=None, reference=None
    ) -> list:
        """prompt: instead of the settings' one; reference: the IP-Adapter image (--reference nearest)."""
        import torch

        embeds = {
            k: v.repeat(len(images), *([1] * (v.dim() - 1)))
            for k, v in self._prompt_embeds(scale, prompt).items()
        }
        if reference is not None and self.settings.ip_adapter:
            embeds["ip_adapter_image"] = [reference] * len(images)
        # CPU generators: the same seed gives the same noise on any device and in any process.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        with torch.inference_mode():
            return self.pipe(
                image=images,
                strength=strength,
                num_inference_steps=self.settings.steps,
                guidance_scale=self.settings.guidance,
                generator=generators,
                **embeds,
            ).images


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


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


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


# -- writing -------------------------------------------------------------------------------------


def write_output(path: Path, image, record: dict[str, Any]) -> None:
    """The PNG (with its `parameters` chunk) and its JSON sidecar, each written atomically."""
    atomic_write_bytes(path, png_with_parameters(image, record["parameters"]))
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")


def describe(
    restyler: Restyler, job: Job, size: tuple[int, int], out_size: tuple[int, int], prompt=None
) -> dict[str, Any]:
    s = restyler.settings
    if prompt is not None:  # --reference nearest: this input's own prompt
        from dataclasses import replace

        s = replace(s, prompt=prompt)
    lora_name = s.lora_file.stem if s.lora_file else None
    fields = {
        "Steps": s.steps,
        "Sampler": restyler.sampler,
        "CFG scale": f"{s.guidance:g}",
        "Seed": job.seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model hash": restyler.base_hash,
        "Model": Path(s.base_model).name if Path(s.base_model).exists() else s.base_model,
        "Denoising strength": f"{job.strength:g}",
        "Lora hashes": f"{lora_name}: {restyler.lora_hash}" if lora_name else None,
        "Version": "oeuvre",
    }
    lora = (lora_name, job.scale) if lora_name else None
    return {
        "parameters": format_parameters(s.prompt, s.negative_prompt, fields, lora),
        "prompt": s.prompt,
        "negative_prompt": s.negative_prompt,
        "steps": s.steps,
        "sampler": restyler.sampler,
        "guidance": s.guidance,
        "seed": job.seed,
        "strength": job.strength,
        "width": size[0],
        "height": size[1],
        "output_width": out_size[0],
        "output_height": out_size[1],
        "base_model": s.base_model,
        "base_hash": restyler.base_hash,
        "lora": None
        if lora_name is None
        else {"file": str(s.lora_file), "name": lora_name, "hash": restyler.lora_hash, "scale": job.scale},
        "embedding": str(s.embedding_file) if s.embedding_file else None,
        "trigger_token": s.trigger_token,
        "input": str(job.input),
        "device": restyler.device,
        "dtype": str(restyler.dtype).removeprefix("torch."),
    }


# -- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    inputs = collect_inputs(args.inputs)
    jobs = plan_jobs(settings, inputs)  # names from the whole input list, so they match any split
    state, device = process_state(settings.device)
    with state.split_between_processes(inputs) as mine:
        my_inputs = list(mine)
    # Each process checks only its own outputs: another may already be writing its share.
    refuse_overwrite(settings, [job for job in jobs if job.input in set(my_inputs)])
    tag = f"[{state.process_index}/{state.num_processes}] " if state.num_processes > 1 else ""

    restyler = Restyler(settings, device)
    references = {}
    if settings.reference == "nearest":
        from infer.reference import nearest_references, reference_prompt

        references = nearest_references(settings.run_dir, my_inputs, "weights-free")
        for path, ref in references.items():
            print(f"{tag}{path}: nearest work {ref.work.id} ({ref.similarity:.3f}) {ref.work.label}")
    pictures, skipped = {}, []
    for path in my_inputs:
        try:
            pictures[path] = prepare(open_image(path), settings.size_px, restyler.pipe.vae_scale_factor)
        except InputError as exc:
            skipped.append(path)
            print(f"{tag}skipped: {exc}", file=sys.stderr)

    has_lora = settings.lora_file is not None
    written, results = 0, {}
    my_jobs = [job for job in jobs if job.input in pictures]
    for scale in settings.scales:
        restyler.set_scale(scale)
        for strength in settings.strengths:
            # Same-size images share a batch; the order within a batch does not change any image.
            by_size = defaultdict(list)
            for job in (j for j in my_jobs if j.scale == scale and j.strength == strength):
                by_size[pictures[job.input][0].size].append(job)
            for size, group in by_size.items():
                batch_size = 1 if references else settings.batch_size  # each input its own prompt
                for start in range(0, len(group), batch_size):
                    batch = group[start : start + batch_size]
                    ref = references.get(batch[0].input)
                    prompt = reference_prompt(settings.prompt, ref.work) if ref else None
                    images = restyler(
                        [pictures[j.input][0] for j in batch],
                        [j.seed for j in batch],
                        strength,
                        scale,
                        prompt,
                        ref.image() if ref and settings.ip_adapter else None,
                    )
                    for job, image in zip(batch, images, strict=True):
                        original = pictures[job.input][1]
                        if settings.keep_size and image.size != original:
                            from PIL import Image

                            image = image.resize(original, Image.Resampling.LANCZOS)
                        record = describe(restyler, job, size, image.size, prompt)
                        if ref:
                            record["reference"] = {"work": ref.work.id, "similarity": ref.similarity}
                        write_output(settings.out / job.filename(has_lora), image, record)
                        results[job] = image
                        written += 1
    if settings.sweep:
        for (stem, seed), group in itertools.groupby(
            sorted(results, key=lambda j: (j.stem, j.seed)), key=lambda j: (j.stem, j.seed)
        ):
            tiles = {(j.strength, j.scale): results[j] for j in group}
            title = f"{stem}  seed {seed}  {settings.prompt}"[:120]
            grid = grid_image(tiles, settings.strengths, settings.scales, title=title)
            atomic_write_bytes(settings.out / grid_name(stem, seed), _png(grid))
    print(f"{tag}restyled {len(pictures)} of {len(my_inputs)} inputs: {written} images in {settings.out}")
    if skipped:
        print(f"{tag}{len(skipped)} input(s) skipped as unreadable (see above)", file=sys.stderr)
        if not pictures:
            raise InputError(f"no readable images among the inputs ({', '.join(map(str, skipped))})")
        return 1
    return 0


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
