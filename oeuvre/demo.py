"""`make demo`: the whole pipeline end to end on the embedded default, offline, on CPU.

Each step runs as its own command, exactly as a user would type it (printed before it runs), so the
demo doubles as a worked example. Steps whose part is not built yet say so instead of pretending.
What the demo proves is the machinery: the base is a tiny random SD 1.5-shaped pipeline and the
artist a procedural one; real results need a real base model and a GPU."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DEMO_CONFIG = "configs/demo.yaml"
RUN = Path("runs/demo")
FIXTURE_PHOTOS = Path("../shared/fixtures/photos")
NOT_BUILT_YET = 3  # the exit code of a command whose part is not written yet


def run_step(title: str, args: list[str]) -> int:
    print(f"\n== {title}: python {' '.join(args)}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, *args])
    print(f"== {title}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
    return code


def content_inputs() -> list[str]:
    folder = RUN / "content"
    if not folder.is_dir() and run_step("content", ["-m", "infer", "content", str(folder), "--size", "128"]):
        raise SystemExit(1)
    inputs = [str(folder)]
    if FIXTURE_PHOTOS.is_dir():
        inputs.append(str(FIXTURE_PHOTOS))
    return inputs


def main() -> int:
    start = time.perf_counter()
    base, synthetic = RUN / "base", RUN / "synthetic"
    steps: list[tuple[str, list[str], bool]] = [
        (
            "tiny base",
            ["-m", "infer", "tiny-base", str(base), "--arch", "sd15"],
            (base / "model_index.json").is_file(),
        ),
        (
            "synthetic artist",
            [
                "-m",
                "data",
                "synth",
                str(synthetic),
                "--style",
                "swirl",
                "--n",
                "24",
                "--seed",
                "0",
                "--size",
                "96",
            ],
            synthetic.is_dir(),
        ),
        ("dataset", ["-m", "data", DEMO_CONFIG], False),
        ("training", ["-m", "train", DEMO_CONFIG], False),
    ]
    not_built = []
    for title, args, done_already in steps:
        if done_already:
            print(f"\n== {title}: already there, kept")
            continue
        code = run_step(title, args)
        if code == NOT_BUILT_YET:
            not_built.append(title)
        elif code:
            return code
    inputs = content_inputs()
    later = [
        ("restyle", ["-m", "infer", "restyle", *inputs, "--lora", str(RUN), "--overwrite"]),
        (
            "sweep",
            [
                "-m",
                "infer",
                "restyle",
                inputs[0],
                "--lora",
                str(RUN),
                "--out",
                str(RUN / "restyled" / "sweep"),
                "--sweep",
                "strength=0.3,0.5,0.7",
                "scale=0.5,1.0",
                "--overwrite",
            ],
        ),
        ("evaluation", ["-m", "infer", "evaluate", str(RUN)]),
    ]
    for title, args in later:
        code = run_step(title, args)
        if code == NOT_BUILT_YET:
            not_built.append(title)
        elif code:
            return code
    print(f"\ndemo: done in {time.perf_counter() - start:.0f} s. Look at:")
    for what, where in [
        ("curated dataset and its contact sheet", RUN / "dataset" / "report.html"),
        ("training samples (with / without trigger / LoRA off)", RUN / "samples"),
        ("TensorBoard logs", RUN / "logs"),
        ("LoRA and embedding", RUN / "lora"),
        ("restyled images and the sweep grid", RUN / "restyled"),
    ]:
        print(f"  {what}: {where}")
    if not_built:
        print(f"not built yet: {', '.join(not_built)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
