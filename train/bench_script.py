"""`python -m train.bench_script [--paired] SCRIPT ARGS...`: run diffusers' own training script
(examples/dreambooth/train_dreambooth_lora.py from a diffusers checkout) unchanged, timing each
optimiser step, for `python -m train.bench --script`.

Nothing of the script is copied here: it runs as it is, through runpy, and only its "Steps" progress
bar is watched (a step ends where the bar moves). `--paired` speaks run_paired's protocol: "ready"
after the first (warm-up) step, then each next step only when stdin says "step", its time printed
as it ends. Last line: one JSON object with the step times, the whole process's wall time, the time
after the last step (saving the LoRA, the final pipeline load) and the peak RSS."""

from __future__ import annotations

import json
import resource
import runpy
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    paired = argv[:1] == ["--paired"]
    script, *script_args = argv[1:] if paired else argv
    import tqdm.auto

    try:
        if "torchvision" in Path(script).read_text(encoding="utf-8"):
            import torchvision.transforms  # noqa: F401 - the script's image transforms
    except (ImportError, RuntimeError) as exc:
        raise SystemExit(
            f"train.bench_script: the diffusers script needs torchvision, the build that matches torch "
            f"(torch 2.13 -> torchvision 0.28), and it does not import here: {exc}"
        ) from exc

    start = time.perf_counter()
    marks: list[float] = []
    original_update = tqdm.auto.tqdm.update

    def update(bar, n=1):
        if bar.desc == "Steps":  # the training loop's bar; pipelines and loaders have their own
            marks.append(time.perf_counter())
            if paired:
                if len(marks) > 1:
                    print(json.dumps({"step_s": marks[-1] - marks[-2]}), flush=True)
                if bar.n + n < bar.total:  # another step will follow: wait for our turn
                    if len(marks) == 1:
                        print("ready", flush=True)
                    if sys.stdin.readline().strip() != "step":
                        raise SystemExit("train.bench_script: the paired parent went away")
                    marks[-1] = time.perf_counter()  # the wait is not the step's
        return original_update(bar, n)

    tqdm.auto.tqdm.update = update
    sys.argv = [script, *script_args]
    runpy.run_path(script, run_name="__main__")
    end = time.perf_counter()
    steps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    result = {
        # The same median as the other sides' (the mean of the middle two for an even count): the upper
        # middle value, used before, made the script look slower than it is.
        "s_per_step": statistics.median(steps) if steps else None,
        "step_s": [round(s, 4) for s in steps],
        "process_s": round(end - start, 2),
        "until_first_step_end_s": round(marks[0] - start, 2) if marks else None,
        "after_last_step_s": round(end - marks[-1], 2) if marks else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
