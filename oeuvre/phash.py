"""Perceptual hashes: a 64-bit DCT pHash per image, plus hashes of centred crops so crops match too.

The pHash is the classic one: grey, 32×32 Lanczos, 2-D DCT-II, the 8×8 lowest frequencies compared with
their median. It survives re-encoding, resizing and colour shifts; a crop moves the content, so each
image also carries the hashes of its centred 90% and 80% crops ("views"): a crop of a work lands near
one of the work's views.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIZE = 8
_SAMPLE = 32
_k = np.arange(_SAMPLE)
# Orthogonal DCT-II basis as a matrix: D @ x is the DCT of x along the first axis.
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:, None] / (2 * _SAMPLE))
_WEIGHTS = np.left_shift(np.uint64(1), np.arange(63, -1, -1, dtype=np.uint64))
CROP_VIEWS = (0.9, 0.8)


def phash(image: Image.Image) -> int:
    """The 64-bit DCT pHash of `image` as an int (most significant bit = lowest frequency)."""
    grey = image.convert("L").resize((_SAMPLE, _SAMPLE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = (low > np.median(low)).astype(np.uint64)
    return int(np.sum(bits * _WEIGHTS, dtype=np.uint64))


def view_hashes(image: Image.Image) -> list[int]:
    """pHashes of the centred crops in CROP_VIEWS, so a cropped copy of this image matches one of them."""
    width, height = image.size
    views = []
    for keep in CROP_VIEWS:
        dx, dy = round(width * (1 - keep) / 2), round(height * (1 - keep) / 2)
        views.append(phash(image.crop((dx, dy, width - dx, height - dy))))
    return views


def to_hex(value: int) -> str:
    return f"{value:016x}"


def from_hex(text: str) -> int:
    return int(text, 16)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
