"""`python -m train.bench [--size tiny|full] [--steps N]`: our training step against a plain loop.

The plain loop does what diffusers' train_dreambooth_lora.py does each step: VAE-encode the pixels
and text-encode the captions every time. Ours takes cached latents and cached prompt embeddings.
Both run the same LoRA, data, settings and optimiser step; each variant runs in its own process so
its peak RSS is its own. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

BENCH_SETTINGS = {"tiny": (64, 8), "full": (256, 3)}  # resolution px, timed steps


def measure(variant: str, size: str, steps: int, resolution: int) -> dict:
    from diffusers import DDPMScheduler

    from infer.tiny_base import build_pipeline
    from oeuvre.config import PROJECT_CONFIGS, load_config
    from train.buckets import make_buckets
    from train.cache import LatentCache, PromptCache
    from train.images import ArtistImages
    from train.loss import timestep_weights
    from train.models import Components, add_lora_adapters
    from train.recipe import (
        Step,
        batch_of,
        make_batch,
        make_optimizer,
        prompt_encoder,
        step_generator,
        training_step,
    )

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="oeuvre-bench-"))
    overrides = [f"output_dir={work}", f"train.resolution_px={resolution}", "train.pivotal_tuning=false"]
    config = load_config(PROJECT_CONFIGS / "demo.yaml", overrides)
    pipe = build_pipeline("sd15", size, seed=0)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    parts = Components("sd15", pipe, DDPMScheduler.from_config(pipe.scheduler.config))
    add_lora_adapters(parts, config.train)
    if variant == "ours":
        parts.unet.to(memory_format=torch.channels_last)  # as the recipe does
    images = ArtistImages(bench_rows(resolution), make_buckets(resolution), "bench")
    encode = prompt_encoder(parts, torch.device("cpu"))
    cache = None
    if variant == "ours":
        encode = batch_of(PromptCache(encode))
        cache = LatentCache(work / "cache", parts.vae)
        for index in range(len(images)):  # filled once, before training, as the recipe does
            example = images.example(index)
            batch = make_batch([index], images, None, config.train, None, torch.Generator())
            with torch.no_grad():
                cache.put(
                    example.key, example.bucket, parts.vae.encode(batch.pixels).latent_dist.parameters[0]
                )
    weights = timestep_weights(config.train, parts.noise_scheduler.config.num_train_timesteps)
    step = Step(parts, config.train, encode, weights, torch.device("cpu"), torch.float32)
    optimizer = make_optimizer(config.train, parts, [], [])
    timings = []
    for number in range(steps + 1):  # the first step warms up and is not timed
        start = time.perf_counter()
        generator = step_generator(0, number, 0)
        batch = make_batch([number % len(images)], images, None, config.train, cache, generator)
        loss = training_step(batch, step, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = timings[1:]
    return {
        "s_per_step": statistics.median(timed),
        "step_s": [round(t, 4) for t in timed],
        "peak_rss_mb": round(peak_rss_mb),
    }


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
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--variant", choices=["ours", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    resolution, steps = BENCH_SETTINGS[args.size]
    steps = args.steps or steps
    if args.variant:
        print(json.dumps(measure(args.variant, args.size, steps, resolution)))
        return 0
    results = {}
    for variant in ("plain", "ours"):
        command = [
            sys.executable,
            "-m",
            "train.bench",
            "--size",
            args.size,
            "--steps",
            str(steps),
            "--variant",
            variant,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        "bench": "train_step",
        "base": f"sd15-{args.size}",
        "resolution_px": resolution,
        "timed_steps": steps,
        **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()},
        "speedup": round(results["plain"]["s_per_step"] / results["ours"]["s_per_step"], 2),
        "target_speedup": 1.5,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
