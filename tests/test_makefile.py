"""The headline make targets: artist checks and override passthrough (make -n: nothing runs)."""

from __future__ import annotations

import subprocess

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
    assert "accelerate launch -m train configs/vangogh.yaml train.max_train_steps=2000" in result.stdout


def test_cpu_machine_pins_cpu_torch():
    result = make("-n", "-B", "install", "HAS_CUDA=")
    assert "torch==" in result.stdout and "whl/cpu" in result.stdout
