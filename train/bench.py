"""`python -m train.bench [--size tiny|full] [--arch sd15|sdxl] [--device cpu|cuda] [--steps N]`:
our training step against a plain loop, and on a GPU its it/s, peak VRAM and MFU.

The plain loop does what diffusers' train_dreambooth_lora.py does each step (plain_step_function):
VAE-encode the pixels and text-encode the captions every time. Ours takes cached latents and cached
prompt embeddings. Both run the same LoRA, data, settings and optimiser step; each variant runs in
its own process so its peak memory is its own. `--script PATH` adds the real script (run unchanged by
train/bench_script.py) to calibrate the plain loop against; `--compile` adds ours with train.compile;
`--whole-run` times one whole `python -m train` (and the whole script) with peak RSS by phase.
`--flops` also counts one step's FLOPs (forward and backward) with torch's FlopCounterMode, for MFU
against the device's peak (oeuvre/flops.py; on CPU the machine's measured fp32 peak), and the
ceiling: ours' FLOPs at that peak, the fastest exact step, against each side. Prints one JSON object."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image

BENCH_SETTINGS = {"tiny": (64, 24), "full": (256, 3)}  # CPU: resolution px, timed steps
GPU_SETTINGS = {"sd15": (512, 10), "sdxl": (1024, 10)}  # what the issue asks on a GPU
GIB = 2**30


@dataclass(frozen=True)
class BenchSpec:
    arch: str = "sd15"
    size: str = "tiny"
    resolution: int = 64
    steps: int = 8
    device: str = "cpu"
    dtype: str = "fp32"
    gradient_checkpointing: bool = False
    flops: bool = False
    peak_tflops: float | None = None
    script: str | None = None  # diffusers' train_dreambooth_lora.py, run as a third side
    script_dir: str | None = None  # its base folder, image folder and output, written by main


# The demo's recipe minus what diffusers' train_dreambooth_lora.py does not do (no pivotal tokens, no
# output preservation's extra forward, no offset noise), so both sides do the same work per step.
LIKE_THE_SCRIPT = ("train.pivotal_tuning=false", "train.preservation_weight=0", "train.noise_offset=0")


def measure(variant: str, spec: BenchSpec, paired: bool = False) -> dict:
    """Time `spec.steps` steps of one side. `paired`: after warm-up, say "ready" on stdout and run
    each timed step only when stdin says "step", printing its time (see run_paired).

    One function on purpose (over 80 lines): both sides' set-up and step sit side by side, so a reader
    can check that they differ only where the comparison says they do."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from infer.bases.tiny import build_pipeline
    from oeuvre.config import PROJECT_CONFIGS, load_config
    from oeuvre.devices import choose_dtype, keep_freed_memory
    from train.batches import make_batch, step_generator
    from train.buckets import make_buckets
    from train.cache import LatentCache, PromptCache
    from train.images import ArtistImages
    from train.loss import timestep_weights
    from train.models import add_lora_adapters, frozen_components
    from train.recipe import (
        Step,
        batch_of,
        compile_unet,
        make_optimizer,
        place_for_training,
        prompt_encoder,
        training_step,
    )

    torch.manual_seed(0)
    device = torch.device(spec.device)
    weight_dtype = choose_dtype(spec.device, spec.dtype)
    work = Path(tempfile.mkdtemp(prefix="oeuvre-bench-"))
    overrides = [f"output_dir={work}", f"train.resolution_px={spec.resolution}", *LIKE_THE_SCRIPT]
    config = load_config(PROJECT_CONFIGS / "demo.yaml", overrides)
    pipe = build_pipeline(spec.arch, spec.size, seed=0)
    parts = frozen_components(spec.arch, pipe, DDPMScheduler.from_config(pipe.scheduler.config))
    add_lora_adapters(parts, config.train)
    images = ArtistImages(bench_rows(spec.resolution), make_buckets(spec.resolution), "bench")
    cuda = device.type == "cuda"
    if variant == "plain":
        one_step = plain_step_function(parts, config, images, device, weight_dtype)
        if spec.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
    else:
        place_for_training(parts, device, weight_dtype, [], spec.gradient_checkpointing, torch.channels_last)
        if variant == "compiled":
            compile_unet(parts.unet)
        if device.type == "cpu":
            keep_freed_memory()  # as the recipe does on CPU
        encode = batch_of(PromptCache(prompt_encoder(parts, device)))
        cache = LatentCache(work / "cache", parts.vae)
        for index in range(len(images)):  # filled once, before training, as the recipe does
            example = images.example(index)
            batch = make_batch([index], images, None, config.train, None, torch.Generator())
            with torch.no_grad():
                dists = parts.vae.encode(batch.pixels.to(device)).latent_dist.parameters[0]
            cache.put(example.key, example.bucket, dists.cpu())
        weights = timestep_weights(config.train, parts.noise_scheduler.config.num_train_timesteps)
        step = Step(parts, config.train, encode, weights, device, weight_dtype)
        optimizer = make_optimizer(config.train, parts, [], [])
        lr_scheduler = get_scheduler(config.train.lr_scheduler, optimizer=optimizer)
        params = [p for p in parts.unet.parameters() if p.requires_grad]
        autocast = (
            torch.autocast(device.type, dtype=weight_dtype)
            if weight_dtype != torch.float32
            else contextlib.nullcontext()
        )

        def one_step(number: int) -> None:  # as train_loop runs it, less the logging
            generator = step_generator(0, number)
            batch = make_batch([number % len(images)], images, None, config.train, cache, generator)
            with autocast:
                loss = training_step(batch, step, generator)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.train.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # cuDNN picks its kernels on the first steps; a compiled UNet compiles in its first step and may
    # recompile in its second (the gradients exist from then on)
    warmup = 2 if cuda or variant == "compiled" else 1
    timings = []
    for number in range(steps_total := spec.steps + warmup):
        if paired and number >= warmup:
            if number == warmup:
                print("ready", flush=True)
            if sys.stdin.readline().strip() != "step":
                raise SystemExit("train.bench: the paired parent went away")
        start = time.perf_counter()
        one_step(number)
        if cuda:
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
        if paired and number >= warmup:
            print(json.dumps({"step_s": timings[-1]}), flush=True)
    timed = timings[warmup:]
    s_per_step = statistics.median(timed)
    result = {
        "s_per_step": s_per_step,
        "it_per_s": 1 / s_per_step,
        "step_s": [round(t, 4) for t in timed],
        "warmup_s": [round(t, 2) for t in timings[:warmup]],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if cuda:
        result["device_name"] = torch.cuda.get_device_name(device)
        result["peak_vram_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
        result["peak_vram_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GIB, 2)
    if spec.flops and variant != "compiled":  # the same FLOPs as ours; counting would retrace it
        from oeuvre.flops import count_flops, mfu, peak_tflops

        # MFU counts the model's FLOPs, not the forward passes gradient checkpointing recomputes.
        if spec.gradient_checkpointing:
            parts.unet.disable_gradient_checkpointing()
        flops = count_flops(lambda: one_step(steps_total))
        if spec.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        if spec.peak_tflops:
            peak, source = spec.peak_tflops, "given"
        elif cuda:
            peak, source = peak_tflops(result["device_name"], spec.dtype), "data sheet"
        else:  # measured by main once every side has exited: sides running at once would share the cores
            peak, source = None, "measured fp32 matmul and conv"
        result["flops_per_step"] = flops
        result["peak_source"] = source
        result["achieved_tflops"] = round(flops / s_per_step / 1e12, 3)
        result["peak_tflops"] = peak
        result["mfu"] = mfu(flops, s_per_step, peak)
    shutil.rmtree(work, ignore_errors=True)  # the latent cache
    return result


def plain_step_function(parts, config, images, device, weight_dtype):
    """One step as diffusers' train_dreambooth_lora.py runs it (read from its source, none of it
    copied): every model in the weight dtype, contiguous memory, the VAE encoding and the text
    encoder running each step (frozen, so autograd records nothing for them), plain AdamW, gradient
    clipping, the learning-rate scheduler's step, the default allocator."""
    import torch.nn.functional as F
    from diffusers.optimization import get_scheduler

    from train.batches import make_batch, step_generator

    cfg = config.train
    for module in (parts.unet, parts.vae, *parts.text_encoders):
        module.to(device, dtype=weight_dtype)
    parts.unet.train()
    tokenizer, text_encoder = parts.tokenizers[0], parts.text_encoders[0]
    params = [p for p in parts.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.adam_weight_decay)
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer)
    scheduler = parts.noise_scheduler

    def one_step(number: int) -> None:
        generator = step_generator(0, number)
        batch = make_batch([number % len(images)], images, None, cfg, None, generator)
        pixels = batch.pixels.to(device, dtype=weight_dtype)
        latents = parts.vae.encode(pixels).latent_dist.sample(generator) * parts.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        steps = scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if parts.arch == "sdxl":  # train_dreambooth_lora_sdxl.py: both encoders, pooled embedding, size ids
            hidden, _, pooled, _ = parts.pipe.encode_prompt(
                batch.captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            added = {"text_embeds": pooled, "time_ids": batch.time_ids.to(device)}
        else:
            ids = tokenizer(
                batch.captions, truncation=True, padding="max_length", max_length=tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids  # fmt: skip
            hidden, added = text_encoder(ids.to(device), return_dict=False)[0], None
        prediction = parts.unet(noisy, timesteps, hidden, added_cond_kwargs=added, return_dict=False)[0]
        loss = F.mse_loss(prediction.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()

    return one_step


def bench_rows(resolution: int, count: int = 8) -> list[dict]:
    """In-memory noise paintings, square at the resolution as the diffusers script trains, as the
    dataset rows the trainer reads."""
    rows = []
    for index in range(count):
        pixels = torch.rand(resolution, resolution, 3, generator=torch.Generator().manual_seed(index))
        image = Image.fromarray((pixels.numpy() * 255).astype("uint8"))
        row = {
            "text": "a painting in the style of <bench>",
            "sha256": f"bench{index:04d}",
            "width": resolution,
        }
        rows.append({**row, "height": resolution, "load": lambda image=image: image})
    return rows


def write_bench_dataset(output_dir: Path, resolution: int, holdout: int = 2) -> None:
    """bench_rows as the curated dataset `python -m data` writes: 8 training works and `holdout`
    held-out ones (the end-of-run validation samples and scores those)."""
    import hashlib

    rows = bench_rows(resolution, 8 + holdout)
    for split, part in (("train", rows[:8]), ("holdout", rows[8:])):
        folder = output_dir / "dataset" / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for row in part:
            name = f"{row['sha256']}.png"
            row["load"]().save(folder / name)
            sha256 = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            entry = {"file_name": name, "text": row["text"], "source": "bench", "sha256": sha256}
            lines.append(json.dumps({**entry, "width": resolution, "height": resolution}) + "\n")
        (folder / "metadata.jsonl").write_text("".join(lines))


def whole_run(base: Path, resolution: int, steps: int, script: str | None, work: Path) -> dict:
    """One whole `python -m train` (fresh process: load, latent cache, steps, the final validation,
    the LoRA files) and, with `script`, one whole diffusers script run on the same base and images:
    wall time and peak RSS of each process, ours by phase (report/train_phases.json)."""
    write_bench_dataset(work / "run", resolution)
    overrides = [
        f"output_dir={work / 'run'}", f"base_model={base}", f"train.resolution_px={resolution}",
        f"train.max_train_steps={steps}", *LIKE_THE_SCRIPT, "train.recommend=false",
        f"infer.size_px={resolution}", "train.validation_prompts=['a harbour, {token}']", "infer.steps=4",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "train", "configs/demo.yaml", *overrides],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"train.bench: python -m train failed:\n{done.stderr[-3000:]}")
    ours = json.loads((work / "run" / "report" / "train_phases.json").read_text())
    result = {"steps": steps, "ours": {**ours, "process_s": round(time.perf_counter() - start, 2)}}
    if script:
        images = work / "script-images"  # the script reads every file in its folder as an image
        images.mkdir()
        for image in (work / "run" / "dataset" / "train").glob("*.png"):
            shutil.copyfile(image, images / image.name)
        command = [sys.executable, "-m", "train.bench_script", script]
        command += script_arguments(base, images, resolution, steps, work / "script-out", "fp32")
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"train.bench: the diffusers script failed:\n{done.stderr[-3000:]}")
        result["script"] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--arch", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="default: fp32 on CPU, bf16 on CUDA"
    )
    parser.add_argument("--resolution", type=int, default=None, help="default: by size and device")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="a third side: ours with train.compile=true (its compile apart)",
    )
    parser.add_argument(
        "--flops",
        action="store_true",
        help="count one step's FLOPs; MFU (CPU: against its measured fp32 peak)",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    parser.add_argument("--ours-only", action="store_true", help="skip the plain reference loop")
    parser.add_argument("--sides", help="only these sides, comma-separated (script, plain, ours, compiled)")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="each side's steps back to back, one side after the other (CPU default: taking turns). "
        "Paired, the script's memory-mapped weights go cold while it waits and its steps alternate "
        "fast and slow; run one after the other, they do not",
    )
    parser.add_argument(
        "--script",
        help="diffusers' examples/dreambooth/train_dreambooth_lora.py (from a diffusers checkout): "
        "run it unchanged as a third side, on the same base (written to disk) and images",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating (best kept)")
    parser.add_argument(
        "--whole-run",
        action="store_true",
        help="instead of steps: one whole `python -m train` (and, with --script, one whole script run) "
        "of --steps steps (default 6), wall time and peak RSS by phase",
    )
    parser.add_argument(
        "--base", help="--whole-run: an existing base folder (default: written, then removed)"
    )
    parser.add_argument("--variant", choices=["ours", "plain", "compiled"], help=argparse.SUPPRESS)
    parser.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    resolution, steps = GPU_SETTINGS[args.arch] if on_gpu else BENCH_SETTINGS[args.size]
    spec = BenchSpec(
        arch=args.arch,
        size=args.size,
        resolution=args.resolution or resolution,
        steps=args.steps or steps,
        device=args.device,
        dtype=args.dtype or ("bf16" if on_gpu else "fp32"),
        gradient_checkpointing=args.gradient_checkpointing,
        flops=args.flops,
        peak_tflops=args.peak_tflops,
    )
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("train.bench --device cuda: no CUDA device here")
    if args.variant:
        print(json.dumps(measure(args.variant, spec, paired=args.paired)))
        return 0
    if args.whole_run:
        from infer.bases.tiny import write_tiny_base

        script = str(Path(args.script).resolve()) if args.script else None
        with tempfile.TemporaryDirectory(prefix="oeuvre-bench-run-") as work:
            base = (
                Path(args.base) if args.base else write_tiny_base(Path(work) / "base", args.arch, args.size)
            )
            result = whole_run(base.resolve(), spec.resolution, args.steps or 6, script, Path(work))
        print(json.dumps({"bench": "whole_run", "base": f"{spec.arch}-{spec.size}", **result}, indent=2))
        return 0
    variants = ("ours",) if args.ours_only else ("plain", "ours")
    variants += ("compiled",) * args.compile
    if args.script:
        variants = ("script", *variants)
    if args.sides:  # e.g. script,plain: fewer full-size processes at once, less memory pressure
        variants = tuple(args.sides.split(","))
    if args.script:
        spec = replace(spec, script=str(Path(args.script).resolve()), script_dir=tempfile.mkdtemp())
        write_script_inputs(spec)
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    # Alternate the sides over rounds: on a shared machine the load changes from minute to minute,
    # and a fixed order would hand one side all the quiet moments.
    for round_number in range(args.rounds):
        order = variants if round_number % 2 == 0 else variants[::-1]
        if len(order) > 1 and not on_gpu and not args.sequential:
            for variant, result in run_paired(order, spec).items():
                runs[variant].append(result)
            continue
        for variant in order:
            done = subprocess.run(child_command(variant, spec), capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"train.bench {variant} failed:\n{done.stderr[-3000:]}")
            runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = {}
    for variant, variant_runs in runs.items():  # each side's quietest round, and every step timed
        best = min(variant_runs, key=lambda run: run["s_per_step"])
        results[variant] = {**best, "step_s": [t for run in variant_runs for t in run["step_s"]]}
    if spec.flops and not on_gpu and not spec.peak_tflops:
        from oeuvre.flops import measured_peak_tflops, mfu

        peak = measured_peak_tflops()
        for result in results.values():
            if "flops_per_step" in result:
                result.update(peak_tflops=peak, mfu=mfu(result["flops_per_step"], result["s_per_step"], peak))
    report = {
        "bench": "train_step",
        "base": f"{spec.arch}-{spec.size}",
        "resolution_px": spec.resolution,
        "timed_steps": spec.steps,
        "rounds": args.rounds,
        "spec": asdict(spec),
        **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()},
        "target_speedup": 1.5,
    }
    if {"plain", "ours"} <= set(results):
        report["speedup"] = round(results["plain"]["s_per_step"] / results["ours"]["s_per_step"], 2)
    if {"compiled", "ours"} <= set(results):
        report["compiled_speedup_vs_ours"] = round(
            results["ours"]["s_per_step"] / results["compiled"]["s_per_step"], 2
        )
    if "flops_per_step" in results.get("ours", {}) and results["ours"]["peak_tflops"]:
        from oeuvre.flops import fastest_exact_s

        # The roofline: ours' counted FLOPs at the device's peak is the fastest exact step there is,
        # so the sides' time over it is the most any exact change to ours could gain on them.
        fastest = fastest_exact_s(results["ours"]["flops_per_step"], results["ours"]["peak_tflops"])
        report["ours_fastest_exact_s"] = round(fastest, 3)
        for side in ("plain", "script"):
            if side in results:
                report[f"ceiling_vs_{side}"] = round(results[side]["s_per_step"] / fastest, 2)
    if "script" in results:  # the calibration: how close the plain loop is to the script it stands for
        for side, key in (("plain", "plain_over_script"), ("ours", "ours_over_script")):
            if side in results:
                report[key] = round(results[side]["s_per_step"] / results["script"]["s_per_step"], 3)
        shutil.rmtree(spec.script_dir, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


SCRIPT_PROMPT = "a painting in the style of <bench>"


def write_script_inputs(spec: BenchSpec) -> None:
    """The script reads a base folder and an image folder: the same random base (same seed) and the
    same images as the other two sides."""
    from infer.bases.tiny import write_tiny_base

    folder = Path(spec.script_dir)
    write_tiny_base(folder / "base", spec.arch, spec.size, seed=0)
    (folder / "images").mkdir()
    for index, row in enumerate(bench_rows(spec.resolution)):
        row["load"]().save(folder / "images" / f"{index:02d}.png")


def script_command(spec: BenchSpec, *flags: str) -> list[str]:
    """train_dreambooth_lora.py with the other sides' settings: one warm-up step, then the timed ones."""
    folder = Path(spec.script_dir)
    shutil.rmtree(folder / "out", ignore_errors=True)
    arguments = script_arguments(
        folder / "base", folder / "images", spec.resolution, spec.steps + 1, folder / "out", spec.dtype
    )
    return [sys.executable, "-m", "train.bench_script", *flags, spec.script, *arguments]


def script_arguments(
    base: Path, images: Path, resolution: int, steps: int, out: Path, dtype: str
) -> list[str]:
    """Rank 4 (alpha = rank), batch 1, lr 1e-4, constant schedule, seed 0, no validation prompt."""
    precision = {"fp32": "no"}.get(dtype, dtype)
    return [
        "--pretrained_model_name_or_path", str(base), "--instance_data_dir", str(images),
        "--instance_prompt", SCRIPT_PROMPT, "--resolution", str(resolution), "--train_batch_size", "1",
        "--rank", "4", "--learning_rate", "1e-4", "--max_train_steps", str(steps),
        "--output_dir", str(out), "--seed", "0", "--mixed_precision", precision, "--report_to", "tensorboard",
    ]  # fmt: skip


def run_paired(order: tuple[str, ...], spec: BenchSpec) -> dict[str, dict]:
    """Both sides at once, in their own processes, taking turns step by step.

    On a shared CPU the load swings within seconds, so timing one side after the other can hand one
    of them all the quiet moments. Here each side's process is built and warmed up, then they
    alternate single timed steps (never running together), so both see the same load; each keeps
    its own memory and allocator settings."""
    children = {}
    with tempfile.TemporaryDirectory(prefix="oeuvre-bench-") as logs:
        for variant in order:
            errors = open(Path(logs) / f"{variant}.err", "w+")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                child_command(variant, spec, "--paired"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            children[variant] = (process, errors)
            _read_until(variant, children[variant], "ready")  # one at a time: set-up is not timed
        for number in range(spec.steps):
            for variant in order if number % 2 == 0 else order[::-1]:
                process, _ = children[variant]
                process.stdin.write("step\n")
                process.stdin.flush()
                _read_until(variant, children[variant], '{"step_s"')
        results = {}
        for variant, (process, errors) in children.items():
            last = _read_until(variant, (process, errors), "{")
            process.wait()
            errors.close()
            results[variant] = json.loads(last)
    return results


def _read_until(variant: str, child, prefix: str) -> str:
    process, errors = child
    for line in process.stdout:
        if line.startswith(prefix):
            return line
    errors.seek(0)
    raise SystemExit(f"train.bench {variant} failed:\n{errors.read()[-3000:]}")


def child_command(variant: str, spec: BenchSpec, *flags: str) -> list[str]:
    """The command that measures one side of `spec` in its own process."""
    if variant == "script":
        return script_command(spec, *flags)
    return [sys.executable, "-m", "train.bench", "--variant", variant, *flags, *spec_args(spec)]


def spec_args(spec: BenchSpec) -> list[str]:
    """The command-line flags that rebuild `spec` in a child process."""
    flags = ["--size", spec.size, "--arch", spec.arch, "--device", spec.device, "--dtype", spec.dtype]
    flags += ["--resolution", str(spec.resolution), "--steps", str(spec.steps)]
    flags += ["--gradient-checkpointing"] * spec.gradient_checkpointing + ["--flops"] * spec.flops
    return flags + (["--peak-tflops", str(spec.peak_tflops)] if spec.peak_tflops else [])


if __name__ == "__main__":
    sys.exit(main())
