"""Real kills: `python -m data` and `python -m infer restyle` (and, in test_train.py, `python -m train`)
are SIGKILLed at named points (oeuvre/crash_points.py) and must lose nothing: the previous output is
whole and readable, nothing half-written sits under a final name, the sources are byte-identical, and
a re-run completes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_helpers import PLAIN_RECIPE

from oeuvre.atomic import aside_name
from oeuvre.crash_points import ENV

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop(ENV, None)
    if crash_at:
        env[ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (temporary dot-files included) and its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_whole(folder: Path) -> None:
    """Every file under a final (non-dot) name parses: PNGs decode, JSON and JSONL load."""
    for path in folder.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]


def paint(folder: Path, count: int, size=(96, 80)) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        rng = np.random.default_rng(i)
        cells = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        Image.fromarray(cells).resize(size, Image.Resampling.BICUBIC).save(folder / f"work{i:02d}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("point", ["atomic_write:before_replace", "replace_directory:aside"])
def test_python_m_data_killed_mid_write_loses_nothing(tmp_path, point):
    sources = paint(tmp_path / "works", 8)
    out = tmp_path / "run"
    args = ["data", "configs/demo.yaml", "artist=painter", f"data.sources=[{{folder: {sources}}}]"]
    args += [f"output_dir={out}", "data.min_side_px=48"]
    before_sources = digest(sources)
    assert run(*args).returncode == 0
    dataset = out / "dataset"
    before = {k: v for k, v in digest(dataset).items()}

    killed = run(*args, "seed=5", "data.holdout_fraction=0.3", crash_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # The previous dataset, whole: in place, or (killed between "aside" and "in") waiting aside.
    visible = dataset if dataset.is_dir() else aside_name(dataset)
    assert digest(visible) == before
    assert_whole(out)
    assert digest(sources) == before_sources

    again = run(*args, "seed=5", "data.holdout_fraction=0.3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert dataset.is_dir() and not aside_name(dataset).exists()
    assert_whole(dataset)
    assert digest(sources) == before_sources


@pytest.mark.slow
def test_restyle_killed_while_writing_keeps_the_finished_outputs(tmp_path, tiny_bases, tiny_loras):
    photos = paint(tmp_path / "photos", 2, size=(64, 64))
    out = tmp_path / "restyled"
    args = ["infer", "restyle", photos, "--lora", tiny_loras["sd15"], "--base", tiny_bases["sd15"]]
    args += ["--size", "64", "--steps", "2", "--device", "cpu", "--out", out, "--overwrite"]
    assert run(*args, "--seed", "1").returncode == 0
    before, before_photos = digest(out), digest(photos)
    assert len(before) == 4  # two PNGs and their JSON sidecars

    killed = run(*args, "--seed", "1", "--strength", "0.9", crash_at="atomic_write:before_replace")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert {k: v for k, v in digest(out).items() if not k.startswith(".")} == before
    assert_whole(out)
    assert digest(photos) == before_photos

    again = run(*args, "--seed", "1", "--strength", "0.9")
    assert again.returncode == 0, again.stderr[-2000:]
    assert_whole(out)
    assert digest(photos) == before_photos and digest(out) != before


@pytest.mark.slow
def test_python_m_train_killed_while_saving_a_checkpoint_resumes_from_the_last_whole_one(
    tmp_path, tiny_bases
):
    from safetensors.torch import load_file
    from train_helpers import write_dataset

    from oeuvre.paths import complete_checkpoints

    run_dir = tmp_path / "run"
    dataset = write_dataset(run_dir / "dataset", "<demo-artist>")
    before_dataset = digest(dataset)
    args = [
        "train",
        "configs/demo.yaml",
        f"output_dir={run_dir}",
        f"base_model={tiny_bases['sd15']}",
        *PLAIN_RECIPE,
    ]
    args += ["train.max_train_steps=6", "train.checkpoint_every=2", "train.validation_every=100"]
    args += ["train.validation_prompts=[]", "infer.steps=2"]

    killed = run(*args, crash_at="checkpoint:before_rename@2")  # while step 4 is being saved
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = run_dir / "checkpoints"
    assert [p.name for p in complete_checkpoints(checkpoints)] == ["step-2"]
    assert not (checkpoints / "step-4").exists() and load_file(
        checkpoints / "step-2" / "trainable.safetensors"
    )
    assert not (run_dir / "lora").exists()

    again = run(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout + again.stderr
    assert (run_dir / "lora" / "demo.safetensors").is_file()
    assert digest(dataset) == before_dataset
