"""Is this the same picture? The one matcher behind the copy check (infer evaluate) and curation's grouping.

Local features with geometric verification, the way image-copy detection is done with OpenCV: RootSIFT
keypoints of the grey image at a fixed working size, matched with Lowe's ratio test, then a similarity
transform (rotation, scale, shift) fitted with RANSAC. The inliers that agree on one transform are the
score: crops, rescales, re-encoding, colour and contrast changes, small rotations and light blur keep
them; another picture of the same style does not produce many that agree. A horizontally mirrored copy
is caught by also matching the query's mirror image. The transform gives the matched region: where the
query sits in the work.

The expensive check runs only on candidates: `oeuvre.same_picture_index` votes with every query
descriptor's nearest neighbours among all works' descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

WORKING_SIDE_PX = 512  # longer side the features are found at (smaller images are not enlarged ...)
MIN_SIDE_PX = 256  # ... unless smaller than this
MAX_KEYPOINTS = 400
COARSE_SIDE_PX, COARSE_KEYPOINTS = 160, 150
RATIO = 0.8  # Lowe's ratio test
COPY_INLIERS = 12  # at least this many inliers on one transform: the same picture
MIN_SCALE, MAX_SCALE = 0.1, 10.0  # a plausible rescale between query and work
# A smooth picture with fewer keypoints than this is compared whole: normalised cross-correlation of grey
# THUMB_PX thumbnails at FLAT_NCC or above is a copy (resized or re-encoded; a crop of it is not caught).
FEW_KEYPOINTS, THUMB_PX, FLAT_NCC = 24, 32, 0.97
NEAR_COMPLETE = 0.75  # both cover this much of each other: a duplicate (a 5 % crop per side), not a detail
VERSION = "rootsift512-v3"  # cached features carry it; a changed recipe recomputes them

_detectors: dict[float, cv2.SIFT] = {}
LOW_CONTRAST = 0.01  # SIFT's contrast threshold for smooth pictures (default 0.04 finds few keypoints)


def _detector(contrast: float):
    if contrast not in _detectors:
        _detectors[contrast] = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS + 100, contrastThreshold=contrast)
    return _detectors[contrast]


@dataclass(frozen=True)
class Features:
    """Keypoints (x, y in working px) and RootSIFT descriptors (uint8) of one orientation of an image."""

    width: int  # working size the points refer to
    height: int
    points: np.ndarray  # [n, 2] float32
    descriptors: np.ndarray  # [n, 128] uint8
    thumb: np.ndarray  # [THUMB_PX²] float32, zero mean, unit norm: for pictures with too few keypoints


@dataclass(frozen=True)
class PictureFeatures:
    """An image's features, plus its mirror image's when it will be used as a query."""

    plain: Features
    mirrored: Features | None = None


def _working_grey(image: Image.Image) -> np.ndarray:
    """Grey, the longer side brought down to WORKING_SIDE_PX, or up to MIN_SIDE_PX for a small picture
    (a 64 px image has no keypoints at its own size)."""
    grey = image.convert("L")
    longer = max(grey.size)
    scale = min(1.0, WORKING_SIDE_PX / longer) if longer >= MIN_SIDE_PX else MIN_SIDE_PX / longer
    if scale != 1.0:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        resample = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BILINEAR
        grey = grey.resize(size, resample, reducing_gap=2.0 if scale < 1 else None)
    return np.asarray(grey, dtype=np.uint8)


def _keypoints(grey: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints (x, y) and descriptors of `grey`, at most `limit` of the strongest."""
    keypoints, descriptors = _detector(0.04).detectAndCompute(grey, None)
    if len(keypoints) < limit // 2:  # a smooth picture: look for fainter keypoints
        keypoints, descriptors = _detector(LOW_CONTRAST).detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    order = np.argsort([-k.response for k in keypoints], kind="stable")[:limit]
    return np.array([keypoints[i].pt for i in order], np.float32), descriptors[order]


