"""A small built-in set of content 'photos' (drawn, so the project needs no image files): the demo and
the evaluation restyle these when the user gives none."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from oeuvre.atomic import atomic_write_png


def _sky_and_ground(size: int, sky: tuple, ground: tuple) -> Image.Image:
    image = Image.new("RGB", (size, size), sky)
    draw = ImageDraw.Draw(image)
    for y in range(size // 2):  # a sky that lightens towards the horizon
        t = y / (size / 2)
        draw.line([(0, y), (size, y)], fill=tuple(int(c + (255 - c) * 0.5 * t) for c in sky))
    draw.rectangle([0, size * 3 // 5, size, size], fill=ground)
    return image


def house(size: int) -> Image.Image:
    image = _sky_and_ground(size, (90, 150, 220), (70, 130, 60))
    draw = ImageDraw.Draw(image)
    s = size / 100
    draw.rectangle([30 * s, 45 * s, 70 * s, 75 * s], fill=(200, 180, 150))
    draw.polygon([(25 * s, 45 * s), (50 * s, 25 * s), (75 * s, 45 * s)], fill=(150, 60, 50))
    draw.rectangle([45 * s, 60 * s, 55 * s, 75 * s], fill=(90, 60, 40))
    draw.ellipse([78 * s, 8 * s, 92 * s, 22 * s], fill=(250, 230, 120))
    return image.filter(ImageFilter.GaussianBlur(size / 200))


def harbour(size: int) -> Image.Image:
    image = _sky_and_ground(size, (120, 160, 200), (40, 80, 120))
    draw = ImageDraw.Draw(image)
    s = size / 100
    for x in (15, 45, 70):
        draw.polygon(
            [(x * s, 70 * s), ((x + 20) * s, 70 * s), ((x + 16) * s, 78 * s), ((x + 4) * s, 78 * s)],
            fill=(120, 70, 40),
        )
        draw.line([((x + 10) * s, 70 * s), ((x + 10) * s, 45 * s)], fill=(60, 40, 30), width=max(1, int(s)))
        draw.polygon(
            [((x + 11) * s, 47 * s), ((x + 11) * s, 67 * s), ((x + 19) * s, 67 * s)], fill=(240, 240, 230)
        )
    return image.filter(ImageFilter.GaussianBlur(size / 200))


def portrait(size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (180, 170, 150))
    draw = ImageDraw.Draw(image)
    s = size / 100
    draw.ellipse([20 * s, 70 * s, 80 * s, 130 * s], fill=(60, 70, 110))  # shoulders
    draw.ellipse([35 * s, 25 * s, 65 * s, 65 * s], fill=(225, 190, 160))  # face
    draw.pieslice([32 * s, 18 * s, 68 * s, 50 * s], 180, 360, fill=(80, 50, 30))  # hair
    for x in (43, 55):
        draw.ellipse([x * s, 40 * s, (x + 3) * s, 43 * s], fill=(40, 30, 30))
    return image.filter(ImageFilter.GaussianBlur(size / 200))


SCENES = {"house": house, "harbour": harbour, "portrait": portrait}


def write_builtin_content(out_dir: str | Path, size_px: int = 256) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for name, draw in SCENES.items():
        written.append(atomic_write_png(out_dir / f"{name}.png", draw(size_px)))
    return written


def add_arguments(parser) -> None:
    parser.add_argument("out", help="folder to write the PNGs into")
    parser.add_argument("--size", type=int, default=256, help="side of each square scene, px")


def run(args) -> int:
    print("\n".join(str(p) for p in write_builtin_content(args.out, args.size)))
    return 0
