"""Turn a file's bytes into a clean RGB image, or a rejection with a reason a person can read.

Decodes fully (so truncation shows), refuses decompression bombs from the header alone, applies EXIF
orientation, takes the first frame of animations, and converts every mode (CMYK, palette, LA, RGBA
composited on white, 16-bit and float grey) to 8-bit RGB.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False


class Rejected(Exception):
    """An input that cannot be used; `code` groups reasons for counts, the message explains."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Decoded:
    image: Image.Image  # RGB, orientation applied
    format: str  # the container's format, e.g. JPEG, PNG
    original_mode: str
    frames: int


def decode_image(data: bytes, max_pixels: int) -> Decoded:
    """Decode `data` to RGB or raise `Rejected`."""
    if not data:
        raise Rejected("empty", "empty file (0 bytes)")
    # Pillow's own bomb check warns or raises at its global cap; we check `max_pixels` ourselves instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous_cap = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return _decode(data, max_pixels)
        finally:
            Image.MAX_IMAGE_PIXELS = previous_cap


def _decode(data: bytes, max_pixels: int) -> Decoded:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        head = data[:256].lstrip().lower()
        what = "HTML" if head.startswith((b"<!doctype html", b"<html")) else "not a recognised image format"
        raise Rejected("not_an_image", f"not an image: the content is {what}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
        raise Rejected(_failure_code(exc), f"cannot open image: {exc or type(exc).__name__}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise Rejected(
            "too_many_pixels",
            f"decompression-bomb guard: {width}×{height} = {width * height} pixels > "
            f"max_image_pixels {max_pixels}",
        )
    fmt = image.format or "unknown"
    frames = getattr(image, "n_frames", 1)
    try:
        image.seek(0)
        image.load()
    except Exception as exc:  # noqa: BLE001
        raise Rejected(
            _failure_code(exc), f"cannot decode {fmt} image: {exc or type(exc).__name__}"
        ) from None
    original_mode = image.mode
    with contextlib.suppress(Exception):  # a broken EXIF block should not lose the picture
        image = ImageOps.exif_transpose(image)
    return Decoded(image=to_rgb(image), format=fmt, original_mode=original_mode, frames=frames)


def _failure_code(exc: Exception) -> str:
    return "truncated" if "truncated" in str(exc).lower() or isinstance(exc, EOFError) else "corrupt"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode != "F" and values.max(initial=0) > 255 else 255.0
        if mode == "F" and values.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
