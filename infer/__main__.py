"""`python -m infer COMMAND`: restyle photos with an artist LoRA, and the tools around it.

Commands (the package that holds each one's code in brackets):
  restyle INPUT... --lora RUN_DIR|FILE|none [options]              img2img in the artist's style [restyle]
  content OUT [--size 256]                                       the built-in content scenes [restyle]
  lora inspect|convert|resize|merge|push ...                     LoRA file tools (kohya/diffusers, Hub) [lora]
  evaluate RUN_DIR [--content DIR] [--baseline DIR] [--checkpoints]  held-out style, copy check, content kept
                                                                 [evaluate]
  recommend RUN_DIR [--content DIR] [--floor F] [--dry-run]       the best checkpoint, strength, scale on
                                                                 held-out works, into the LoRA [evaluate]
  showcase RUN_DIR [--out PNG]                                    content | base | LoRA | held-out work, one
                                                                 picture from the evaluation [evaluate]
  nearest IMAGE... --run RUN_DIR [-k 5]                          the artist's works nearest each image [works]
  app [--runs runs/] [--host 127.0.0.1] [--port 7860]            the Gradio web app over trained artists [app]
  tiny-base OUT --arch sd15|sdxl [--size tiny|full] [--pretrain-steps N] [--vae-downsample 2|4|8]
                                                                 a base pipeline, built offline [bases]
  arch BASE                                                      print sd15 or sdxl for a base model [bases]

This file only wires commands to packages; it is the one place allowed to import all of them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from oeuvre.cli import add_debug_argument, run_main

# command -> (help, module, its add-arguments function, its run function)
COMMANDS = {
    "restyle": (
        "restyle photos with an artist LoRA (img2img); accelerate launch -m infer restyle splits inputs",
        "infer.restyle.command",
        "add_arguments",
        "run",
    ),
    "content": ("write the built-in content scenes", "infer.restyle.content", "add_arguments", "run"),
    "lora": (
        "LoRA file tools: inspect, convert, resize, merge, push",
        "infer.lora.cli",
        "add_arguments",
        "run",
    ),
    "evaluate": (
        "held-out style similarity, copy check, content kept",
        "infer.evaluate.command",
        "add_arguments",
        "run",
    ),
    "recommend": (
        "pick the checkpoint, strength and scale from held-out evidence; ship them in the LoRA",
        "infer.evaluate.recommend_command",
        "add_arguments",
        "run",
    ),
    "showcase": (
        "one labelled picture from the evaluation: content, base, LoRA at two strengths, a held-out work",
        "infer.evaluate.showcase",
        "add_arguments",
        "run",
    ),
    "nearest": (
        "the artist's works nearest each image + a contact sheet",
        "infer.works.retrieval",
        "add_arguments",
        "run",
    ),
    "app": (
        "serve the Gradio web app: restyle with any trained artist",
        "infer.app.page",
        "add_arguments",
        "run",
    ),
    "tiny-base": (
        "write a randomly initialised SD 1.5 / SDXL pipeline folder",
        "infer.bases.cli",
        "add_tiny_base_arguments",
        "run_tiny_base",
    ),
    "arch": (
        "print sd15 or sdxl for a base model (hub id or folder)",
        "infer.bases.cli",
        "add_arch_arguments",
        "run_arch",
    ),
}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, module, add_arguments, _) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        getattr(importlib.import_module(module), add_arguments)(sub)
        if name != "lora":  # lora's own sub-commands each take --debug
            add_debug_argument(sub)
    args = parser.parse_args(argv)
    _, module, _, run = COMMANDS[args.command]
    if args.command == "lora":
        from infer.app.space import write_space_files

        return importlib.import_module(module).run(args, space_files=write_space_files)
    return getattr(importlib.import_module(module), run)(args)


if __name__ == "__main__":
    run_main(main)
