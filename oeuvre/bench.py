"""`make bench [QUICK=1]`: every benchmark, side by side with its reference, into bench/results.json
and bench/RESULTS.md (min and median over repeats, the machine, the versions).

Each benchmark is its package's own command (`python -m data.bench`, `python -m train.bench`,
`python -m infer.restyle.bench`, `python -m infer.evaluate.copy_bench`), run here as a subprocess so its
memory peak is its own."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from oeuvre.atomic import atomic_write_text

OUT_DIR = Path("bench")
PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "datasets")


COMMANDS: list[str] = []  # every benchmark command run, in order, for RESULTS.md


def run_json(args: list[str]) -> dict:
    print(f"bench: python {' '.join(args)}", file=sys.stderr, flush=True)
    COMMANDS.append(f"python {' '.join(args)}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"bench: python {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    text = done.stdout
    return json.loads(text[text.index("{") :])


def spread(values: list[float]) -> dict:
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4), "n": len(values)}


def bench_curation(repeats: int, images: int, quick: bool = False) -> dict:
    # QUICK groups 250 pictures: 1,000 took 57 s of its 96 (features 33 s, grouping 24 s).
    sizes = ["250"] if quick else ["1000", "10000"]
    # The grouping timing (1k and 10k pictures) once, in the last run; throughput in every run.
    runs = [
        run_json(
            [
                "-m",
                "data.bench",
                "--images",
                str(images),
                "--group-sizes",
                *([] if i < repeats - 1 else sizes),
            ]
        )
        for i in range(repeats)
    ]
    dedupe = {}
    for run in runs:
        for row in run["dedupe"]:
            dedupe.setdefault(row["hashes"], []).append(row["search_s"])
    return {
        "images": images,
        "curation_images_per_s": spread([r["curation"]["cold_images_per_s"] for r in runs]),
        "near_duplicate_search_s": {str(n): spread(v) for n, v in sorted(dedupe.items())},
        "goal_images_per_s": 50,
        "grouping": runs[-1].get("grouping", []),
    }


def bench_train(repeats: int, quick: bool, script: str | None = None) -> dict:
    """The step against the plain loop (and, given diffusers' script, against the script itself and
    the loop against the script: the calibration); outside QUICK the full-size base, a compiled side,
    and one whole run of each (wall time and peak RSS, ours by phase)."""
    results = {}
    # Two rounds per repeat outside QUICK; within a round the sides take turns step by step.
    rounds = ["--rounds", "1" if quick else "2"]
    tiny = [run_json(["-m", "train.bench", "--size", "tiny", *rounds]) for _ in range(repeats)]
    results["tiny_sd15_64px"] = {
        "plain_s_per_step": spread([r["plain_s_per_step"] for r in tiny]),
        "ours_s_per_step": spread([r["ours_s_per_step"] for r in tiny]),
        "speedup": spread([r["speedup"] for r in tiny]),
        "plain_peak_rss_mb": max(r["plain_peak_rss_mb"] for r in tiny),
        "ours_peak_rss_mb": max(r["ours_peak_rss_mb"] for r in tiny),
    }
    if not quick:  # one process per side and round, taking turns; its timed steps are the repeats
        run = run_json(
            [
                "-m",
                "train.bench",
                "--size",
                "full",
                "--steps",
                str(max(3, repeats)),
                "--rounds",
                "2",
                "--compile",
                "--flops",
            ]
        )
        plain, ours, compiled = run["plain_step_s"], run["ours_step_s"], run["compiled_step_s"]
        row = {
            "plain_s_per_step": spread(plain),
            "ours_s_per_step": spread(ours),
            "speedup": {
                "median": round(statistics.median(plain) / statistics.median(ours), 2),
                "best_rounds": run["speedup"],
            },
            "plain_peak_rss_mb": run["plain_peak_rss_mb"],
            "ours_peak_rss_mb": run["ours_peak_rss_mb"],
            "compiled_s_per_step": spread(compiled),
            "compiled_warmup_s": run["compiled_warmup_s"],  # the compile happens in these steps
            "compiled_speedup": round(statistics.median(ours) / statistics.median(compiled), 2),
            # the roofline (train/bench.py): ours' counted FLOPs at the measured fp32 peak
            "ours_fastest_exact_s": run.get("ours_fastest_exact_s"),
            "ceiling_vs_plain": run.get("ceiling_vs_plain"),
            "plain_mfu": run.get("plain_mfu"),
            "ours_mfu": run.get("ours_mfu"),
        }
        if script:  # one side after the other: taking turns, the script's mapped weights go cold
            calibration = run_json(
                ["-m", "train.bench", "--size", "full", "--steps", "6", "--rounds", "2", "--sequential"]
                + ["--sides", "script,plain,ours", "--script", script]
            )
            steps = {side: calibration[f"{side}_step_s"] for side in ("script", "plain", "ours")}
            medians = {side: statistics.median(times) for side, times in steps.items()}
            row["calibration"] = {
                **{f"{side}_s_per_step": spread(times) for side, times in steps.items()},
                "plain_over_script": round(medians["plain"] / medians["script"], 3),
                "speedup_vs_script": round(medians["script"] / medians["ours"], 2),
            }
        results["full_sd15_256px"] = row
        with_script = ["--script", script] if script else []
        results["whole_run_full_sd15_256px"] = run_json(
            ["-m", "train.bench", "--size", "full", "--whole-run", "--steps", "6", *with_script]
        )
    if cuda_available():
        results.update(bench_train_gpu())
    return {"goal_speedup": 1.5, "goal_speedup_vs_script": 2.0, **results}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bench_train_gpu() -> dict:
    """Our step on the GPU at the sizes people train at: it/s, peak VRAM and MFU (FLOPs counted)."""
    results = {}
    for arch, extra in (("sd15", []), ("sdxl", ["--gradient-checkpointing"])):
        run = run_json(
            ["-m", "train.bench", "--device", "cuda", "--arch", arch, "--size", "full"]
            + ["--flops", "--ours-only", *extra]
        )
        results[f"cuda_{arch}_{run['resolution_px']}px"] = {
            "device": run["ours_device_name"],
            "dtype": run["spec"]["dtype"],
            "gradient_checkpointing": run["spec"]["gradient_checkpointing"],
            "it_per_s": spread([1 / s for s in run["ours_step_s"]]),
            "peak_vram_gib": run["ours_peak_vram_gib"],
            "tflops_per_step": round(run["ours_flops_per_step"] / 1e12, 2),
            "mfu": run["ours_mfu"],
        }
    sdxl = next(v for k, v in results.items() if k.startswith("cuda_sdxl"))
    sdxl["goal_vram_gib"] = 12
    return results


def bench_restyle(repeats: int, full: bool) -> dict:
    rounds = ["--rounds", "2" if full else "1"]  # QUICK: one process per side
    run = run_json(
        ["-m", "infer.restyle.bench", "--repeats", str(repeats), *rounds, *(["--full"] if full else [])]
    )
    results = {}
    for label, row in run.items():
        plain, ours = row["plain_diffusers_unfused"], row["ours"]
        ratios = [p / o for p, o in zip(plain.get("repeat_s", []), ours.get("repeat_s", []), strict=False)]
        results[label] = {
            "plain_images_per_s": round(plain["images_per_s"], 3),
            "ours_images_per_s": round(ours["images_per_s"], 3),
            "ratio": spread(ratios) if len(ratios) > 1 else {"median": round(row["ratio"], 3)},
            "plain_peak_mb": {k: v for k, v in plain.items() if "peak" in k},
            "ours_peak_mb": {k: v for k, v in ours.items() if "peak_" in k and "mb" in k},
            **{
                k: row[k]
                for k in ("ours_fastest_exact_s", "ceiling_ratio", "ours_mfu", "plain_mfu")
                if k in row
            },
        }
        if "ours_cutoff" in row:  # --guidance-cutoff: faster, not exact; its distance from plain's pictures
            cutoff = row["ours_cutoff"]
            cut_ratios = [
                p / o for p, o in zip(plain.get("repeat_s", []), cutoff.get("repeat_s", []), strict=False)
            ]
            results[label]["cutoff"] = {
                "guidance_cutoff": row["guidance_cutoff"],
                "images_per_s": round(cutoff["images_per_s"], 3),
                "ratio": spread(cut_ratios)
                if len(cut_ratios) > 1
                else {"median": round(row["cutoff_ratio"], 3)},
                **{k.removeprefix("cutoff_"): row[k] for k in row if k.startswith("cutoff_") and "diff" in k},
                "psnr_db": row["cutoff_psnr_db"],
                "mean_abs_pixel_diff_exact": round(row["mean_abs_pixel_diff"], 4),
            }
    return {"goal_ratio": 1.5, **results}


def bench_copy(quick: bool) -> dict:
    """The copy check on altered copies (python -m infer.evaluate.copy_bench); one run: it is exact
    counting, and its timings are given with the machine's load as it was."""
    args = ["-m", "infer.evaluate.copy_bench"] + (["--repeats", "1", "--works", "500"] if quick else [])
    return {"goal_tpr_at_zero_false_flags": 0.95, "goal_check_s": 60, **run_json(args)}


