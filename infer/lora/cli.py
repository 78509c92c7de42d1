"""`python -m infer lora inspect|convert|resize|merge|push`: the file tools' command line."""

from __future__ import annotations

import argparse
import json

from oeuvre.cli import add_debug_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tools = parser.add_subparsers(dest="lora_command", required=True)

    inspect = tools.add_parser("inspect", help="format, arch, rank, alpha, targets, parameters, metadata")
    inspect.add_argument("file")
    inspect.add_argument("--json", action="store_true", help="print everything as JSON")
    add_debug_argument(inspect)

    convert = tools.add_parser("convert", help="diffusers <-> kohya (A1111/ComfyUI), metadata carried")
    convert.add_argument("file")
    convert.add_argument("--to", choices=["kohya", "diffusers"], required=True)
    convert.add_argument("out")
    add_debug_argument(convert)

    resize = tools.add_parser("resize", help="SVD to a lower rank; prints the retained energy")
    resize.add_argument("file")
    resize.add_argument("--rank", type=int, required=True)
    resize.add_argument("out")
    resize.add_argument("--to", choices=["same", "kohya", "diffusers"], default="same")
    add_debug_argument(resize)

    merge = tools.add_parser("merge", help="weights[0]*A + weights[1]*B, exactly (ranks stacked)")
    merge.add_argument("a")
    merge.add_argument("b")
    merge.add_argument("out")
    merge.add_argument("--weights", default="1,1", help="two comma-separated numbers, e.g. 0.7,0.3")
    merge.add_argument("--to", choices=["same", "kohya", "diffusers"], default="same")
    add_debug_argument(merge)

    push = tools.add_parser("push", help="upload a run's LoRA files, card and samples to the Hub")
    push.add_argument("run_dir")
    push.add_argument("--repo", required=True, help="USER/NAME")
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", action="store_true", help="print what would go up; upload nothing")
    push.add_argument("--with-app", action="store_true", help="add app.py: the web app for this LoRA (Space)")
    add_debug_argument(push)


def _weights(text: str) -> tuple[float, float]:
    from infer.lora.files import LoraFileError

    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise LoraFileError(f"--weights {text!r}: expected two comma-separated numbers, e.g. 0.7,0.3")
    return values  # type: ignore[return-value]


def _print_inspect(info: dict) -> None:
    metadata = info.pop("metadata")
    recommended = info.pop("recommended", None)
    for key, value in info.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    if recommended:
        print(
            f"recommended: strength {recommended['strength']:g}, scale {recommended['scale']:g} "
            f"({recommended['checkpoint']}; style {recommended['evidence'].get('style', 0):.3f}, "
            f"content kept {recommended['evidence'].get('content_kept', 0):.3f})"
        )
    print(f"metadata: {len(metadata)} keys")
    for key in sorted(metadata):
        value = metadata[key]
        print(f"  {key}: {value if len(value) <= 100 else value[:97] + '...'}")


def run(args: argparse.Namespace, space_files=None) -> int:
    """`space_files(run_dir, repo)`: the web app's Space files for `push --with-app`, handed in by the
    command line above both packages, since the LoRA tools do not import the app."""
    from infer.lora import tools as lora_tools

    command = args.lora_command
    if command == "inspect":
        info = lora_tools.inspect_file(args.file)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_inspect(info)
        return 0
    if command == "convert":
        lora = lora_tools.load_lora(args.file)
        out = lora_tools.save_lora(lora, args.out, args.to)
        print(f"converted {args.file} ({lora.format}) to {out} ({args.to})")
        return 0
    if command == "resize":
        lora = lora_tools.load_lora(args.file)
        resized, retained = lora_tools.resize(lora, args.rank)
        out = lora_tools.save_lora(resized, args.out, lora.format if args.to == "same" else args.to)
        print(f"resized to rank {args.rank}: {out}; retained energy {retained:.4f} ({retained:.2%})")
        return 0
    if command == "merge":
        weights = _weights(args.weights)
        a, b = lora_tools.load_lora(args.a), lora_tools.load_lora(args.b)
        merged = lora_tools.merge(a, b, weights)
        out = lora_tools.save_lora(merged, args.out, a.format if args.to == "same" else args.to)
        print(f"merged {args.a} x {weights[0]} + {args.b} x {weights[1]} into {out}")
        return 0
    if command == "push":
        lines = lora_tools.push(
            args.run_dir,
            args.repo,
            private=args.private,
            dry_run=args.dry_run,
            extra_files=space_files if args.with_app else None,
        )
        verb = "would upload" if args.dry_run else "uploaded"
        visibility = "private" if args.private else "public"
        print(f"{verb} {len(lines)} files to https://huggingface.co/{args.repo} ({visibility}):")
        print("\n".join(f"  {line}" for line in lines))
        return 0
    raise AssertionError(command)
