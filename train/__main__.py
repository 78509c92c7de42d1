"""`accelerate launch -m train CONFIG [key=value ...] [--dry-run]`: learn the artist's style as a LoRA.

Plain `python -m train ...` works too (one process). Resumes from the latest checkpoint unless
train.resume=none."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from oeuvre.cli import add_config_arguments, resolve_config, run_main


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    config = resolve_config(args)
    if config is None:
        return 0
    from train.recipe import run

    print(f"LoRA: {run(config)}")
    return 0


if __name__ == "__main__":
    run_main(main)
