"""Copy check: is an output too close to one training work? Copy-sensitive, unlike the style descriptor.

Two measures, both on the picture's layout rather than its style:
- the 64-bit DCT pHash (grey 32x32, 8x8 lowest frequencies against their median) and its Hamming distance;
- normalised cross-correlation (NCC) of grey 48x48 thumbnails, over crops of either image at a few scales
  and positions, so a crop or a zoom of a training work still matches.
An output is flagged when the best NCC is high, or when the pHash is close and the NCC agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from oeuvre.phash import hamming, phash

_THUMB = 48
CROP_SCALES = (1.0, 0.75, 0.5)
NCC_COPY = 0.95  # flagged at or above this NCC alone
PHASH_NEAR, NCC_WITH_PHASH = 10, 0.8  # or with a pHash this close and an NCC this high


def _thumb(image: Image.Image) -> np.ndarray:
    grey = np.asarray(image.convert("L").resize((_THUMB, _THUMB), Image.Resampling.BILINEAR), np.float32)
    grey = grey - grey.mean()
    return grey / max(1e-6, float(np.linalg.norm(grey)))


def _crops(image: Image.Image) -> list[np.ndarray]:
    """Thumbnails of the image and of its crops at CROP_SCALES, at the corners and centre."""
    thumbs = []
    w, h = image.size
    for scale in CROP_SCALES:
        cw, ch = round(w * scale), round(h * scale)
        positions = {(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch), ((w - cw) // 2, (h - ch) // 2)}
        thumbs += [_thumb(image.crop((x, y, x + cw, y + ch))) for x, y in sorted(positions)]
    return thumbs


@dataclass(frozen=True)
class CopyFeatures:
    """What the copy check keeps of one image: its pHash, its whole thumbnail and its crops' thumbnails."""

    phash: int
    whole: np.ndarray
    crops: np.ndarray  # [n_crops, THUMB*THUMB]


def copy_features(image: Image.Image) -> CopyFeatures:
    crops = _crops(image)
    return CopyFeatures(phash(image), crops[0].ravel(), np.stack([c.ravel() for c in crops]))


@dataclass(frozen=True)
class CopyMatch:
    index: int  # into the training works
    phash_distance: int
    ncc: float
    flagged: bool


def compare(output: CopyFeatures, work: CopyFeatures) -> tuple[int, float]:
    """(pHash distance, best NCC of the work's crops vs the output and the output's crops vs the work)."""
    ncc = max(float(np.max(work.crops @ output.whole)), float(np.max(output.crops @ work.whole)))
    return hamming(output.phash, work.phash), ncc


def is_copy(phash_distance: int, ncc: float) -> bool:
    return ncc >= NCC_COPY or (phash_distance <= PHASH_NEAR and ncc >= NCC_WITH_PHASH)


def nearest_copy(output: CopyFeatures, works: Sequence[CopyFeatures]) -> CopyMatch:
    """The training work most like the output by NCC (pHash breaks ties), and whether it is a copy."""
    if not works:
        raise ValueError("copy check: no training works to compare with")
    scored = [(compare(output, work), i) for i, work in enumerate(works)]
    (distance, ncc), index = max(scored, key=lambda s: (s[0][1], -s[0][0]))
    return CopyMatch(index, distance, ncc, is_copy(distance, ncc))
