"""Loss masks for works: what of each image a style LoRA should learn (white) and not (black).

Three sources, combined (a pixel is learnt only where every one of them says so):
- a sidecar `<name>.mask.png` next to a work in a source folder;
- the work's own alpha channel (transparent: not learnt), for works read from a folder;
- with `data.detect_frames`, a detected frame or museum border: a uniform strip of one colour on all
  four sides, found from pixel statistics alone (no model weights).

The build writes each mask as `<dataset>/masks/<sha256>.png`, where the trainer finds it, and records
what it found in report.json (`mask`) and on the contact sheet."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

SIDECAR_SUFFIX = ".mask.png"
STRIP_STD_MAX = 8.0  # a strip line is uniform when no channel varies more than this (0..255)
STRIP_COLOUR_TOLERANCE = 16.0  # ... and its mean stays this close to the outermost line's colour
SIDES_COLOUR_TOLERANCE = 48.0  # the four strips: one frame, possibly shaded differently per side
MIN_STRIP_SHARE, MAX_STRIP_SHARE = 0.01, 0.25  # of the side's length
DETECT_MAX_PX = 512


def is_sidecar_mask(path: Path) -> bool:
    return path.name.lower().endswith(SIDECAR_SUFFIX)


def sidecar_of(source: str) -> Path:
    path = Path(source)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def _strip(lines: np.ndarray, limit: int) -> tuple[int, np.ndarray]:
    """How many leading lines (each [length, 3]) are uniform and of the outermost line's colour."""
    colour = lines[0].mean(axis=0)
    width = 0
    for line in lines[: limit + 1]:
        if line.std(axis=0).max() > STRIP_STD_MAX or np.abs(line.mean(axis=0) - colour).max() > (
            STRIP_COLOUR_TOLERANCE
        ):
            break
        width += 1
    return width, colour


def detect_frame(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The picture inside a uniform frame or border as (left, top, right, bottom), or None.

    Large works are measured on a copy at most DETECT_MAX_PX on a side (a frame is wide enough to
    survive that), the box scaled back and rounded inwards."""
    scale = min(1.0, DETECT_MAX_PX / max(image.size))
    if scale < 1.0:
        small = image.resize((round(image.width * scale), round(image.height * scale)), Image.BOX)
        box = _detect(small)
        if box is None:
            return None
        left, top, right, bottom = (v / scale for v in box)
        return math.ceil(left), math.ceil(top), math.floor(right), math.floor(bottom)
    return _detect(image)


def _detect(image: Image.Image) -> tuple[int, int, int, int] | None:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = pixels.shape[:2]
    sides = {
        "top": (pixels, height),
        "bottom": (pixels[::-1], height),
        "left": (pixels.transpose(1, 0, 2), width),
        "right": (pixels.transpose(1, 0, 2)[::-1], width),
    }
    found = {}
    for name, (lines, length) in sides.items():
        limit = int(length * MAX_STRIP_SHARE)
        strip, colour = _strip(lines, limit)
        if strip < max(2, round(length * MIN_STRIP_SHARE)) or strip > limit:  # none, or a flat picture
            return None
        found[name] = (strip, colour)
    colours = np.stack([colour for _, colour in found.values()])
    if np.abs(colours - colours.mean(axis=0)).max() > SIDES_COLOUR_TOLERANCE:
        return None
    return found["left"][0], found["top"][0], width - found["right"][0], height - found["bottom"][0]


def _alpha(source: Path) -> Image.Image | None:
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
            return None
        alpha = image.getchannel("A")
    return None if alpha.getextrema()[0] == 255 else alpha


def work_mask(
    source: str, kind: str, image: Image.Image, detect_frames: bool
) -> tuple[Image.Image | None, dict[str, Any] | None]:
    """The work's mask at its processed size and what it came from; (None, None) for none."""
    size = image.size
    masks, info = [], {"from": []}
    if kind == "folder":
        sidecar = sidecar_of(source)
        if sidecar.is_file():
            with Image.open(sidecar) as opened:
                masks.append(opened.convert("L").resize(size, Image.BILINEAR))
            info["from"].append("sidecar")
        alpha = _alpha(Path(source)) if Path(source).is_file() else None
        if alpha is not None:
            masks.append(alpha.resize(size, Image.BILINEAR))
            info["from"].append("alpha")
    box = detect_frame(image) if detect_frames else None
    if box is not None:
        frame = Image.new("L", size, 0)
        frame.paste(255, box)
        masks.append(frame)
        info["from"].append("frame")
        info["frame"] = list(box)
    if not masks:
        return None, None
    combined = np.minimum.reduce([np.asarray(m, dtype=np.uint8) for m in masks])
    return Image.fromarray(combined, "L"), info
