"""`python -m data CONFIG [key=value ...] [--dry-run]`: build the artist's curated, captioned dataset.

`--dry-run` prints the resolved config and an estimate of what each source will read, then stops.

`python -m data synth OUT --style NAME --n 24 --seed 0` paints a synthetic artist's works instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from oeuvre.cli import add_config_arguments, add_debug_argument, resolve_config, run_main
from oeuvre.config import load_config
from oeuvre.config_schema import Config


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv and argv[0] == "synth":
        return synth_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m data", description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="threads decoding and writing images")
    args = parser.parse_args(argv)
    config = resolve_config(args)
    if config is None:
        if args.dry_run:
            print_estimates(load_config(args.config, args.overrides))
        return 0
    from data.build import build_dataset

    result = build_dataset(config, workers=args.workers, progress=sys.stderr.isatty())
    counts = result.counts
    reasons = {}
    for record in result.records:
        if record.status != "kept":
            reasons[record.code] = reasons.get(record.code, 0) + 1
    dropped = ", ".join(f"{code} {n}" for code, n in sorted(reasons.items())) or "none"
    print(
        f"{config.artist}: {counts['inputs']} inputs -> {counts['kept']} kept "
        f"({counts['train']} train, {counts['holdout']} holdout); dropped: {dropped}; "
        f"{result.decoded} new files decoded (the rest reused from the cache) -> {result.dataset_dir}"
    )
    return 0


def print_estimates(config: Config) -> None:
    """What `python -m data` would read, as YAML comments after the resolved config."""
    from data.build import cache_root
    from data.sources import estimate_source

    for source in config.data.sources:
        print(f"# estimate: {estimate_source(source, config.data, cache_root(config), config.seed)}")


def synth_main(argv: Sequence[str]) -> int:
    from data.synth import STYLES, paint_artist

    parser = argparse.ArgumentParser(
        prog="python -m data synth", description="Paint a procedural 'artist': one consistent style."
    )
    parser.add_argument("out", help="folder to write the paintings (and their .txt captions) into")
    parser.add_argument("--style", required=True, help=f"one of: {', '.join(STYLES)}")
    parser.add_argument("--n", type=int, default=24, help="how many paintings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512, dest="size_px", help="side of each square image, px")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    paths = paint_artist(args.out, args.style, args.n, args.seed, size_px=args.size_px)
    print(f"painted {len(paths)} '{args.style}' images into {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
