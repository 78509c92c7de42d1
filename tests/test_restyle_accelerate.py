"""`accelerate launch --num_processes 2 -m infer restyle`: inputs split, images as in one process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_restyle_each_input_once_and_match_one_process(tmp_path, tiny_loras, tiny_controlnets):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, colour in enumerate([(200, 60, 40), (40, 200, 60), (60, 40, 200)]):
        Image.new("RGB", (64, 48), colour).save(photos / f"p{index}.png")
    args = [str(photos), "--lora", str(tiny_loras["sd15"]), "--size", "64", "--steps", "2", "--num", "2"]
    args += ["--device", "cpu"]
    # With a ControlNet: each process makes (and saves) its own inputs' control images.
    args += [
        "--control",
        "canny:0.7",
        "--control-model",
        f"canny={tiny_controlnets['sd15']}",
        "--save-control",
    ]

    # One thread in both runs, as accelerate gives each process: float sums then happen in the same order.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "infer", "restyle", *args, "--out", str(tmp_path / "one")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    # No GPU here: --multi_gpu makes accelerate start real processes (torchrun); they talk over gloo.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += [
        "--main_process_port",
        str(_free_port()),
        "-m",
        "infer",
        "restyle",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    double = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]

    counts = {int(rank): int(n) for rank, n in re.findall(r"\[(\d)/2\] restyled (\d+) of", double.stdout)}
    assert sorted(counts) == [0, 1] and sum(counts.values()) == 3 and min(counts.values()) >= 1
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 6 + 3 and names == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    assert "p0_seed1_str0.55_lora0.8_canny0.7.png" in names and "p2_canny.png" in names
    for name in names:
        one = np.asarray(Image.open(tmp_path / "one" / name))
        two = np.asarray(Image.open(tmp_path / "two" / name))
        assert np.array_equal(one, two), name
