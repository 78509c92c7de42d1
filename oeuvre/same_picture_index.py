"""Which works could a query be a copy of? The fast pre-filter in front of `oeuvre.same_picture.verify`.

Every work lends up to PREFILTER_PER_WORK of its descriptors, projected to PREFILTER_DIMS with PCA, to
one pool. Each query descriptor (plain and mirrored) looks up its nearest pool descriptors, exactly for a
small pool and with an OpenCV FLANN kd-tree for a large one, and votes for the works they belong to. The
copied work collects many votes (its keypoints are the query's), another picture a handful; only the
few with the most votes are verified geometrically. Search is about n log n, not n².
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from oeuvre.same_picture import Match, PictureFeatures, as_float, verify

PREFILTER_PER_WORK = 200
PREFILTER_DIMS = 32
CANDIDATES = 4  # works verified per query
EXACT_BELOW = 40_000  # pool rows under which nearest neighbours are exact (numpy), else FLANN
FLANN_CHECKS = 48
GROUP_MIN_VOTES = 4  # curation's grouping verifies only candidates with this many votes


class PictureIndex:
    """The works' features and the voting pool over them."""

    def __init__(self, works: Sequence[PictureFeatures]):
        self.works = list(works)
        parts = [_subsample(w.plain.descriptors) for w in self.works]
        counts = np.array([len(p) for p in parts], np.int64)
        self.owner = np.repeat(np.arange(len(parts)), counts)
        pool = as_float(np.concatenate(parts)) if len(self.owner) else np.zeros((0, 128), np.float32)
        self.mean, self.basis = _pca(pool, PREFILTER_DIMS)
        self.pool = np.ascontiguousarray(self._project(pool))
        self.flann = None
        if len(self.pool) >= EXACT_BELOW:
            cv2.setRNGSeed(0)
            self.flann = cv2.flann_Index(self.pool, {"algorithm": 1, "trees": 4})

    def __len__(self) -> int:
        return len(self.works)

    def _project(self, descriptors: np.ndarray) -> np.ndarray:
        return ((descriptors - self.mean) @ self.basis).astype(np.float32)

    def _nearest(self, queries: np.ndarray, k: int) -> np.ndarray:
        """[n, k] pool rows nearest each (projected) query row."""
        k = min(k, len(self.pool))
        if self.flann is not None:
            rows, _ = self.flann.knnSearch(queries, k, params={"checks": FLANN_CHECKS})
            return rows.astype(np.int64)
        distances = (queries * queries).sum(1)[:, None] - 2 * queries @ self.pool.T
        distances += (self.pool * self.pool).sum(1)[None, :]
        nearest = np.argpartition(distances, k - 1, axis=1)[:, :k] if k < len(self.pool) else None
        if nearest is None:
            nearest = np.tile(np.arange(len(self.pool)), (len(queries), 1))
        order = np.argsort(np.take_along_axis(distances, nearest, axis=1), axis=1)
        return np.take_along_axis(nearest, order, axis=1)

    def votes(self, query: PictureFeatures) -> np.ndarray:
        """Per work, how many query descriptors (plain or mirrored) have it among their two nearest."""
        votes = np.zeros(len(self.works), np.float64)
        if len(self.pool) == 0:
            return votes
        for part in (query.plain, query.mirrored):
            if part is None or len(part.descriptors) == 0:
                continue
            rows = self._nearest(self._project(as_float(part.descriptors)), 2)
            owners = self.owner[rows]
            np.add.at(votes, owners[:, 0], 1.0)
            if owners.shape[1] > 1:
                second = owners[:, 1] != owners[:, 0]
                np.add.at(votes, owners[second, 1], 0.5)
        return votes

    def candidates(
        self,
        query: PictureFeatures,
        limit: int = CANDIDATES,
        exclude: int | None = None,
        min_votes: float = 0,
    ) -> list[int]:
        """Indices of the works with the most votes, best first (all works when there are few)."""
        votes = self.votes(query)
        if exclude is not None:
            votes[exclude] = -1
        order = np.argsort(-votes, kind="stable")
        return [int(i) for i in order[:limit] if votes[i] >= max(0, min_votes)]

    def search(
        self,
        query: PictureFeatures,
        limit: int = CANDIDATES,
        exclude: int | None = None,
        min_votes: float = 0,
    ) -> list[tuple[int, Match]]:
        """(work index, match) for the pre-filter's candidates, most inliers first."""
        chosen = self.candidates(query, limit, exclude, min_votes)
        found = [(i, verify(query, self.works[i])) for i in chosen]
        return sorted(found, key=lambda f: (-f[1].inliers, f[0]))


def _subsample(descriptors: np.ndarray) -> np.ndarray:
    if len(descriptors) <= PREFILTER_PER_WORK:
        return descriptors
    rows = np.linspace(0, len(descriptors) - 1, PREFILTER_PER_WORK).round().astype(int)
    return descriptors[rows]


def _pca(pool: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and [128, dims] basis of the pool's main directions (from an evenly spaced sample of rows)."""
    if len(pool) < dims * 2:
        return np.zeros(128, np.float32), np.eye(128, dtype=np.float32)
    sample = pool[np.linspace(0, len(pool) - 1, min(len(pool), 20_000)).round().astype(int)]
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dims].T.astype(np.float32)


def same_picture_links(
    features: Sequence[PictureFeatures], limit: int = CANDIDATES
) -> list[tuple[int, int, Match]]:
    """(i, j, match of i as the query against j) for every pair judged the same picture, i != j, each
    unordered pair once. Each image is a query against all the others through the pre-filter."""
    index = PictureIndex(features)
    links, seen = [], set()
    for i, query in enumerate(features):
        # Grouping skips candidates with hardly any votes: a crop shares dozens of keypoints with its work.
        for j, match in index.search(query, limit, exclude=i, min_votes=GROUP_MIN_VOTES):
            pair = (min(i, j), max(i, j))
            if match.same_picture and pair not in seen:
                seen.add(pair)
                links.append((i, j, match))
    return links
