"""`python -m train.bench [--size tiny|full] [--arch sd15|sdxl] [--device cpu|cuda] [--steps N]`:
our training step against a plain loop, and on a GPU its it/s, peak VRAM and MFU.

The plain loop does what diffusers' train_dreambooth_lora.py does each step: VAE-encode the pixels
and text-encode the captions every time. Ours takes cached latents and cached prompt embeddings.
Both run the same LoRA, data, settings and optimiser step; each variant runs in its own process so
its peak memory is its own. `--flops` also counts one step's FLOPs (forward and backward) with
torch's FlopCounterMode, for MFU against the device's peak (train/flops.py). Prints one JSON object."""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
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


def measure(variant: str, spec: BenchSpec, paired: bool = False) -> dict:
    """Time `spec.steps` steps of one side. `paired`: after warm-up, say "ready" on stdout and run
    each timed step only when stdin says "step", printing its time (see run_paired).

    One function on purpose (over 80 lines): both sides' set-up and step sit side by side, so a reader
    can check that they differ only where the comparison says they do."""
    from diffusers import DDPMScheduler

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
        make_optimizer,
        place_for_training,
        prompt_encoder,
        training_step,
    )

    torch.manual_seed(0)
    device = torch.device(spec.device)
    weight_dtype = choose_dtype(spec.device, spec.dtype)
    work = Path(tempfile.mkdtemp(prefix="oeuvre-bench-"))
    overrides = [f"output_dir={work}", f"train.resolution_px={spec.resolution}", "train.pivotal_tuning=false"]
    config = load_config(PROJECT_CONFIGS / "demo.yaml", overrides)
    pipe = build_pipeline(spec.arch, spec.size, seed=0)
    parts = frozen_components(spec.arch, pipe, DDPMScheduler.from_config(pipe.scheduler.config))
    add_lora_adapters(parts, config.train)
    layout = torch.channels_last if variant == "ours" else torch.contiguous_format
    place_for_training(parts, device, weight_dtype, [], spec.gradient_checkpointing, layout)
    images = ArtistImages(bench_rows(spec.resolution), make_buckets(spec.resolution), "bench")
    encode = prompt_encoder(parts, device)
    cache = None
    if variant == "ours":
        if device.type == "cpu":
            keep_freed_memory()  # as the recipe does on CPU
        encode = batch_of(PromptCache(encode))
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
    cuda = device.type == "cuda"
    autocast = (
        torch.autocast(device.type, dtype=weight_dtype)
        if weight_dtype != torch.float32
        else contextlib.nullcontext()
    )

    def one_step(number: int) -> None:
        generator = step_generator(0, number)
        batch = make_batch([number % len(images)], images, None, config.train, cache, generator)
        with autocast:
            loss = training_step(batch, step, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    warmup = 2 if cuda else 1  # cuDNN picks its kernels on the first steps
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
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if cuda:
        result["device_name"] = torch.cuda.get_device_name(device)
        result["peak_vram_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
        result["peak_vram_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GIB, 2)
    if spec.flops:
        from train.flops import count_flops, mfu, peak_tflops

        # MFU counts the model's FLOPs, not the forward passes gradient checkpointing recomputes.
        if spec.gradient_checkpointing:
            parts.unet.disable_gradient_checkpointing()
        flops = count_flops(lambda: one_step(steps_total))
        if spec.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        peak = spec.peak_tflops or (peak_tflops(result["device_name"], spec.dtype) if cuda else None)
        result["flops_per_step"] = flops
        result["achieved_tflops"] = round(flops / s_per_step / 1e12, 3)
        result["peak_tflops"] = peak
        result["mfu"] = mfu(flops, s_per_step, peak)
    shutil.rmtree(work, ignore_errors=True)  # the latent cache
    return result


def bench_rows(resolution: int, count: int = 4) -> list[dict]:
    """In-memory noise paintings in a mix of shapes, as the dataset rows the trainer reads."""
    rows = []
    for index in range(count):
        width, height = (resolution, resolution) if index % 2 else (resolution * 3 // 2, resolution)
        pixels = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(index))
        image = Image.fromarray((pixels.numpy() * 255).astype("uint8"))
        row = {"text": "a painting in the style of <bench>", "sha256": f"bench{index:04d}", "width": width}
        rows.append({**row, "height": height, "load": lambda image=image: image})
    return rows


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
    parser.add_argument("--flops", action="store_true", help="count one step's FLOPs; MFU on a known GPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    parser.add_argument("--ours-only", action="store_true", help="skip the plain reference loop")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating (best kept)")
    parser.add_argument("--variant", choices=["ours", "plain"], help=argparse.SUPPRESS)
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
    variants = ("ours",) if args.ours_only else ("plain", "ours")
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    # Alternate the sides over rounds: on a shared machine the load changes from minute to minute,
    # and a fixed order would hand one side all the quiet moments.
    for round_number in range(args.rounds):
        order = variants if round_number % 2 == 0 else variants[::-1]
        if len(order) == 2 and not on_gpu:
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
    if "plain" in results:
        report["speedup"] = round(results["plain"]["s_per_step"] / results["ours"]["s_per_step"], 2)
    print(json.dumps(report, indent=2))
    return 0


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
    return [sys.executable, "-m", "train.bench", "--variant", variant, *flags, *spec_args(spec)]


def spec_args(spec: BenchSpec) -> list[str]:
    """The command-line flags that rebuild `spec` in a child process."""
    flags = ["--size", spec.size, "--arch", spec.arch, "--device", spec.device, "--dtype", spec.dtype]
    flags += ["--resolution", str(spec.resolution), "--steps", str(spec.steps)]
    flags += ["--gradient-checkpointing"] * spec.gradient_checkpointing + ["--flops"] * spec.flops
    return flags + (["--peak-tflops", str(spec.peak_tflops)] if spec.peak_tflops else [])


if __name__ == "__main__":
    sys.exit(main())
