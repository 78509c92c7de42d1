"""Settings sweeps: parse `strength=0.3,0.5 scale=0.5,1.0`, and lay the results out as one labelled grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from oeuvre.inputs import InputError

SWEEP_KEYS = ("strength", "scale", "control")  # control: the weight of every --control


def parse_sweep(specs: Sequence[str]) -> dict[str, list[float]]:
    """{"strength": [...], "scale": [...], "control": [...]} from KEY=V1,V2,... items; rows are strength,
    columns scale (and control weight)."""
    sweep: dict[str, list[float]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or key not in SWEEP_KEYS:
            raise InputError(
                f"--sweep {spec}: expected KEY=V1,V2,... with KEY one of {', '.join(SWEEP_KEYS)}"
            )
        if key in sweep:
            raise InputError(f"--sweep {spec}: {key} is swept twice")
        try:
            numbers = [float(v) for v in values.split(",") if v.strip()]
        except ValueError as exc:
            raise InputError(f"--sweep {spec}: values must be numbers separated by commas") from exc
        if not numbers:
            raise InputError(f"--sweep {spec}: no values given")
        if key == "control" and min(numbers) < 0:
            raise InputError(f"--sweep {spec}: control weights must be >= 0")
        sweep[key] = list(dict.fromkeys(numbers))  # repeated values would only repeat tiles
    return sweep


def grid_image(
    tiles: Mapping[tuple[float, float], object],
    rows: Sequence[float],
    columns: Sequence[float],
    row_label: str = "strength",
    column_label: str = "scale",
    title: str = "",
    column_names: Sequence[str] | None = None,
    row_names: Sequence[str] | None = None,
):
    """Tiles[(row, column)] in a rows × columns grid, with a header row and column naming the values
    (`column_names`, `row_names` instead of "<label> <value>" where they are not plain numbers)."""
    from PIL import Image, ImageDraw, ImageFont

    first = next(iter(tiles.values()))
    tile_w, tile_h = first.size
    font = ImageFont.load_default(size=max(10, min(tile_h // 8, 24)))
    pad = 6
    text_h = font.getbbox("Ag")[3] + 2 * pad
    row_texts = row_names or [f"{row_label} {row:g}" for row in rows]
    left_w = max(font.getlength(text) for text in row_texts) + 2 * pad
    top_h = text_h * (2 if title else 1)
    width = int(left_w + tile_w * len(columns))
    height = int(top_h + tile_h * len(rows))
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    names = column_names or [f"{column_label} {column:g}" for column in columns]
    for j, name in enumerate(names):
        x = left_w + j * tile_w
        draw.text((x + pad, top_h - text_h + pad), name, fill="black", font=font)
    for i, (row, text) in enumerate(zip(rows, row_texts, strict=True)):
        y = top_h + i * tile_h
        draw.text((pad, y + tile_h / 2 - text_h / 2 + pad), text, fill="black", font=font)
        for j, column in enumerate(columns):
            tile = tiles[(row, column)]
            if tile.size != (tile_w, tile_h):
                tile = tile.resize((tile_w, tile_h))
            grid.paste(tile, (int(left_w + j * tile_w), int(y)))
    return grid
