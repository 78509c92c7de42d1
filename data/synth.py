"""Procedural "artists": each style has its own palette, stroke shape and surface texture, painted over
varied subjects and compositions, so a model can learn the style and a simple statistic can measure it.

- `swirl`: saturated blues and chrome yellows, short thick curved strokes along a swirling flow field
  (high colour saturation, strong fine texture).
- `wash`: muted, light watercolour: broad soft translucent blobs on grainy paper (low saturation, smooth).

`paint_artist(out_dir, style, n, seed)` writes `<style>-NNN.png` with a `.txt` caption naming the subject.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from oeuvre.atomic import atomic_write_bytes, atomic_write_text
from oeuvre.errors import OeuvreError

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Style:
    name: str
    # Palette from dark to light: scene roles pick from it, so every subject comes out in these colours.
    palette: tuple[RGB, ...]
    render: Callable[[Image.Image, np.random.Generator, Style], Image.Image]


# -- subjects: flat compositions in palette colours ----------------------------------------------


def _pick(rng: np.random.Generator, palette: tuple[RGB, ...], lo: float, hi: float) -> RGB:
    """A palette colour from the part of the dark-to-light range between lo and hi."""
    n = len(palette)
    return palette[int(rng.integers(int(lo * (n - 1)), max(int(lo * (n - 1)) + 1, int(hi * (n - 1)) + 1)))]


def _landscape(draw: ImageDraw.ImageDraw, s: int, rng, pal) -> str:
    horizon = int(s * rng.uniform(0.35, 0.65))
    draw.rectangle([0, 0, s, horizon], fill=_pick(rng, pal, 0.5, 1.0))
    for k in range(int(rng.integers(2, 4))):
        base = horizon + k * s // 10
        points = (
            [(0, s)]
            + [
                (x, base - int(s * 0.12 * math.sin(x / s * math.pi * rng.uniform(1, 3) + k)))
                for x in range(0, s + 8, 8)
            ]
            + [(s, s)]
        )
        draw.polygon(points, fill=_pick(rng, pal, 0.0, 0.6))
    r = int(s * rng.uniform(0.05, 0.1))
    cx, cy = int(s * rng.uniform(0.15, 0.85)), int(horizon * rng.uniform(0.2, 0.6))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=pal[-1])
    return "a landscape with hills under a bright sun"


def _still_life(draw, s, rng, pal) -> str:
    table = int(s * rng.uniform(0.55, 0.7))
    draw.rectangle([0, 0, s, table], fill=_pick(rng, pal, 0.3, 0.8))
    draw.rectangle([0, table, s, s], fill=_pick(rng, pal, 0.0, 0.4))
    vx = int(s * rng.uniform(0.2, 0.8))
    draw.rectangle([vx - s // 14, table - s // 3, vx + s // 14, table], fill=_pick(rng, pal, 0.0, 0.5))
    for _ in range(int(rng.integers(2, 5))):
        r = int(s * rng.uniform(0.05, 0.09))
        x = int(s * rng.uniform(0.1, 0.9))
        draw.ellipse([x - r, table - r, x + r, table + r], fill=_pick(rng, pal, 0.4, 1.0))
    return "a still life with fruit and a vase on a table"


def _portrait(draw, s, rng, pal) -> str:
    draw.rectangle([0, 0, s, s], fill=_pick(rng, pal, 0.0, 0.6))
    cx = int(s * rng.uniform(0.4, 0.6))
    draw.ellipse([cx - s // 3, int(s * 0.7), cx + s // 3, int(s * 1.4)], fill=_pick(rng, pal, 0.0, 0.5))
    draw.ellipse([cx - s // 7, int(s * 0.25), cx + s // 7, int(s * 0.65)], fill=_pick(rng, pal, 0.6, 1.0))
    draw.chord(
        [cx - s // 6, int(s * 0.2), cx + s // 6, int(s * 0.5)], 180, 360, fill=_pick(rng, pal, 0.0, 0.3)
    )
    return "a portrait of a person"


def _harbour(draw, s, rng, pal) -> str:
    sea = int(s * rng.uniform(0.45, 0.6))
    draw.rectangle([0, 0, s, sea], fill=_pick(rng, pal, 0.6, 1.0))
    draw.rectangle([0, sea, s, s], fill=_pick(rng, pal, 0.0, 0.5))
    for _ in range(int(rng.integers(2, 5))):
        x, y = int(s * rng.uniform(0.05, 0.8)), int(s * rng.uniform(0.6, 0.9))
        w = int(s * rng.uniform(0.12, 0.22))
        draw.polygon(
            [(x, y), (x + w, y), (x + w * 4 // 5, y + s // 16), (x + w // 5, y + s // 16)],
            fill=_pick(rng, pal, 0.0, 0.4),
        )
        draw.polygon([(x + w // 2, y - s // 5), (x + w // 2, y), (x + w, y)], fill=_pick(rng, pal, 0.7, 1.0))
    return "a harbour with sailing boats"


def _village(draw, s, rng, pal) -> str:
    ground = int(s * rng.uniform(0.55, 0.7))
    draw.rectangle([0, 0, s, ground], fill=_pick(rng, pal, 0.4, 1.0))
    draw.rectangle([0, ground, s, s], fill=_pick(rng, pal, 0.0, 0.5))
    x = int(s * rng.uniform(0.0, 0.1))
    while x < s:
        w, h = int(s * rng.uniform(0.12, 0.2)), int(s * rng.uniform(0.12, 0.25))
        draw.rectangle([x, ground - h, x + w, ground], fill=_pick(rng, pal, 0.3, 1.0))
        draw.polygon(
            [(x - 4, ground - h), (x + w + 4, ground - h), (x + w // 2, ground - h - w // 2)],
            fill=_pick(rng, pal, 0.0, 0.4),
        )
        x += w + int(s * rng.uniform(0.02, 0.1))
    return "a village street with houses"


SUBJECTS = (_landscape, _still_life, _portrait, _harbour, _village)


def compose(size_px: int, rng: np.random.Generator, palette: tuple[RGB, ...]) -> tuple[Image.Image, str]:
    subject = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    image = Image.new("RGB", (size_px, size_px), palette[len(palette) // 2])
    caption = subject(ImageDraw.Draw(image), size_px, rng, palette)
    if rng.random() < 0.5:  # mirror half of them: more compositions from the same subjects
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image, caption


# -- renderers: how each style puts paint down ---------------------------------------------------


def _render_swirl(scene: Image.Image, rng: np.random.Generator, style: Style) -> Image.Image:
    s = scene.width
    ref = np.asarray(scene.filter(ImageFilter.GaussianBlur(s / 96)), dtype=np.float64)
    canvas = scene.filter(ImageFilter.GaussianBlur(s / 48))
    draw = ImageDraw.Draw(canvas)
    width = max(2, s // 90)
    length = max(4, s // 22)
    phase = rng.uniform(0, 2 * math.pi, size=2)
    n_strokes = int((s / width) ** 2 * 0.9)
    xs, ys = rng.uniform(0, s, n_strokes), rng.uniform(0, s, n_strokes)
    palette = np.array(style.palette, dtype=np.float64)
    for x, y in zip(xs, ys, strict=True):
        colour = ref[int(y), int(x)] + rng.normal(0, 18, 3)
        # Snap halfway to the nearest palette colour: strokes stay in the artist's pure colours.
        nearest = palette[np.argmin(((palette - colour) ** 2).sum(axis=1))]
        colour = np.clip(0.5 * colour + 0.5 * nearest, 0, 255).astype(int)
        points, px, py = [], x, y
        for _ in range(4):
            points.append((px, py))
            angle = math.sin(px / s * 6 + phase[0]) * 2 + math.cos(py / s * 6 + phase[1]) * 2
            px += math.cos(angle) * length / 3
            py += math.sin(angle) * length / 3
        dark = tuple(int(c * 0.55) for c in colour)
        draw.line(points, fill=dark, width=width + 2, joint="curve")
        draw.line(points, fill=tuple(colour), width=width, joint="curve")
    return canvas


def _render_wash(scene: Image.Image, rng: np.random.Generator, style: Style) -> Image.Image:
    s = scene.width
    canvas = np.asarray(scene.filter(ImageFilter.GaussianBlur(s / 80)), dtype=np.float64)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    for _ in range(int(rng.integers(10, 18))):
        cx, cy = rng.uniform(0, s, 2)
        rx, ry = rng.uniform(0.1, 0.35, 2) * s
        weight = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))[..., None] * rng.uniform(0.08, 0.2)
        colour = np.array(style.palette[int(rng.integers(len(style.palette)))], dtype=np.float64)
        canvas = canvas * (1 - weight) + colour * weight
    paper = np.array([246.0, 240.0, 228.0])
    canvas = 0.75 * canvas + 0.25 * paper  # thin, transparent paint: the paper shows through
    grain = rng.normal(0, 1, (s // 2 + 1, s // 2 + 1))
    grain = np.kron(grain, np.ones((2, 2)))[:s, :s, None] * 2.5
    return Image.fromarray(np.clip(canvas + grain, 0, 255).astype(np.uint8))


STYLES: dict[str, Style] = {
    "swirl": Style(
        "swirl",
        (
            (16, 30, 92),
            (28, 62, 170),
            (40, 110, 210),
            (30, 150, 110),
            (235, 120, 20),
            (250, 200, 30),
            (255, 235, 120),
        ),
        _render_swirl,
    ),
    "wash": Style(
        "wash",
        (
            (110, 118, 124),
            (150, 160, 150),
            (178, 160, 168),
            (196, 186, 170),
            (205, 212, 218),
            (225, 218, 205),
        ),
        _render_wash,
    ),
}


def paint(style: str, seed: int, size_px: int = 512) -> tuple[Image.Image, str]:
    """One painting in `style` and its subject caption; the same seed gives the same picture."""
    if style not in STYLES:
        raise OeuvreError(
            f"--style {style!r}: unknown synthetic style (expected one of: {', '.join(STYLES)})"
        )
    chosen = STYLES[style]
    rng = np.random.default_rng([seed, sum(style.encode())])
    scene, caption = compose(size_px, rng, chosen.palette)
    return chosen.render(scene, rng, chosen), caption


def paint_artist(out_dir: str | Path, style: str, n: int, seed: int, size_px: int = 512) -> list[Path]:
    """Write n paintings `<style>-NNN.png` (and `<style>-NNN.txt` subject captions) into out_dir."""
    if n < 1:
        raise OeuvreError(f"--n {n}: expected at least 1 painting")
    if size_px < 32:
        raise OeuvreError(f"--size {size_px}: expected at least 32 px")
    out = Path(out_dir)
    paths = []
    for i in range(n):
        image, caption = paint(style, seed * 100_003 + i, size_px)
        path = out / f"{style}-{i:03d}.png"
        buffer = _png_bytes(image)
        atomic_write_bytes(path, buffer)
        atomic_write_text(path.with_suffix(".txt"), caption + "\n")
        paths.append(path)
    return paths


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def style_statistics(image: Image.Image) -> dict[str, float]:
    """Mean HSV saturation (0..1) and mean absolute Laplacian of grey (texture): what tells styles apart."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float64)
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    lap = np.abs(4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
    return {"saturation": float(hsv[..., 1].mean() / 255.0), "texture": float(lap.mean())}
