"""Near-duplicate search over 64-bit perceptual hashes, without comparing every pair.

Multi-index hashing: split each hash into `m` chunks of 64/m bits. If two hashes differ in at most
`t` bits, some chunk differs in at most t // m bits (pigeonhole), so it is enough to look up, per chunk,
every value within that radius, and check only those candidates in full. All of it is vectorised with
numpy (sorted chunk values and searchsorted), so 100k hashes take about a second.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from math import comb

import numpy as np

_CHUNKINGS = (1, 2, 4, 8)


def _masks(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit value with at most `radius` bits set: the XOR masks to reach a neighbour."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in combo) for combo in itertools.combinations(range(bits), r)]
    return np.array(masks, dtype=np.uint64)


def _choose_chunks(n: int, max_distance: int) -> int:
    """The chunk count with the least expected work: lookups per hash times candidates per lookup."""

    def cost(m: int) -> float:
        bits, radius = 64 // m, max_distance // m
        lookups = m * sum(comb(bits, r) for r in range(radius + 1))
        return lookups * (1 + n / 2.0**bits)

    return min(_CHUNKINGS, key=cost)


def near_duplicate_pairs(
    queries: np.ndarray, index: np.ndarray, max_distance: int, chunks: int | None = None
) -> np.ndarray:
    """All (i, j) with hamming(queries[i], index[j]) <= max_distance, as an (k, 2) int64 array.

    `queries` and `index` are uint64 arrays (they may be the same array; then i == j pairs come back
    too and callers drop them).
    """
    queries = np.asarray(queries, dtype=np.uint64)
    index = np.asarray(index, dtype=np.uint64)
    if len(queries) == 0 or len(index) == 0:
        return np.empty((0, 2), dtype=np.int64)
    m = chunks or _choose_chunks(len(index), max_distance)
    bits, radius = 64 // m, max_distance // m
    chunk_mask = np.uint64((1 << bits) - 1)
    found = []
    for c in range(m):
        shift = np.uint64(c * bits)
        index_values = (index >> shift) & chunk_mask
        order = np.argsort(index_values, kind="stable")
        sorted_values = index_values[order]
        query_values = (queries >> shift) & chunk_mask
        for mask in _masks(bits, radius):
            wanted = query_values ^ mask
            lo = np.searchsorted(sorted_values, wanted, side="left")
            hi = np.searchsorted(sorted_values, wanted, side="right")
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                continue
            qi = np.repeat(np.arange(len(queries)), counts)
            # Positions lo[q] .. hi[q]-1 for every query q, concatenated.
            starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
            ji = order[starts + np.arange(total)]
            close = np.bitwise_count(queries[qi] ^ index[ji]) <= max_distance
            found.append(np.stack([qi[close], ji[close]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def brute_force_pairs(queries: np.ndarray, index: np.ndarray, max_distance: int) -> np.ndarray:
    """The quadratic reference for tests: every pair compared."""
    queries = np.asarray(queries, dtype=np.uint64)
    index = np.asarray(index, dtype=np.uint64)
    distances = np.bitwise_count(queries[:, None] ^ index[None, :])
    return np.argwhere(distances <= max_distance).astype(np.int64)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_near_duplicates(
    hashes: Sequence[int], views: Sequence[Sequence[int]], max_distance: int
) -> list[list[int]]:
    """Indices grouped into works: connected components of "near-duplicate" links.

    Two images are linked when their full hashes are within `max_distance`, or one's full hash is
    within it of one of the other's crop views (it is a crop of the other). Groups come back sorted by
    their smallest index; every index is in exactly one group.
    """
    n = len(hashes)
    uf = UnionFind(n)
    full = np.array([h & 0xFFFFFFFFFFFFFFFF for h in hashes], dtype=np.uint64)
    owners = [i for i, vs in enumerate(views) for _ in vs]
    view_array = np.array([v for vs in views for v in vs], dtype=np.uint64)
    for i, j in near_duplicate_pairs(full, full, max_distance):
        if i != j:
            uf.union(int(i), int(j))
    if len(view_array):
        for i, k in near_duplicate_pairs(full, view_array, max_distance):
            if int(i) != owners[k]:
                uf.union(int(i), owners[k])
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])
