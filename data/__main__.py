"""`python -m data CONFIG [key=value ...] [--dry-run]`: build the artist's curated, captioned dataset."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from oeuvre.cli import add_config_arguments, resolve_config, run_main
from oeuvre.errors import NotBuiltYet


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m data", description=__doc__)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    config = resolve_config(args)
    if config is None:
        return 0
    raise NotBuiltYet(
        f"dataset curation is not built yet (issue 'Data: a curated, captioned ...'); the resolved config "
        f"for artist '{config.artist}' is in {config.output_dir}/config.yaml"
    )


if __name__ == "__main__":
    run_main(main)
