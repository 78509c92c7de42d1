"""Restyle throughput: our path against diffusers' plain img2img pipeline with the same LoRA loaded unfused.

    python -m infer.restyle.bench [--full] [--images 4] [--steps 10] [--rounds 2] [--json FILE]

Same base, LoRA, images, size, steps, strength, guidance and seeds on both sides. Each side runs in its own
process so its peak memory (RSS; CUDA peak on GPU) is its own; a warm-up call is not timed. The tiny base
always runs; --full adds the full-size SD 1.5 architecture (random weights) at 256 px; on a GPU, --gpu-size
512 adds it at 512 px. Prints JSON with images/s, the ratio and peak memory, and how far the two sides'
images differ (they should be the same pictures). On CPU also the roofline: ours' FLOPs (counted by torch
in the warm-up) at the machine's measured fp32 peak, the fastest any exact restyle can run, and the
plain pipeline's time over it (`ceiling_ratio`, the most any exact change to ours could reach).
A third side, `ours_cutoff`, is ours with `--guidance-cutoff` (default 0.4, the fraction diffusers' dynamic
classifier-free guidance example uses): not exact, so it reports its own pixel difference from the plain
pipeline's pictures beside its ratio. The tiny SDXL base runs too, each side as for SD 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PROMPT = "a painting in the style of <bench>"
NEGATIVE = "photo, blurry"


def make_lora(base: Path, out: Path, rank: int = 8, alpha: float = 16.0) -> Path:
    """A random LoRA on the UNet attention (lora_B non-zero so it matters), saved with save_lora_file."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    from infer.bases.resolve import detect_arch
    from infer.lora.files import save_lora_file

    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet.add_adapter(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    arch = detect_arch(str(base))
    metadata = {"oeuvre.base_model": str(base), "oeuvre.caption": PROMPT}
    return save_lora_file(
        out,
        arch=arch,
        unet_lora_layers=get_peft_model_state_dict(unet),
        unet_lora_config=config,
        metadata=metadata,
    )


def content_images(count: int, size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        ramp = np.linspace(0, 255, size)[None, :, None] * rng.uniform(0.3, 1.0, size=(1, 1, 3))
        noise = rng.normal(0, 12, size=(size, size, 3))
        images.append(Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8)))
    return images


def peak_memory_mb(device: str) -> dict[str, float]:
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        import torch

        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def run_side(side: str, args: argparse.Namespace) -> dict:
    """One side, in this process: warm up on one image, then time all images.

    One function on purpose (over 80 lines): the plain pipeline and ours are set up side by side, so a
    reader can check that they differ only in the path being measured."""
    import numpy as np
    import torch

    from oeuvre.devices import choose_device, choose_dtype

    device = choose_device(args.device)
    dtype = choose_dtype(device, "auto")
    images = content_images(args.images, args.size)
    seeds = list(range(args.images))
    common = dict(strength=args.strength, num_inference_steps=args.steps, guidance_scale=args.guidance)

    if side == "plain":
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

        cls = StableDiffusionXLImg2ImgPipeline if args.arch == "sdxl" else StableDiffusionImg2ImgPipeline
        no_checker = {} if args.arch == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
        pipe = cls.from_pretrained(args.base, torch_dtype=dtype, **no_checker)
        pipe.load_lora_weights(args.lora, adapter_name="style")
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)

        def restyle(batch_images, batch_seeds):
            return [
                pipe(
                    PROMPT,
                    negative_prompt=NEGATIVE,
                    image=image,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    cross_attention_kwargs={"scale": args.scale},
                    **common,
                ).images[0]
                for image, seed in zip(batch_images, batch_seeds, strict=True)
            ]
    else:
        from infer.restyle.restyler import Restyler
        from infer.restyle.settings import Settings

        settings = Settings(
            base_model=args.base,
            lora_file=Path(args.lora),
            embedding_file=None,
            trigger_token=None,
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            strengths=(args.strength,),
            scales=(args.scale,),
            sweep=False,
            steps=args.steps,
            guidance=args.guidance,
            guidance_cutoff=args.guidance_cutoff if side == "ours_cutoff" else 1.0,
            seeds=tuple(seeds),
            size_px=args.size,
            keep_size=False,
            batch_size=args.images,
            device=device,
            dtype="auto",
            out=Path(args.out),
            overwrite=True,
        )
        restyler = Restyler.load(settings, device)

        def restyle(batch_images, batch_seeds):
            return restyler(batch_images, batch_seeds, args.strength, args.scale)

    from oeuvre.flops import count_flops

    # Warm-up (first-call allocations and kernel choice), counting one image's FLOPs as it runs.
    flops_per_image = count_flops(lambda: restyle(images[:1], seeds[:1]))
    times = []
    for _ in range(args.repeats):  # the median of a few timings: the machine may be shared
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        results = restyle(images, seeds)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    np.save(Path(args.out) / f"{side}.npy", np.stack([np.asarray(im) for im in results]))
    return {
        "seconds": seconds,
        "repeat_s": [round(t, 4) for t in times],
        "images_per_s": args.images / seconds,
        "device": device,
        "flops_per_image": flops_per_image,
        **peak_memory_mb(device),
    }


