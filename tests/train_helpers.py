"""A tiny curated dataset in the layout `python -m data` writes, and short training configs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from oeuvre.config import PROJECT_CONFIGS, load_config


def painted(seed: int, size: tuple[int, int]) -> Image.Image:
    """Warm diagonal strokes on a dark ground: one consistent 'style' with varied layouts."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 6.28)
    stripes = np.sin((x + y) / 3.0 + phase) * 0.5 + 0.5
    base = np.stack([0.2 + 0.7 * stripes, 0.3 * stripes, 0.1 + 0.1 * rng.random((height, width))], axis=-1)
    return Image.fromarray((base * 255).clip(0, 255).astype(np.uint8))


def write_dataset(root: Path, token: str, n_train: int = 4, n_holdout: int = 1) -> Path:
    sizes = [(64, 64), (96, 64), (64, 96)]
    for split, count, offset in (("train", n_train, 0), ("holdout", n_holdout, 100)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            image = painted(offset + i, sizes[i % len(sizes)])
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            name = f"{split}-{i:03d}.png"
            (folder / name).write_bytes(buffer.getvalue())
            rows.append(
                {
                    "file_name": name,
                    "text": f"a painting in the style of {token}",
                    "source": f"test:{i}",
                    "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                    "width": image.width,
                    "height": image.height,
                }
            )
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


# The demo's palette recipe (lr 1e-3, offset noise, output preservation, configs/demo.yaml) is for the
# demo's pictures; the training tests check the machinery on the plain recipe they were written for.
PLAIN_RECIPE = (
    "train.lr=1e-4",
    "train.noise_offset=0",
    "train.preservation_weight=0",
    "infer.lora_scale=0.8",
    "infer.guidance=7.0",
    "train.lora_rank=4",
    "train.lora_alpha=4.0",
    "train.lora_target_modules=[to_q,to_k,to_v,to_out.0]",
)


def train_config(out: Path, base: Path, *overrides: str):
    """The demo config, shrunk to a few steps, on `base`, writing to `out`."""
    return load_config(
        PROJECT_CONFIGS / "demo.yaml",
        [
            f"output_dir={out}",
            f"base_model={base}",
            *PLAIN_RECIPE,
            "train.max_train_steps=4",
            "train.validation_every=100",
            "train.checkpoint_every=100",
            "train.validation_prompts=['a harbour, {token}']",
            "infer.steps=2",
            *overrides,
        ],
    )


def launch(run_dir: Path, base: Path, *overrides: str, processes: int = 2, accelerate_args=()) -> object:
    """`accelerate launch --multi_gpu --num_processes N -m train` on CPU (gloo) with a free port, as a
    user runs it; returns the CompletedProcess."""
    import os
    import socket
    import sys

    repo = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *(accelerate_args or ["--multi_gpu"]),
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(port),
        "-m",
        "train",
        "configs/demo.yaml",
        f"output_dir={run_dir}",
        f"base_model={base}",
        *PLAIN_RECIPE,
        "train.validation_every=100",
        "train.validation_prompts=['a harbour, {token}']",
        "infer.steps=2",
        *overrides,
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(repo),
        "OMP_NUM_THREADS": "1",
        "PYTHONFAULTHANDLER": "1",  # a SIGABRT then prints every thread's Python stack
    }
    # A two-process run once hung now and then at exit (a torch deadlock between a gloo group's destructor
    # and the GIL; train.recipe.run now frees things in an order that avoids it). Should a launch hang
    # again, it must fail this test, not stall the suite: after 150 s (a normal run takes about 7 s) its
    # ranks' stacks go to RUN_DIR_hung_launch_N.log beside run_dir, every process it started is killed,
    # and it is tried once more (resuming from its last checkpoint is bit-exact).
    for attempt in range(2):
        log = run_dir.parent / f"{run_dir.name}_hung_launch_{attempt}.log"
        result = _run_with_deadline(command, repo, env, deadline_s=150, hang_log=log)
        if result is not None:
            return result
    raise TimeoutError(f"two-process training hung twice; the ranks' stacks are in {log.parent}")


def _run_with_deadline(command: list[str], cwd: Path, env: dict, deadline_s: float, hang_log: Path):
    """Run `command`; its CompletedProcess, or None when it outlived `deadline_s`. Then every process it
    started is killed: torch's elastic agent starts each rank in a session of its own, so killing the
    launcher's process group leaves the ranks alive, holding our pipes open forever (which is how a
    hang once stalled CI until its 90-minute limit)."""
    import signal
    import subprocess
    import tempfile
    import time

    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        try:
            process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            launcher = psutil.Process(process.pid)
            ranks = launcher.children(recursive=True)
            for rank in ranks:  # SIGABRT: faulthandler prints each rank's thread stacks to our stderr file
                with contextlib.suppress(psutil.Error):
                    rank.send_signal(signal.SIGABRT)
            time.sleep(2)
            for member in [*ranks, launcher]:
                with contextlib.suppress(psutil.Error):
                    member.kill()
            psutil.wait_procs([*ranks, launcher], timeout=30)
            err.seek(0)
            hang_log.write_text(err.read())
            print(f"two-process launch hung for {deadline_s:.0f} s; stacks in {hang_log}")
            return None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())


def reset_accelerate() -> None:
    """Accelerate keeps one state per process (a singleton): leave none behind for the next run."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    GradientState._reset_state()


def train_in_process(config) -> Path:
    """`recipe.run(config)` in this process, its Accelerate state reset afterwards; the LoRA file."""
    from train import recipe

    try:
        return recipe.run(config)
    finally:
        reset_accelerate()


def one_process():
    """What fill_latent_cache asks of an Accelerator, for one process on the CPU."""
    from types import SimpleNamespace

    import torch

    return SimpleNamespace(
        process_index=0,
        num_processes=1,
        device=torch.device("cpu"),
        is_local_main_process=False,
        wait_for_everyone=lambda: None,
    )