def bench_recommend() -> dict:
    """`infer recommend` on a quick demo-sized run (tiny base, 64 px, 2 inference steps, checkpoints at
    steps 3 and 6): seconds per grid cell, with the pipeline loaded once per checkpoint."""
    import tempfile

    from oeuvre.demo import DEMO_CONFIG, QUICK_OVERRIDES, VAE_DOWNSAMPLE

    config = Path(__file__).resolve().parents[1] / DEMO_CONFIG  # the bench may run from any folder
    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        run = Path(tmp) / "run"
        base, synthetic = Path(tmp) / "base", Path(tmp) / "synthetic"
        overrides = [f"output_dir={run}", f"base_model={base}", f"data.sources=[{{folder: {synthetic}}}]"]
        overrides += QUICK_OVERRIDES + ["train.recommend=false"]
        for args in (
            ["-m", "infer", "tiny-base", str(base), "--arch", "sd15", "--pretrain-steps", "20"]
            + ["--vae-downsample", str(VAE_DOWNSAMPLE)],
            ["-m", "data", "synth", str(synthetic), "--style", "swirl", "--n", "8", "--size", "96"],
            ["-m", "data", str(config), *overrides],
            ["-m", "train", str(config), *overrides],
        ):
            _run_quiet(args)
        start = time.perf_counter()
        COMMANDS.append("python -m infer recommend RUN --dry-run  # RUN: a quick demo run, built first")
        _run_quiet(["-m", "infer", "recommend", str(run), "--dry-run"])
        wall = time.perf_counter() - start
        data = json.loads((run / "report" / "recommendation.json").read_text())
    return {
        "cells": len(data["cells"]),
        "content_images": len(data["content"]),
        "seconds_per_cell": round(data["seconds_per_cell"], 3),
        "command_s": round(wall, 1),
        "choice": data["choice"],
        "runner_up": data["runner_up"],
    }


