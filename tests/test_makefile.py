"""The headline make targets: artist checks and override passthrough (make -n: nothing runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


def test_unknown_artist_lists_the_artists_that_have_a_config():
    result = make("train", "ARTIST=nope")
    assert result.returncode != 0
    assert "ARTIST=nope" in result.stderr and "vangogh" in result.stderr and "demo" in result.stderr
    assert "pip install" not in result.stdout  # it stopped before building anything


def test_train_runs_accelerate_launch_with_overrides():
    result = make("-n", "train", "ARTIST=vangogh", "ARGS=train.max_train_steps=2000")
    assert result.returncode == 0, result.stderr
    launch = "accelerate launch --quiet --config_file configs/accelerate/default.yaml -m train"
    assert f"{launch} configs/vangogh.yaml train.max_train_steps=2000" in result.stdout


def test_train_builds_the_dataset_first_when_it_is_missing():
    assert not (REPO / "runs" / "vangogh" / "dataset" / "train" / "metadata.jsonl").exists()
    lines = make("-n", "train", "ARTIST=vangogh").stdout.splitlines()
    data = next(i for i, line in enumerate(lines) if "-m data configs/vangogh.yaml" in line)
    train = next(i for i, line in enumerate(lines) if "-m train configs/vangogh.yaml" in line)
    assert data < train


def test_a_failed_launch_is_one_line_without_accelerate_warnings_or_traceback():
    """What `make train` runs, with a bad override: the trainer's own error line and nothing else."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "accelerate"), "launch", "--quiet", "--config_file"]
        + ["configs/accelerate/default.yaml", "-m", "train", "configs/demo.yaml", "train.lora_rank=-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train.lora_rank" in lines[0], done.stderr


def test_cpu_machine_pins_cpu_torch():
    result = make("-n", "-B", "install", "HAS_CUDA=")
    assert "torch==" in result.stdout and "whl/cpu" in result.stdout
