"""Copy check: is an output the same picture as one training work, altered (cropped, rescaled, recoloured,
re-encoded, mirrored, slightly turned, blurred or lightly restyled)? Copy-sensitive, unlike the style
descriptor: another work in the same style is not a copy.

The matcher is `oeuvre.same_picture` (local features verified by one geometric transform), the same one
curation uses to group a work with its crops and details. Each output gets a copy score against its
nearest training work: the inlier count, the matched region in the work, and whether that is a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from oeuvre.same_picture import COPY_INLIERS, Match, PictureFeatures, picture_features
from oeuvre.same_picture_index import PictureIndex


def copy_features(image: Image.Image) -> PictureFeatures:
    """What the copy check keeps of an output: its features and its mirror image's."""
    return picture_features(image, mirrored=True)


def work_features(image: Image.Image) -> PictureFeatures:
    """What it keeps of a training work (works are never mirrored: the query is)."""
    return picture_features(image, mirrored=False)


@dataclass(frozen=True)
class CopyMatch:
    index: int  # into the training works
    match: Match

    @property
    def flagged(self) -> bool:
        return self.match.same_picture

    @property
    def score(self) -> int:
        """The copy score: keypoints agreeing on one transform onto the work (COPY_INLIERS flags)."""
        return self.match.inliers

    def to_json(self) -> dict:
        return {
            "score": self.score,
            "threshold": COPY_INLIERS,
            "flagged": self.flagged,
            **self.match.to_json(),
        }


def nearest_copy(output: PictureFeatures, works: Sequence[PictureFeatures] | PictureIndex) -> CopyMatch:
    """The training work the output matches best (most inliers among the pre-filter's candidates)."""
    index = works if isinstance(works, PictureIndex) else PictureIndex(works)
    if len(index) == 0:
        raise ValueError("copy check: no training works to compare with")
    found = index.search(output)
    return CopyMatch(*found[0])