def _run_quiet(args: list[str]) -> None:
    print(f"bench: python {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode:
        raise SystemExit(f"bench: python {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def copy_lines(copy: dict) -> list[str]:
    scale = copy["scale"]
    lines = [
        "",
        f"## Copy check (`python -m infer.evaluate.copy_bench`, works from {copy['works_from']})",
        "",
        f"{copy['n_works']} works; {copy['negatives']} negatives (other works, restyled unrelated content), "
        f"best negative score {copy['max_negative_score']}; shipped threshold "
        f"{copy['shipped_threshold']} inliers ({copy['false_flags_at_shipped_threshold']} false flags). "
        f"{copy['comparisons_per_s']} comparisons/s.",
        "",
        "| alteration | n | TPR at 0 false flags | TPR at shipped threshold | ROC AUC | lowest score |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in copy["alterations"].items():
        lines.append(
            f"| {name} | {row['n']} | {row['tpr_at_zero_false_flags']:.0%} | "
            f"{row['tpr_at_shipped_threshold']:.0%} | {row['auc']:.3f} | {row['min_score']} |"
        )
    lines += [
        "",
        f"Full check of {scale['outputs']} outputs against {scale['works']} works: "
        f"{scale['check_s']} s (goal under {copy['goal_check_s']} s; the works' features, "
        "built once and cached: "
        f"{scale['work_features_s']} s); {scale['flagged_right_original']} flagged against the right "
        "original.",
    ]
    return lines


def machine() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def curation_lines(cur: dict) -> list[str]:
    lines = [
        f"| curation ({cur['images']} JPEGs, 512 px; images/s) | | "
        f"{cur['curation_images_per_s']['median']} (min {cur['curation_images_per_s']['min']}) | | ≥ 50 |"
    ]
    for n, row in cur["near_duplicate_search_s"].items():
        lines.append(
            f"| near-duplicate search, {n} hashes (s) | | {row['median']} (min {row['min']}) | | seconds |"
        )
    for row in cur.get("grouping", []):
        lines.append(
            f"| same-picture grouping, {row['images']} images (s) | | {row['group_s']} "
            f"(+ {row['features_s']} features) | | sub-quadratic |"
        )
    return lines


def train_step_lines(label: str, row: dict) -> list[str]:
    """Reference = the plain loop (what the diffusers script does each step, calibrated against it)
    unless the row says the script itself."""
    lines = [
        f"| train step, {label}: ours against the plain loop (s/step, median) | "
        f"{row['plain_s_per_step']['median']} | {row['ours_s_per_step']['median']} | "
        f"{row['speedup'].get('min', '–')} / {row['speedup']['median']}× | ≥ 1.5× |",
        f"| train peak RSS, {label} (MB; the step bench's process) | {row['plain_peak_rss_mb']} | "
        f"{row['ours_peak_rss_mb']} | | |",
    ]
    if "calibration" in row:  # the same three, one after the other, with the script itself
        cal = row["calibration"]
        script_s = cal["script_s_per_step"]["median"]
        lines += [
            f"| train step, {label}: the plain loop against diffusers' script (calibration; s/step, "
            f"one side after the other) | {script_s} | {cal['plain_s_per_step']['median']} | "
            f"{cal['plain_over_script']}× | within 0.85-1.15× |",
            f"| train step, {label}: ours against diffusers' script (s/step, same run) | {script_s} | "
            f"{cal['ours_s_per_step']['median']} | {cal['speedup_vs_script']}× | ≥ 2× |",
        ]
    if row.get("ceiling_vs_plain"):
        lines.append(
            f"| train step, {label}: ceiling, ours' counted FLOPs at the measured fp32 peak (s/step; "
            f"MFU plain / ours {row['plain_mfu']:.0%} / {row['ours_mfu']:.0%}) | | "
            f"{row['ours_fastest_exact_s']} | {row['ceiling_vs_plain']}× at most | |"
        )
    if "compiled_s_per_step" in row:
        lines.append(
            f"| train step, {label}: train.compile against eager ours (s/step; compile "
            f"{' + '.join(str(s) for s in row['compiled_warmup_s'])} s in the first steps) | "
            f"{row['ours_s_per_step']['median']} | {row['compiled_s_per_step']['median']} | "
            f"{row['compiled_speedup']}× | |"
        )
    return lines


def whole_run_lines(label: str, row: dict) -> list[str]:
    """A whole `python -m train` and a whole script run: wall time and peak RSS, ours by phase."""
    ours, script = row["ours"], row.get("script")
    ref_s = f"{script['process_s']}" if script else ""
    ref_mb = f"{script['peak_rss_mb']}" if script else ""
    lines = [
        f"| {label}, {row['steps']} steps: whole process, wall (s; reference = diffusers' script) | "
        f"{ref_s} | {ours['process_s']} | | |",
        f"| {label}: whole process, peak RSS (MB) | {ref_mb} | {ours['peak_rss_mb']} | | ≤ the script's |",
    ]
    for phase in ours["phases"]:
        lines.append(
            f"| {label}: ours, {phase['phase']} (s; peak RSS so far, MB) | | "
            f"{phase['s']} s; {phase['peak_rss_mb']} MB | | |"
        )
    return lines


def markdown(results: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {results['machine']['platform']}, {results['machine']['cpu_count']} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in results["machine"]["versions"].items()),
        "",
        f"`make bench{' QUICK=1' if results['quick'] else ''}` took {results['wall_s']:.0f} s.",
        "",
        "| figure | reference | ours | ratio (min / median) | goal |",
        "|---|---|---|---|---|",
    ]
    for label, row in results.get("train", {}).items():
        if isinstance(row, dict) and not label.startswith(("cuda_", "whole_run")):
            lines += train_step_lines(label, row)
    for label, row in results.get("train", {}).items():
        if label.startswith("whole_run"):
            lines += whole_run_lines(label, row)
    for label, row in results.get("train", {}).items():
        if label.startswith("cuda_"):
            mfu = "n/a (unknown peak)" if row["mfu"] is None else f"{row['mfu']:.1%}"
            lines.append(
                f"| train on {row['device']}, {label} ({row['dtype']}"
                f"{', grad. checkpointing' if row['gradient_checkpointing'] else ''}) | | "
                f"{row['it_per_s']['median']} it/s, {row['peak_vram_gib']} GiB peak, MFU {mfu} | | "
                f"{'≤ 12 GiB' if 'goal_vram_gib' in row else ''} |"
            )
    for label, row in results.get("restyle", {}).items():
        if isinstance(row, dict):
            lines.append(
                f"| restyle, {label} (images/s) | {row['plain_images_per_s']} | {row['ours_images_per_s']} | "
                f"{row['ratio'].get('min', '–')} / {row['ratio']['median']}× | ≥ 1.5× |"
            )
            if "ceiling_ratio" in row:  # the roofline: how far any exact change could take the ratio
                lines.append(
                    f"| restyle, {label}: ceiling, ours' counted FLOPs at the measured fp32 peak (s for "
                    f"the images; MFU plain / ours {row['plain_mfu']:.0%} / {row['ours_mfu']:.0%}) | | "
                    f"{row['ours_fastest_exact_s']} | {row['ceiling_ratio']}× at most | |"
                )
            if "cutoff" in row:  # not exact: the tolerance goes beside the ratio
                cut = row["cutoff"]
                lines.append(
                    f"| restyle, {label}, --guidance-cutoff {cut['guidance_cutoff']:g} (not exact: "
                    f"{cut['mean_abs_pixel_diff']} mean / {cut['p99_abs_pixel_diff']:g} p99 abs pixel diff "
                    f"from plain's, PSNR {cut['psnr_db']} dB) | {row['plain_images_per_s']} | "
                    f"{cut['images_per_s']} | {cut['ratio'].get('min', '–')} / {cut['ratio']['median']}× | "
                    "≥ 1.5× |"
                )
    lines += curation_lines(results["curation"]) if "curation" in results else []
    if "recommend" in results:
        rec = results["recommend"]
        lines.append(
            f"| infer recommend, tiny base 64 px ({rec['cells']} cells x {rec['content_images']} images; "
            f"s/cell) | | {rec['seconds_per_cell']} ({rec['command_s']} s in all) | | bounded grid |"
        )
    if "copy" in results:
        lines += copy_lines(results["copy"])
    if results.get("commands"):  # each figure above comes from one of these (its package's own bench)
        lines += ["", "## The commands that gave these figures", "", "```", *results["commands"], "```"]
    lines += ["", "How each reference is built and why it is fair: bench/README.md.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oeuvre.bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny models only, fewer images: about 3 minutes"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--script",
        default=os.environ.get("DIFFUSERS_SCRIPT") or None,
        help="diffusers' examples/dreambooth/train_dreambooth_lora.py, from a diffusers checkout "
        "(default: $DIFFUSERS_SCRIPT): measured beside ours and the plain loop at full size",
    )
    benches = {
        "curation": lambda a: bench_curation(a.repeats, 60 if a.quick else 300, a.quick),
        "copy": lambda a: bench_copy(a.quick),
        "train": lambda a: bench_train(a.repeats, quick=a.quick, script=a.script),
        "restyle": lambda a: bench_restyle(a.repeats, full=not a.quick),
        "recommend": lambda a: bench_recommend(),
    }
    parser.add_argument("--only", nargs="+", choices=list(benches), help="run just these (default: all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = {"quick": args.quick, "machine": machine()}
    for name, bench in benches.items():
        if not args.only or name in args.only:
            results[name] = bench(args)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    results["commands"] = COMMANDS
    atomic_write_text(OUT_DIR / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(OUT_DIR / "RESULTS.md", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