def _features(grey: np.ndarray) -> Features:
    """Fine keypoints at the working size, plus coarse ones from a small copy: a restyle repaints the
    fine texture, but the layout's large shapes keep their coarse keypoints."""
    points, descriptors = _keypoints(grey, MAX_KEYPOINTS)
    h, w = grey.shape
    factor = COARSE_SIDE_PX / max(w, h)
    if factor < 0.75:
        small = cv2.resize(
            grey, (max(8, round(w * factor)), max(8, round(h * factor))), interpolation=cv2.INTER_AREA
        )
        coarse_points, coarse_descriptors = _keypoints(small, COARSE_KEYPOINTS)
        points = np.concatenate([points, coarse_points / factor]).astype(np.float32)
        descriptors = np.concatenate([descriptors, coarse_descriptors])
    thumb = cv2.resize(grey, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb -= thumb.mean()
    thumb /= max(1e-6, float(np.linalg.norm(thumb)))
    if len(points) == 0:
        return Features(w, h, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), thumb)
    # RootSIFT (Arandjelović & Zisserman 2012): L1-normalise, square root; Euclidean distance then
    # compares the descriptors as the Hellinger kernel does, which matches better than raw SIFT.
    root = np.sqrt(descriptors / np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-7))
    return Features(w, h, points, np.round(root * 255).astype(np.uint8), thumb)


def picture_features(image: Image.Image, mirrored: bool = True) -> PictureFeatures:
    """Features of `image`, and of its mirror image when it is to be a query (`mirrored`)."""
    grey = _working_grey(image)
    return PictureFeatures(
        _features(grey), _features(np.ascontiguousarray(grey[:, ::-1])) if mirrored else None
    )


def as_float(descriptors: np.ndarray) -> np.ndarray:
    return descriptors.astype(np.float32) / 255.0


@dataclass(frozen=True)
class Match:
    """How a query (an output, or one curated image) matches one work."""

    inliers: int  # keypoint pairs agreeing on one similarity transform: the copy score
    matches: int  # pairs passing the ratio test
    mirrored: bool
    scale: float  # query px -> work px, both at working size
    rotation_deg: float
    region: tuple[
        float, float, float, float
    ]  # the query's footprint in the work, as fractions (x0, y0, x1, y1)
    work_coverage: float  # fraction of the work's area the query shows
    query_coverage: float  # fraction of the query's area taken from the work

    @property
    def same_picture(self) -> bool:
        return self.inliers >= COPY_INLIERS and MIN_SCALE <= self.scale <= MAX_SCALE

    @property
    def near_complete(self) -> bool:
        """Both cover nearly all of each other: a duplicate (resized, re-encoded), not a detail."""
        return self.same_picture and min(self.work_coverage, self.query_coverage) >= NEAR_COMPLETE

    def to_json(self) -> dict:
        return {
            "inliers": self.inliers,
            "matches": self.matches,
            "mirrored": self.mirrored,
            "scale": round(self.scale, 3),
            "rotation_deg": round(self.rotation_deg, 1),
            "region": [round(v, 4) for v in self.region],
            "work_coverage": round(self.work_coverage, 3),
            "query_coverage": round(self.query_coverage, 3),
            "same_picture": self.same_picture,
        }


NO_MATCH = Match(0, 0, False, 1.0, 0.0, (0.0, 0.0, 0.0, 0.0), 0.0, 0.0)


def _ratio_pairs(query: np.ndarray, work: np.ndarray) -> np.ndarray:
    """[k, 2] indices (query row, work row) of nearest neighbours that pass the ratio test."""
    if len(query) == 0 or len(work) < 2:
        return np.zeros((0, 2), np.int64)
    q, w = as_float(query), as_float(work)
    distances = (q * q).sum(1)[:, None] - 2 * q @ w.T + (w * w).sum(1)[None, :]
    nearest = np.argpartition(distances, 1, axis=1)[:, :2]
    d = np.take_along_axis(distances, nearest, axis=1)
    order = np.argsort(d, axis=1)
    nearest, d = np.take_along_axis(nearest, order, axis=1), np.take_along_axis(d, order, axis=1)
    d = np.sqrt(np.maximum(d, 0))
    keep = d[:, 0] < RATIO * d[:, 1]
    return np.stack([np.flatnonzero(keep), nearest[keep, 0]], axis=1)


