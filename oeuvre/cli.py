"""What every oeuvre command line shares: CONFIG [key=value ...] [--dry-run] [--debug], and error exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from oeuvre.atomic import atomic_write_text
from oeuvre.config import config_to_yaml, load_config
from oeuvre.config_schema import Config
from oeuvre.errors import OeuvreError
from oeuvre.paths import RunPaths


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="configs/<artist>.yaml (layered on configs/base.yaml)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied last, values parsed as YAML, e.g. train.max_train_steps=2000",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and exit; loads no model"
    )
    add_debug_argument(parser)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def resolve_config(args: argparse.Namespace) -> Config | None:
    """Load the config; on --dry-run print it and return None, else record it in the run folder."""
    config = load_config(args.config, args.overrides)
    if args.dry_run:
        print(config_to_yaml(config), end="")
        return None
    write_resolved_config(config)
    return config


def write_resolved_config(config: Config) -> Path:
    path = RunPaths(config.output_dir).config_file
    atomic_write_text(path, config_to_yaml(config))
    return path


def run_main(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a CLI entry point: user errors print as one line with their exit code, no traceback
    unless --debug is given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(argv)
    except OeuvreError as exc:
        if "--debug" in argv:
            raise
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)
