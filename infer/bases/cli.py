"""`python -m infer tiny-base` and `python -m infer arch`: build a base offline, name its architecture."""

from __future__ import annotations

import argparse
import time


def add_tiny_base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    parser.add_argument("--arch", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument(
        "--size",
        choices=["tiny", "full"],
        default="tiny",
        help="tiny for tests; full = the real architecture",
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same weights")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="tiny only: first train the UNet this many steps to denoise generic pictures (0: random)",
    )
    parser.add_argument(
        "--noise-offset",
        type=float,
        default=0.0,
        help="tiny only: offset noise in the pre-training, so the base makes mean colours from the prompt "
        "instead of copying them from its noisy input (0: plain noise)",
    )
    parser.add_argument(
        "--norm-groups",
        type=int,
        choices=[8, 32],
        default=32,
        help="tiny only: the UNet's GroupNorm groups; 8 lets it output a mean colour (the demo's palette), "
        "32 leaves one channel per group",
    )
    parser.add_argument(
        "--sampler",
        choices=["default", "ddim"],
        default="default",
        help="default: the real base's scheduler (PNDM for SD 1.5); ddim: cleaner at img2img's few steps",
    )
    parser.add_argument(
        "--vae-downsample",
        type=int,
        choices=[2, 4, 8],
        default=8,
        help="tiny only: image pixels per latent pixel (8 as in SD; 2 keeps brush texture at 64 px)",
    )
    parser.add_argument(
        "--schedule",
        choices=["sd", "zero-snr"],
        default="sd",
        help="sd: SD's own scheduler; zero-snr: zero terminal SNR, v-prediction, trailing timesteps",
    )
    parser.add_argument(
        "--controlnet",
        action="append",
        choices=["canny", "depth"],
        default=[],
        help="tiny only: also build a ControlNet of this kind from the UNet and train it briefly "
        "(controlnet-KIND/ in the base; restyle --control KIND uses it); repeatable",
    )
    parser.add_argument("--controlnet-steps", type=int, default=150, help="its training steps")
    parser.add_argument(
        "--add-to-existing",
        action="store_true",
        help="only train the --controlnet ControlNets for the tiny base already at OUT (e.g. runs/demo/base)",
    )
    parser.add_argument(
        "--prebuilt",
        metavar="DIR",
        help="a base built earlier (e.g. the repo's infer/bases/demo_base): copied to OUT instead of "
        "building, when its tiny_base.json shows these same arguments",
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--if-changed",
        action="store_true",
        help="keep OUT when it was built with these same arguments; otherwise build it again (the demo)",
    )


def recipe_of(args: argparse.Namespace) -> dict:
    """The arguments that decide what a tiny base is (tiny_base.json's keys), from parsed arguments."""
    from infer.bases.tiny import RECIPE_KEYS

    return {key: getattr(args, key) for key in RECIPE_KEYS}


def run_tiny_base(args: argparse.Namespace) -> int:
    from infer.bases.tiny import built_with, copy_base, write_tiny_base

    start = time.perf_counter()
    if args.add_to_existing:
        from infer.bases.tiny_controlnet import add_tiny_controlnets
        from oeuvre.errors import OeuvreError

        if not args.controlnet:
            raise OeuvreError("--add-to-existing: name the ControlNets to add with --controlnet canny|depth")
        kinds = list(dict.fromkeys(args.controlnet))
        add_tiny_controlnets(args.out, kinds, args.controlnet_steps, args.seed, args.overwrite)
        print(f"added {', '.join(kinds)} ControlNet(s) to {args.out} in {time.perf_counter() - start:.2f} s")
        return 0
    recipe = recipe_of(args)
    if args.if_changed and not args.controlnet and built_with(args.out, **recipe):
        print(f"{args.out}: already built with these arguments; kept")
        return 0
    if args.prebuilt and not args.controlnet and built_with(args.prebuilt, **recipe):
        copy_base(args.prebuilt, args.out, overwrite=args.overwrite or args.if_changed)
        print(f"copied the prebuilt {args.prebuilt} (built with these arguments) to {args.out}")
        return 0
    out = write_tiny_base(
        args.out,
        overwrite=args.overwrite or args.if_changed,
        controlnets=tuple(dict.fromkeys(args.controlnet)),
        controlnet_steps=args.controlnet_steps,
        **recipe,
    )
    print(f"wrote {args.size} {args.arch} base to {out} in {time.perf_counter() - start:.2f} s")
    return 0


def add_arch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base_model")


def run_arch(args: argparse.Namespace) -> int:
    from infer.bases.resolve import detect_arch

    print(detect_arch(args.base_model))
    return 0
