"""What one restyle run does, before any model loads: the flags, their resolution against the run's
config and the LoRA's metadata (`Settings`), the output images it will write (`Job`s), and the check
that nothing existing is overwritten by accident."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer.lora.files import LoraFileError, find_run_lora, read_lora_metadata
from infer.lora.recommended import recommended_settings
from infer.restyle.control import ControlSpec, add_control_arguments, resolve_controls
from infer.restyle.sweep import parse_sweep
from oeuvre.inputs import InputError, output_stems


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
    parser.add_argument(
        "--guidance-cutoff",
        type=float,
        help="fraction of the denoising steps with guidance, in (0, 1]; the rest run at half the cost "
        "(not exact below 1)",
    )
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
        "--sweep",
        nargs="+",
        metavar="KEY=V1,V2",
        help="e.g. strength=0.3,0.5,0.7 scale=0.5,1.0 control=0.5,1.0 (the weight of every --control)",
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
    add_control_arguments(parser)


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
    reference: str = "none"  # none | nearest (infer/restyle/reference.py)
    run_dir: Path | None = None
    ip_adapter: str | None = None
    ip_adapter_weight: str | None = None
    ip_adapter_scale: float = 1.0
    # --control (infer/restyle/control.py): ControlNets, in order; control_sweep replaces every weight.
    controls: tuple[ControlSpec, ...] = ()
    control_sweep: tuple[float, ...] = ()
    control_start: float = 0.0
    control_end: float = 1.0
    canny_low: int = 100
    canny_high: int = 200
    depth_model: str | None = None
    save_control: bool = False
    guidance_cutoff: float = 1.0  # fraction of the denoising steps with guidance (restyler.py)

    def control_weightings(self) -> list[tuple[tuple[str, float], ...]]:
        """Each job's ((kind, weight), ...): one per --sweep control value, else the flags' weights."""
        if not self.controls:
            return [()]
        if self.control_sweep:
            return [tuple((c.kind, w) for c in self.controls) for w in self.control_sweep]
        return [tuple((c.kind, c.weight) for c in self.controls)]


@dataclass(frozen=True)
class Job:
    """One output image."""

    input: Path
    stem: str
    seed: int
    strength: float
    scale: float
    control: tuple[tuple[str, float], ...] = ()  # (kind, weight) per ControlNet

    def filename(self, has_lora: bool) -> str:
        lora = f"lora{self.scale:g}" if has_lora else "nolora"
        control = "".join(f"_{kind}{weight:g}" for kind, weight in self.control)
        return f"{self.stem}_seed{self.seed}_str{self.strength:g}_{lora}{control}.png"


def _check(name: str, value: float, ok: bool, expected: str) -> None:
    if not ok:
        raise InputError(f"{name} {value:g}: expected {expected}")


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Flags win, then the LoRA's metadata (its recommended strength and scale from `infer recommend`
    among them), then the run's config.yaml, then configs/base.yaml. Long on purpose: each setting's
    resolution and check is two lines, and they read best as one list."""
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

    recommended = recommended_settings(metadata) or {}
    sweep = parse_sweep(args.sweep or [])
    strength = pick(args.strength, recommended.get("strength", infer.strength))
    strengths = tuple(sweep.get("strength", [strength]))
    scales = tuple(sweep.get("scale", [pick(args.scale, recommended.get("scale", infer.lora_scale))]))
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
    cutoff = pick(getattr(args, "guidance_cutoff", None), infer.guidance_cutoff)
    _check("--guidance-cutoff", cutoff, 0 < cutoff <= 1, "a fraction of the denoising steps in (0, 1]")
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
    controls = resolve_controls(args, infer.control, str(base))
    if "control" in sweep and not controls["controls"]:
        raise InputError("--sweep control=...: sweeps the --control weights; pass --control canny|depth")
    if cutoff < 1 and (controls["controls"] or getattr(args, "ip_adapter", None)):
        # Those pipelines hold an unguided half of their own (control images, IP-Adapter embeddings)
        # that diffusers' step-end callback does not expose everywhere (IP-Adapter's nowhere).
        raise InputError(
            f"--guidance-cutoff {cutoff:g}: works with plain img2img only, not with --control or "
            "--ip-adapter; expected 1.0 there"
        )
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
        guidance_cutoff=cutoff,
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
        control_sweep=tuple(sweep.get("control", ())),
        **controls,
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
        Job(path, stems[path], seed, strength, scale, control)
        for path in inputs
        for seed in settings.seeds
        for strength in settings.strengths
        for scale in settings.scales
        for control in settings.control_weightings()
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
    if settings.save_control:
        names += sorted({f"{job.stem}_{c.kind}.png" for job in jobs for c in settings.controls})
    existing = [name for name in names if (settings.out / name).exists()]
    if existing:
        raise InputError(
            f"{settings.out / existing[0]}: already exists ({len(existing)} of {len(names)} outputs do); "
            f"pass --overwrite to replace them or choose another --out"
        )
