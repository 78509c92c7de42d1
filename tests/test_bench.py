"""`make bench QUICK=1` machinery: one quick repeat writes results that parse and hold every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO


@pytest.mark.slow
def test_quick_bench_writes_parseable_results(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        # The copy and recommendation benches have their own tests (test_eval_copy, test_recommend).
        [
            sys.executable,
            "-m",
            "oeuvre.bench",
            "--quick",
            "--repeats",
            "1",
            "--only",
            "curation",
            "train",
            "restyle",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "bench/results.json").read_text())
    assert results["train"]["tiny_sd15_64px"]["speedup"]["median"] > 0
    assert results["restyle"]["tiny_sd15_64px"]["ratio"]["median"] > 0
    sdxl = results["restyle"]["tiny_sdxl_64px"]
    assert sdxl["ratio"]["median"] > 0 and sdxl["cutoff"]["ratio"]["median"] > 0
    assert sdxl["cutoff"]["mean_abs_pixel_diff"] > 0  # the approximation's distance is measured, not 0
    assert results["curation"]["curation_images_per_s"]["median"] > 0
    assert set(results["curation"]["near_duplicate_search_s"]) == {"1000", "10000", "100000"}
    assert results["machine"]["versions"]["torch"]
    table = (tmp_path / "bench/RESULTS.md").read_text()
    assert "train step, tiny_sd15_64px" in table and "restyle, tiny_sd15_64px" in table
    assert "restyle, tiny_sdxl_64px, --guidance-cutoff 0.4 (not exact" in table
    commands = table.split("## The commands that gave these figures")[1]
    assert "python -m infer.restyle.bench --repeats 1 --rounds 1" in commands
    assert "python -m train.bench --size tiny" in commands and "python -m data.bench" in commands


def test_flop_count_matches_a_matmul_and_mfu_uses_the_device_peak():
    import torch

    from oeuvre.flops import count_flops, fastest_exact_s, mfu, peak_tflops

    a, b = torch.randn(64, 128), torch.randn(128, 32)
    assert count_flops(lambda: a @ b) == 2 * 64 * 128 * 32
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0  # not the SXM figure
    assert peak_tflops("NVIDIA H200", "fp32") == 494.7
    assert peak_tflops("Some Future GPU", "bf16") is None
    assert mfu(10**12, 2.0, 1.0) == 0.5
    assert mfu(10**12, 2.0, None) is None
    assert fastest_exact_s(3 * 10**12, 1.5) == 2.0  # the roofline: FLOPs at the peak rate


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_train_bench_counts_the_work_the_caches_remove(arch):
    from train.bench import BenchSpec, measure

    spec = BenchSpec(arch=arch, size="tiny", resolution=64, steps=1, flops=True, peak_tflops=1.0)
    plain, ours = measure("plain", spec), measure("ours", spec)
    # The plain loop also VAE-encodes and text-encodes each step; ours reads both from the caches.
    assert 0 < ours["flops_per_step"] < plain["flops_per_step"]
    assert ours["mfu"] == pytest.approx(ours["flops_per_step"] / ours["s_per_step"] / 1e12)
    assert ours["it_per_s"] == pytest.approx(1 / ours["s_per_step"])


def test_bench_table_shows_gpu_training_rows():
    from oeuvre.bench import markdown

    gpu_row = {
        "device": "NVIDIA H100 80GB HBM3",
        "dtype": "bf16",
        "gradient_checkpointing": True,
        "it_per_s": {"min": 1.9, "median": 2.0, "n": 10},
        "peak_vram_gib": 11.2,
        "tflops_per_step": 80.0,
        "mfu": 0.41,
        "goal_vram_gib": 12,
    }
    results = {
        "quick": False,
        "wall_s": 1.0,
        "machine": {"platform": "linux", "cpu_count": 16, "versions": {"torch": "2"}},
        "train": {"goal_speedup": 1.5, "cuda_sdxl_1024px": gpu_row},
        "restyle": {"goal_ratio": 1.3},
        "curation": {
            "images": 1,
            "curation_images_per_s": {"min": 1, "median": 1},
            "near_duplicate_search_s": {},
        },
    }
    table = markdown(results)
    assert "cuda_sdxl_1024px" in table and "2.0 it/s, 11.2 GiB peak, MFU 41.0%" in table
    assert "≤ 12 GiB" in table


def bench_table(**sections) -> str:
    """RESULTS.md for hand-made bench sections, on a made-up 2-CPU machine."""
    from oeuvre.bench import markdown

    machine = {"platform": "linux", "cpu_count": 2, "versions": {"torch": "2"}}
    return markdown({"quick": False, "wall_s": 1.0, "machine": machine, **sections})


def test_bench_table_shows_the_roofline_beside_each_ratio():
    step = {"min": 1.0, "median": 1.0, "n": 3}
    train_row = {
        "plain_s_per_step": step,
        "ours_s_per_step": step,
        "speedup": {"median": 1.4},
        "plain_peak_rss_mb": 1,
        "ours_peak_rss_mb": 1,
        "ours_fastest_exact_s": 2.3,
        "ceiling_vs_plain": 2.65,
        "plain_mfu": 0.64,
        "ours_mfu": 0.53,
    }
    restyle_row = {
        "plain_images_per_s": 0.04,
        "ours_images_per_s": 0.045,
        "ratio": {"median": 1.19},
        "ours_fastest_exact_s": 79.1,
        "ceiling_ratio": 1.32,
        "plain_mfu": 0.76,
        "ours_mfu": 0.9,
        "cutoff": {
            "guidance_cutoff": 0.4,
            "images_per_s": 0.061,
            "ratio": {"median": 1.52},
            "mean_abs_pixel_diff": 2.5,
            "p99_abs_pixel_diff": 11.0,
            "psnr_db": 36.1,
            "mean_abs_pixel_diff_exact": 0.0003,
        },
    }
    table = bench_table(
        train={"full_sd15_256px": train_row}, restyle={"goal_ratio": 1.5, "full_sd15_256px": restyle_row}
    )
    assert "| 2.3 | 2.65× at most |" in table and "MFU plain / ours 64% / 53%" in table
    assert "| 79.1 | 1.32× at most |" in table and "MFU plain / ours 76% / 90%" in table
    assert "≥ 1.5×" in table
    tolerance = "(not exact: 2.5 mean / 11 p99 abs pixel diff from plain's, PSNR 36.1 dB)"
    assert f"--guidance-cutoff 0.4 {tolerance}" in table
    assert "| 0.04 | 0.061 | – / 1.52× | ≥ 1.5× |" in table


def test_mfu_flops_leave_out_what_gradient_checkpointing_recomputes():
    from train.bench import BenchSpec, measure

    spec = BenchSpec(arch="sd15", size="tiny", resolution=64, steps=1, flops=True)
    checkpointed = BenchSpec(**{**spec.__dict__, "gradient_checkpointing": True})
    assert measure("ours", checkpointed)["flops_per_step"] == measure("ours", spec)["flops_per_step"]


def test_paired_training_bench_alternates_two_live_processes():
    from train.bench import BenchSpec, run_paired

    results = run_paired(("plain", "ours"), BenchSpec(size="tiny", resolution=64, steps=3))
    assert set(results) == {"plain", "ours"}
    for result in results.values():
        assert len(result["step_s"]) == 3 and all(t > 0 for t in result["step_s"])
        assert result["peak_rss_mb"] > 0


def test_bench_table_says_each_training_ratio_against_what():
    spread = {"min": 1.0, "median": 2.0, "n": 3}
    full = {
        "plain_s_per_step": spread,
        "ours_s_per_step": spread,
        "speedup": {"median": 1.0},
        "plain_peak_rss_mb": 5300,
        "ours_peak_rss_mb": 5400,
        "compiled_s_per_step": spread,
        "compiled_warmup_s": [90.0, 20.0],
        "compiled_speedup": 1.1,
        "calibration": {
            "script_s_per_step": spread,
            "plain_s_per_step": spread,
            "ours_s_per_step": spread,
            "plain_over_script": 1.02,
            "speedup_vs_script": 2.1,
        },
    }
    phases = [{"phase": "final validation", "s": 30.0, "rss_mb": 5000, "peak_rss_mb": 5100}]
    whole = {
        "steps": 6,
        "ours": {"phases": phases, "wall_s": 80.0, "peak_rss_mb": 5100, "process_s": 85.0},
        "script": {"process_s": 40.0, "peak_rss_mb": 5200},
    }
    table = bench_table(
        train={"goal_speedup": 1.5, "full_sd15_256px": full, "whole_run_full_sd15_256px": whole}
    )
    assert "the plain loop against diffusers' script (calibration" in table and "1.02×" in table
    assert "ours against diffusers' script" in table and "2.1×" in table
    assert "ours against the plain loop" in table
    assert "train.compile against eager ours" in table and "90.0 + 20.0 s" in table
    assert "whole process, peak RSS (MB) | 5200 | 5100" in table
    assert "ours, final validation" in table


FAKE_SCRIPT = """
import time
from tqdm.auto import tqdm

