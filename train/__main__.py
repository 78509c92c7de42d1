"""`accelerate launch -m train CONFIG [key=value ...] [--dry-run]`: learn the artist's style as a LoRA."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from oeuvre.cli import add_config_arguments, resolve_config, run_main
from oeuvre.errors import NotBuiltYet


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    config = resolve_config(args)
    if config is None:
        return 0
    raise NotBuiltYet(
        f"training is not built yet (issue 'Train: DreamBooth/LoRA ...'); the resolved config for "
        f"artist '{config.artist}' is in {config.output_dir}/config.yaml"
    )


if __name__ == "__main__":
    run_main(main)
