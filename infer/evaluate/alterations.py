"""Altered copies of a work, for the copy-detection benchmark and the tests: each alteration the copy check
must see through, drawn at random within the range the check promises to hold up under."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


def crop(image: Image.Image, rng: np.random.Generator, min_area: float = 0.4) -> Image.Image:
    """A crop keeping `min_area`..90 % of the area, at any position, with its own aspect ratio."""
    w, h = image.size
    area = rng.uniform(min_area, 0.9)
    aspect = np.exp(rng.uniform(np.log(0.6), np.log(1.6)))  # the crop's w/h relative to the image's
    cw = min(1.0, np.sqrt(area * aspect))
    ch = min(1.0, area / cw)
    pw, ph = round(w * cw), round(h * ch)
    x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    return image.crop((x, y, x + pw, y + ph))


def rescale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = float(np.exp(rng.uniform(np.log(0.3), np.log(2.0))))
    size = (max(16, round(image.width * factor)), max(16, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, rng: np.random.Generator, quality: int | None = None) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality or int(rng.integers(40, 71)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Colour, contrast and brightness each changed by up to ±20 %, and the hue turned a little."""
    out = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
    out = ImageEnhance.Contrast(out).enhance(rng.choice([0.8, 1.2]) * rng.uniform(0.95, 1.0))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.85, 1.15))
    hsv = np.asarray(out.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-12, 13))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def flip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(image)


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.choice([-1, 1]) * rng.uniform(2.0, 5.0))
    return image.rotate(angle, Image.Resampling.BICUBIC, expand=False, fillcolor=(255, 255, 255))


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    radius = rng.uniform(0.8, 1.5) * max(image.size) / 512
    return image.filter(ImageFilter.GaussianBlur(radius))


def brushwork(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Procedural brush strokes (short oriented dabs of random tone), as a zero-mean texture [h, w, 3]."""
    w, h = size
    canvas = Image.new("RGB", (w, h), (128, 128, 128))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    length = max(4, round(0.03 * max(w, h)))
    for _ in range(int(w * h / length**2 * 3)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        tone = tuple(int(v) for v in rng.integers(60, 196, 3))
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=tone, width=max(1, length // 4))
    return np.asarray(canvas, np.float32) - 128.0


def restyle(image: Image.Image, rng: np.random.Generator, strength: float = 0.3) -> Image.Image:
    """A stand-in for img2img at low strength: the layout and its large shapes stay, the surface is
    repainted. Smoothed (details below about 1 % of the side go), procedural brush strokes laid over it
    in proportion to `strength`, palette shifted, plus grain."""
    w, h = image.size
    radius = max(1.0, 0.008 * max(w, h))
    base = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(radius)), np.float32)
    base = base + strength * brushwork((w, h), rng)
    base = base * rng.uniform(0.9, 1.1, 3) + rng.normal(0, 6, base.shape)
    return colour(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)), rng)


def mild(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The issue's example: about a 5 % crop on each side, 0.7× resize, JPEG quality 60."""
    w, h = image.size
    dx, dy = round(0.05 * w), round(0.05 * h)
    out = image.crop((dx, dy, w - dx, h - dy))
    out = out.resize((round(out.width * 0.7), round(out.height * 0.7)), Image.Resampling.BICUBIC)
    return jpeg(out, rng, quality=60)


def combined(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Several at once: crop to 50 %+, rescale, recolour, JPEG."""
    return jpeg(colour(rescale(crop(image, rng, 0.5), rng), rng), rng)


ALTERATIONS = {
    "mild (5% crop, 0.7x, JPEG 60)": mild,
    "crop to 40-90% area": crop,
    "rescale 0.3-2x": rescale,
    "JPEG q40-70": jpeg,
    "colour/contrast ±20%": colour,
    "horizontal flip": flip,
    "rotate 2-5°": rotate,
    "light blur": blur,
    "restyle (low strength, simulated)": restyle,
    "crop+rescale+colour+JPEG": combined,
}
