"""`make demo`: the whole pipeline end to end on the embedded default, offline, on CPU.

Each step runs as its own command, exactly as a user would type it; steps whose part is not built
yet say so instead of pretending."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DEMO_CONFIG = "configs/demo.yaml"
DEMO_BASE = Path("runs/demo/base")


def run_step(title: str, args: list[str]) -> int:
    print(f"\n== {title}: {' '.join(args)}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, *args])
    print(f"== {title}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
    return code


def main() -> int:
    steps_not_built = []
    build_base = ["-m", "infer", "tiny-base", str(DEMO_BASE), "--arch", "sd15"]
    if not (DEMO_BASE / "model_index.json").is_file() and run_step("tiny base", build_base):
        return 1
    if run_step("base architecture", ["-m", "infer", "arch", str(DEMO_BASE)]):
        return 1
    for title, args in [
        ("dataset", ["-m", "data", DEMO_CONFIG]),
        ("training", ["-m", "train", DEMO_CONFIG]),
    ]:
        code = run_step(title, args)
        if code == 3:  # NotBuiltYet
            steps_not_built.append(title)
        elif code:
            return code
    if steps_not_built:
        print(f"\ndemo: built the tiny base; not built yet: {', '.join(steps_not_built)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