def compare(
    label: str, base: Path, lora: Path, size: int, args: argparse.Namespace, work: Path, arch: str = "sd15"
) -> dict:
    import numpy as np

    names = ["plain", "ours"] + (["ours_cutoff"] if args.guidance_cutoff < 1 else [])
    sides: dict[str, dict] = {}
    # Rotate the sides' order over rounds and keep each side's best: on a shared machine the load changes
    # from minute to minute, and a fixed order would hand one side all the quiet moments.
    order = [names[r % len(names) :] + names[: r % len(names)] for r in range(args.rounds)]
    for side in (side for sides_in_order in order for side in sides_in_order):
        command = [sys.executable, "-m", "infer.restyle.bench", "--side", side, "--base", str(base)]
        command += ["--lora", str(lora), "--size", str(size), "--out", str(work), "--device", args.device]
        command += ["--arch", arch, "--images", str(args.images), "--steps", str(args.steps)]
        command += ["--strength", str(args.strength), "--guidance-cutoff", str(args.guidance_cutoff)]
        command += ["--scale", str(args.scale), "--guidance", str(args.guidance)]
        command += ["--repeats", str(args.repeats if size <= 128 else 1)]
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        if done.returncode:
            raise SystemExit(f"bench {label} {side} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if side not in sides or result["images_per_s"] > sides[side]["images_per_s"]:
            sides[side] = result
    pictures = {side: np.load(work / f"{side}.npy").astype(np.int16) for side in sides}
    ceiling = {}
    if sides["ours"]["device"] == "cpu" and size > 128:  # the roofline, at full size on CPU
        from oeuvre.flops import fastest_exact_s, measured_peak_tflops, mfu

        # This machine's fp32 rate (measured here, with no side running) is the ceiling for the
        # counted FLOPs: ours' FLOPs at that rate is the fastest any exact restyle can run.
        peak = measured_peak_tflops()
        flops = {side: sides[side]["flops_per_image"] * args.images for side in sides}
        fastest = fastest_exact_s(flops["ours"], peak)
        ceiling = {
            "peak_tflops": round(peak, 4),
            "ours_fastest_exact_s": round(fastest, 2),
            "ceiling_ratio": round(sides["plain"]["seconds"] / fastest, 2),
            **{f"{side}_mfu": round(mfu(flops[side], sides[side]["seconds"], peak), 3) for side in sides},
        }
    cutoff = {}
    if "ours_cutoff" in sides:  # not exact: its ratio comes with how far its pictures are from plain's
        cutoff = {
            "guidance_cutoff": args.guidance_cutoff,
            "ours_cutoff": sides["ours_cutoff"],
            "cutoff_ratio": sides["ours_cutoff"]["images_per_s"] / sides["plain"]["images_per_s"],
            **picture_difference(pictures["plain"], pictures["ours_cutoff"], "cutoff_"),
        }
    return {
        "arch": arch,
        "size_px": size,
        "images": args.images,
        "steps": args.steps,
        "scale": args.scale,
        "guidance": args.guidance,
        "strength": args.strength,
        "rounds": args.rounds,
        "plain_diffusers_unfused": sides["plain"],
        "ours": sides["ours"],
        "ratio": sides["ours"]["images_per_s"] / sides["plain"]["images_per_s"],
        "mean_abs_pixel_diff": float(np.abs(pictures["plain"] - pictures["ours"]).mean()),
        **ceiling,
        **cutoff,
    }


def picture_difference(reference, pictures, prefix: str) -> dict:
    """How far `pictures` are from `reference` (uint8 arrays as int16): the mean and the 99th percentile
    of the absolute pixel difference (0-255) and the PSNR (dB)."""
    import numpy as np

    difference = np.abs(reference - pictures)
    mse = float((difference.astype(np.float64) ** 2).mean())
    return {
        f"{prefix}mean_abs_pixel_diff": round(float(difference.mean()), 3),
        f"{prefix}p99_abs_pixel_diff": float(np.percentile(difference, 99)),
        f"{prefix}psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else float("inf"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infer.restyle.bench", description=__doc__)
    parser.add_argument(
        "--full", action="store_true", help="also the full-size SD 1.5 architecture at 256 px"
    )
    parser.add_argument("--gpu-size", type=int, default=512, help="full-size run's size when on CUDA")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--scale", type=float, default=0.8)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument(
        "--guidance-cutoff",
        type=float,
        default=0.4,
        help="the ours_cutoff side's --guidance-cutoff (1: no such side)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats on the tiny base (median)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating (best kept)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    # internal: one side in a child process
    parser.add_argument("--side", choices=["plain", "ours", "ours_cutoff"], help=argparse.SUPPRESS)
    parser.add_argument("--arch", choices=["sd15", "sdxl"], default="sd15", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--lora", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return 0

    from infer.bases.tiny import write_tiny_base
    from oeuvre.devices import choose_device

    on_gpu = choose_device(args.device) == "cuda"
    results = {}
    with tempfile.TemporaryDirectory(prefix="oeuvre-bench-") as tmp:
        work = Path(tmp)
        runs = [("tiny_sd15_64px", "sd15", "tiny", 64), ("tiny_sdxl_64px", "sdxl", "tiny", 64)]
        if args.full or on_gpu:
            size = args.gpu_size if on_gpu else 256
            runs.append((f"full_sd15_{size}px", "sd15", "full", size))
        for label, arch, size_name, size in runs:
            base = write_tiny_base(work / f"base-{arch}-{size_name}", arch, size_name, seed=0)
            lora = make_lora(base, work / f"lora-{arch}-{size_name}.safetensors")
            results[label] = compare(label, base, lora, size, args, work, arch)
            print(f"{label}: ratio {results[label]['ratio']:.2f}x", file=sys.stderr)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
