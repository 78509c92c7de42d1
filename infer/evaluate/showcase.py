"""`python -m infer showcase RUN_DIR`: one picture that shows what the LoRA does, from the evaluation.

One row per content scene: the content, the base model alone, the LoRA at two strengths and the
held-out work nearest the LoRA's output, labelled. Everything comes from the report `infer evaluate`
wrote (report.json and its images), so the picture is the evaluation's own outputs, not a re-render."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oeuvre.atomic import atomic_write_png
from oeuvre.inputs import InputError, open_image

TILE_PX = 128  # the demo's 64 px outputs, enlarged pixel for pixel so strokes stay visible


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run folder (runs/<artist>), evaluated")
    parser.add_argument("--report", type=Path, help="the report folder; default RUN_DIR/report")
    parser.add_argument("--out", type=Path, help="the PNG to write; default RUN_DIR/showcase.png")


def showcase_columns(strengths: list[float]) -> list[tuple[str, str]]:
    """(report column, label): the base at the middle strength, the LoRA at the middle and the top one
    (0.55 and 0.75 around the default 0.55)."""
    if not strengths:
        raise InputError("report.json: settings.strengths is empty; run infer evaluate with strengths")
    ordered = sorted(strengths)
    middle, top = ordered[len(ordered) // 2], ordered[-1]
    columns = [("content", "content"), (f"base@{middle:g}", f"base {middle:g}")]
    columns += [(f"oeuvre@{s:g}", f"LoRA {s:g}") for s in dict.fromkeys([middle, top])]
    return columns


def showcase_image(report: Path):
    """The labelled grid for the report folder `report`."""
    from infer.restyle.sweep import grid_image

    data_path = report / "report.json"
    if not data_path.is_file():
        raise InputError(f"{data_path}: no evaluation report; run python -m infer evaluate RUN_DIR first")
    data = json.loads(data_path.read_text())
    columns = showcase_columns(data["settings"]["strengths"])
    tiles, rows = {}, []
    for row in data["rows"]:
        cells, scene = row["cells"], row["content"]
        last = cells.get(columns[-1][0]) or {}
        nearest = (last.get("nearest_holdout") or {}).get("path")
        if nearest is None or any(name not in cells for name, _ in columns):
            continue
        rows.append(scene)
        for name, label in columns:
            tiles[scene, label] = _tile(open_image(report / cells[name]["image"]))
        tiles[scene, "held-out work"] = _tile(open_image(Path(nearest)))
    if not rows:
        raise InputError(
            f"{data_path}: no row has every column of the showcase ({', '.join(n for n, _ in columns)})"
        )
    labels = [label for _, label in columns] + ["held-out work"]
    settings = data["settings"]
    title = f"{Path(data['run']).name}: {settings['prompt']}, LoRA scale {settings['lora_scale']:g}"
    return grid_image(tiles, rows, labels, title=title, column_names=labels, row_names=rows)


def _tile(image):
    from PIL import Image

    side = max(TILE_PX, image.width)
    return image.convert("RGB").resize((side, side), Image.NEAREST)


def run(args: argparse.Namespace) -> int:
    report = args.report or args.run_dir / "report"
    out = args.out or args.run_dir / "showcase.png"
    atomic_write_png(out, showcase_image(report))
    print(f"showcase: {out}")
    return 0