def _box_coverage(transform: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]):
    """The src rectangle mapped into dst: its bounding box in dst (fractions, clipped), and the fraction
    of dst's area it covers (the clipped box of the rotated footprint; rotations are small)."""
    w, h = src_size
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64)
    mapped = corners @ transform.T
    dw, dh = dst_size
    x0, y0 = np.clip(mapped.min(0), 0, [dw, dh])
    x1, y1 = np.clip(mapped.max(0), 0, [dw, dh])
    region = (x0 / dw, y0 / dh, x1 / dw, y1 / dh)
    return region, float((x1 - x0) * (y1 - y0) / (dw * dh))


def _invert(transform: np.ndarray) -> np.ndarray:
    full = np.vstack([transform, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def _verify_one(query: Features, work: Features, mirrored: bool) -> Match:
    if min(len(query.points), len(work.points)) < FEW_KEYPOINTS:
        if float(query.thumb @ work.thumb) >= FLAT_NCC:  # the whole picture, resized or re-encoded
            scale = work.width / query.width
            return Match(COPY_INLIERS, 0, mirrored, scale, 0.0, (0.0, 0.0, 1.0, 1.0), 1.0, 1.0)
        if min(len(query.points), len(work.points)) < 3:
            return NO_MATCH
    pairs = _ratio_pairs(query.descriptors, work.descriptors)
    if len(pairs) < 3:
        return NO_MATCH
    src, dst = query.points[pairs[:, 0]], work.points[pairs[:, 1]]
    cv2.setRNGSeed(0)  # RANSAC draws samples; the same inputs give the same score
    threshold = max(3.0, 0.01 * max(work.width, work.height))
    transform, inlier_mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=2000, confidence=0.995
    )
    if transform is None:
        return NO_MATCH
    inliers = int(inlier_mask.sum())
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    rotation = float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))
    if not MIN_SCALE / 10 < scale < MAX_SCALE * 10:  # degenerate: all pairs on one point
        return NO_MATCH
    region, work_coverage = _box_coverage(transform, (query.width, query.height), (work.width, work.height))
    _, query_coverage = _box_coverage(
        _invert(transform), (work.width, work.height), (query.width, query.height)
    )
    return Match(inliers, len(pairs), mirrored, scale, rotation, region, work_coverage, query_coverage)


def verify(query: PictureFeatures, work: PictureFeatures) -> Match:
    """The query against one work, plain and mirrored (when the query has its mirror): the better match."""
    best = _verify_one(query.plain, work.plain, False)
    if query.mirrored is not None:
        flipped = _verify_one(query.mirrored, work.plain, True)
        if (flipped.same_picture, flipped.inliers) > (best.same_picture, best.inliers):
            best = flipped
    return best


def to_arrays(features: PictureFeatures, prefix: str = "") -> dict[str, np.ndarray]:
    """Flat arrays for safetensors/npz; `from_arrays` reads them back."""
    out = {}
    for name, part in (("plain", features.plain), ("mirrored", features.mirrored)):
        if part is None:
            continue
        out[f"{prefix}{name}.size"] = np.array([part.width, part.height], np.int32)
        out[f"{prefix}{name}.points"] = np.ascontiguousarray(part.points)
        out[f"{prefix}{name}.descriptors"] = np.ascontiguousarray(part.descriptors)
        out[f"{prefix}{name}.thumb"] = np.ascontiguousarray(part.thumb)
    return out


def from_arrays(arrays: dict[str, np.ndarray], prefix: str = "") -> PictureFeatures:
    def part(name: str) -> Features | None:
        if f"{prefix}{name}.size" not in arrays:
            return None
        width, height = (int(v) for v in arrays[f"{prefix}{name}.size"])
        points, descriptors = arrays[f"{prefix}{name}.points"], arrays[f"{prefix}{name}.descriptors"]
        return Features(width, height, points, descriptors, arrays[f"{prefix}{name}.thumb"])

    return PictureFeatures(part("plain"), part("mirrored"))
