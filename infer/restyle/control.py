"""`--control canny[:WEIGHT] --control depth[:WEIGHT]`: ControlNet img2img that keeps the photo's
structure while the LoRA restyles it. Here: the flags, which ControlNet each kind loads (flag, then the
base folder's own `controlnet-KIND/`, then configs/base.yaml `infer.control.models`), the control
images for a photo, and how A1111's ControlNet extension records them in `parameters`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from infer.bases.control_images import KINDS, control_image
from oeuvre.inputs import InputError

BASE_DEPTH_ESTIMATOR = "depth-estimator"  # a base folder's own (tiny-base --controlnet depth)


@dataclass(frozen=True)
class ControlSpec:
    kind: str  # canny | depth
    model: str  # the ControlNet: hub id or folder
    weight: float  # controlnet_conditioning_scale


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control",
        action="append",
        metavar="KIND[:WEIGHT]",
        help="keep the photo's structure with a ControlNet: canny or depth, repeatable (multi-ControlNet)",
    )
    parser.add_argument(
        "--control-model", action="append", metavar="KIND=ID|DIR", help="the ControlNet for KIND"
    )
    parser.add_argument("--control-start", type=float, help="fraction of the steps where control starts")
    parser.add_argument("--control-end", type=float, help="... and where it ends")
    parser.add_argument("--canny-low", type=int, help="Canny's lower hysteresis threshold (0-255)")
    parser.add_argument("--canny-high", type=int, help="Canny's upper hysteresis threshold (0-255)")
    parser.add_argument("--depth-model", help="transformers depth-estimation model: hub id or folder")
    parser.add_argument(
        "--save-control", action="store_true", help="write each control image beside the outputs"
    )


def parse_controls(specs: list[str], default_weight: float) -> list[tuple[str, float]]:
    """[(kind, weight)] from `canny`, `depth:0.5`, ..."""
    controls = []
    for spec in specs:
        kind, sep, weight_text = spec.partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise InputError(f"--control {spec}: expected KIND[:WEIGHT] with KIND one of {', '.join(KINDS)}")
        try:
            weight = float(weight_text) if sep else default_weight
        except ValueError as exc:
            raise InputError(f"--control {spec}: the weight after ':' must be a number") from exc
        if weight < 0:
            raise InputError(f"--control {spec}: expected a weight >= 0")
        if kind in (k for k, _ in controls):
            raise InputError(f"--control {spec}: {kind} is given twice")
        controls.append((kind, weight))
    return controls


def parse_control_models(specs: list[str]) -> dict[str, str]:
    models = {}
    for spec in specs:
        kind, sep, model = spec.partition("=")
        if not sep or kind.strip() not in KINDS or not model.strip():
            raise InputError(
                f"--control-model {spec}: expected KIND=ID|DIR with KIND one of {', '.join(KINDS)}"
            )
        models[kind.strip()] = model.strip()
    return models


def resolve_controls(args: argparse.Namespace, control_config, base_model: str) -> dict:
    """The Settings fields for the control flags (empty controls when no --control is given)."""
    kinds = parse_controls(getattr(args, "control", None) or [], control_config.weight)
    flagged = parse_control_models(getattr(args, "control_model", None) or [])
    unused = sorted(set(flagged) - {kind for kind, _ in kinds})
    if unused:
        raise InputError(f"--control-model {unused[0]}=...: pass --control {unused[0]} to use it")

    def pick(name: str, default):
        value = getattr(args, name, None)
        return default if value is None else value

    start, end = (
        pick("control_start", control_config.guidance_start),
        pick("control_end", control_config.guidance_end),
    )
    if not 0 <= start < end <= 1:
        raise InputError(f"--control-start {start:g} --control-end {end:g}: expected 0 <= start < end <= 1")
    low, high = pick("canny_low", control_config.canny_low), pick("canny_high", control_config.canny_high)
    if not 0 <= low <= high <= 255:
        raise InputError(f"--canny-low {low} --canny-high {high}: expected 0 <= low <= high <= 255")
    base_folder = Path(base_model).expanduser()
    depth = getattr(args, "depth_model", None)
    if depth is None and kinds:
        own = base_folder / BASE_DEPTH_ESTIMATOR
        depth = str(own) if own.is_dir() else control_config.depth_estimator
    controls = []
    if kinds:
        from infer.bases.resolve import detect_arch

        defaults = getattr(control_config.models, detect_arch(base_model))
        for kind, weight in kinds:
            own = base_folder / f"controlnet-{kind}"
            model = flagged.get(kind) or (str(own) if own.is_dir() else getattr(defaults, kind))
            controls.append(ControlSpec(kind, model, weight))
    return {
        "controls": tuple(controls),
        "control_start": start,
        "control_end": end,
        "canny_low": low,
        "canny_high": high,
        "depth_model": depth,
        "save_control": bool(getattr(args, "save_control", False)),
    }


def control_images(settings, picture, device: str = "cpu") -> list:
    """One control image per --control, at the picture's size, in the order of settings.controls."""
    return [
        control_image(c.kind, picture, settings.canny_low, settings.canny_high, settings.depth_model, device)
        for c in settings.controls
    ]


def control_filename(stem: str, kind: str) -> str:
    return f"{stem}_{kind}.png"


def a1111_control_fields(settings, weights: tuple[tuple[str, float], ...]) -> dict[str, str]:
    """`ControlNet 0: "Module: canny, Model: ..., Weight: 1, ..."` as A1111's ControlNet extension
    writes its units (the value is JSON-quoted by format_parameters, since it holds commas)."""
    fields = {}
    for index, (spec, (_, weight)) in enumerate(zip(settings.controls, weights, strict=True)):
        if spec.kind == "canny":
            module = "canny"
            thresholds = f", Threshold A: {settings.canny_low}, Threshold B: {settings.canny_high}"
        else:
            module = "depth_anything" if "anything" in str(settings.depth_model).lower() else "depth"
            thresholds = ""
        model = Path(spec.model).name if Path(spec.model).exists() else spec.model.split("/")[-1]
        fields[f"ControlNet {index}"] = (
            f"Module: {module}, Model: {model}, Weight: {weight:g}{thresholds}, "
            f"Guidance Start: {settings.control_start:g}, Guidance End: {settings.control_end:g}"
        )
    return fields