bar = tqdm(range(4), desc="Steps")
for _ in range(4):
    time.sleep(0.05)
    bar.update(1)
tqdm(range(2), desc="Loading pipeline components").update(1)  # another bar: not a step
"""


def test_script_wrapper_times_each_step_of_an_unchanged_script(tmp_path):
    """train.bench_script: a step ends where the script's "Steps" bar moves; paired, each step
    waits for its turn and the wait is not counted."""
    script = tmp_path / "train_script.py"
    script.write_text(FAKE_SCRIPT)
    command = [sys.executable, "-m", "train.bench_script"]
    done = subprocess.run([*command, str(script)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["step_s"]) == 3 and all(0.04 < t < 1.0 for t in result["step_s"])
    assert result["peak_rss_mb"] > 0 and result["process_s"] >= sum(result["step_s"])

    # An even count of steps: s/step is their median as for the other sides (the mean of the middle two).
    uneven = tmp_path / "uneven_script.py"
    uneven.write_text(
        "import time\nfrom tqdm.auto import tqdm\nbar = tqdm(range(5), desc='Steps')\n"
        "for pause in (0.05, 0.05, 0.1, 0.3, 0.6):\n    time.sleep(pause)\n    bar.update(1)\n"
    )
    done = subprocess.run([*command, str(uneven)], cwd=REPO, capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    middle = sorted(result["step_s"])[1:3]
    assert len(result["step_s"]) == 4 and result["s_per_step"] == pytest.approx(sum(middle) / 2, abs=1e-3)

    paired = subprocess.Popen(
        [*command, "--paired", str(script)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert paired.stdout.readline().strip() == "ready"
    steps = []
    for _ in range(3):
        time.sleep(0.3)  # the parent's turn elsewhere: not part of the script's step
        paired.stdin.write("step\n")
        paired.stdin.flush()
        steps.append(json.loads(paired.stdout.readline())["step_s"])
    final = json.loads(paired.stdout.readline())
    assert paired.wait(timeout=60) == 0
    assert all(0.04 < t < 0.25 for t in steps) and len(final["step_s"]) == 3
