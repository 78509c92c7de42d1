"""`python -m infer COMMAND`: restyle photos with an artist LoRA, and the tools around it.

Commands:
  restyle INPUT... --lora RUN_DIR|FILE|none [options]              img2img in the artist's style
  tiny-base OUT --arch sd15|sdxl [--size tiny|full] [--pretrain-steps N] [--vae-downsample 2|4|8]
                                                                 a base pipeline, built offline
  arch BASE                                                      print sd15 or sdxl for a base model
  content OUT [--size 256]                                       the built-in content scenes
  lora inspect|convert|resize|merge|push ...                     LoRA file tools (kohya/diffusers, Hub)
  evaluate RUN_DIR [--content DIR] [--baseline DIR] [--checkpoints]  held-out style, copy check, content kept
  nearest IMAGE... --run RUN_DIR [-k 5]                          the artist's works nearest each image
  app [--runs runs/] [--host 127.0.0.1] [--port 7860]            the web app (Gradio) over trained artists
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from oeuvre.cli import add_debug_argument, run_main
from oeuvre.errors import NotBuiltYet

NOT_BUILT: dict[str, str] = {}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("tiny-base", help="write a randomly initialised SD 1.5 / SDXL pipeline folder")
    tiny.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    tiny.add_argument("--arch", choices=["sd15", "sdxl"], default="sd15")
    tiny.add_argument(
        "--size",
        choices=["tiny", "full"],
        default="tiny",
        help="tiny for tests; full = the real architecture",
    )
    tiny.add_argument("--seed", type=int, default=0, help="same seed, same weights")
    tiny.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="tiny only: first train the UNet this many steps to denoise generic pictures (0: random)",
    )
    tiny.add_argument(
        "--vae-downsample",
        type=int,
        choices=[2, 4, 8],
        default=8,
        help="tiny only: image pixels per latent pixel (8 as in SD; 2 keeps brush texture at 64 px)",
    )
    tiny.add_argument("--overwrite", action="store_true")
    add_debug_argument(tiny)

    restyle = commands.add_parser(
        "restyle",
        help="restyle photos with an artist LoRA (img2img); accelerate launch -m infer restyle splits inputs",
    )
    from infer.restyle import add_arguments as add_restyle_arguments

    add_restyle_arguments(restyle)
    add_debug_argument(restyle)

    arch = commands.add_parser("arch", help="print sd15 or sdxl for a base model (hub id or folder)")
    arch.add_argument("base_model")
    add_debug_argument(arch)

    content = commands.add_parser("content", help="write the built-in content scenes")
    content.add_argument("out", help="folder to write the PNGs into")
    content.add_argument("--size", type=int, default=256, help="side of each square scene, px")
    add_debug_argument(content)

    lora = commands.add_parser("lora", help="LoRA file tools: inspect, convert, resize, merge, push")
    from infer.lora_cli import add_arguments as add_lora_arguments

    add_lora_arguments(lora)

    app = commands.add_parser("app", help="serve the Gradio web app: restyle with any trained artist")
    from infer.app import add_arguments as add_app_arguments

    add_app_arguments(app)
    add_debug_argument(app)

    evaluate = commands.add_parser("evaluate", help="held-out style similarity, copy check, content kept")
    from infer.evaluate import add_arguments as add_evaluate_arguments

    add_evaluate_arguments(evaluate)
    add_debug_argument(evaluate)

    nearest = commands.add_parser("nearest", help="the artist's works nearest each image + a contact sheet")
    from infer.retrieval import add_arguments as add_nearest_arguments

    add_nearest_arguments(nearest)
    add_debug_argument(nearest)

    for name, message in NOT_BUILT.items():
        stub = commands.add_parser(name, help=f"(not built yet) {message}")
        stub.add_argument("rest", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    if args.command == "tiny-base":
        from infer.tiny_base import write_tiny_base

        start = time.perf_counter()
        out = write_tiny_base(
            args.out,
            args.arch,
            args.size,
            args.seed,
            args.overwrite,
            args.pretrain_steps,
            args.vae_downsample,
        )
        print(f"wrote {args.size} {args.arch} base to {out} in {time.perf_counter() - start:.2f} s")
        return 0
    if args.command == "restyle":
        from infer.restyle import run

        return run(args)
    if args.command == "lora":
        from infer.lora_cli import run as run_lora

        return run_lora(args)
    if args.command == "app":
        from infer.app import run as run_app

        return run_app(args)
    if args.command == "content":
        from infer.content import write_builtin_content

        print("\n".join(str(p) for p in write_builtin_content(args.out, args.size)))
        return 0
    if args.command == "evaluate":
        from infer.evaluate import run as run_evaluate

        return run_evaluate(args)
    if args.command == "nearest":
        from infer.retrieval import run as run_nearest

        return run_nearest(args)
    if args.command == "arch":
        from infer.base_model import detect_arch

        print(detect_arch(args.base_model))
        return 0
    raise NotBuiltYet(NOT_BUILT[args.command])


if __name__ == "__main__":
    run_main(main)
