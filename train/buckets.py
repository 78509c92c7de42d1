"""Aspect-ratio bucketing: every image trains at the bucket nearest its shape, batches from one bucket.

Buckets are multiples of 64 with an area of at most resolution_px², so a tall portrait and a wide
landscape both keep their composition instead of being centre-cropped to a square."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

BUCKET_STEP_PX = 64
MAX_BUCKET_ASPECT = 4.0


def make_buckets(resolution_px: int) -> list[tuple[int, int]]:
    """(width, height) pairs, multiples of 64, area <= resolution_px², aspect within 1:4..4:1."""
    if resolution_px < BUCKET_STEP_PX:
        raise ValueError(f"resolution_px must be at least {BUCKET_STEP_PX}, got {resolution_px}")
    max_area = resolution_px * resolution_px
    buckets = set()
    width = BUCKET_STEP_PX
    while width * BUCKET_STEP_PX <= max_area:
        height = (max_area // width) // BUCKET_STEP_PX * BUCKET_STEP_PX
        if max(width / height, height / width) <= MAX_BUCKET_ASPECT:
            buckets.add((width, height))
            buckets.add((height, width))
        width += BUCKET_STEP_PX
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest in log space (ties: the larger area)."""
    log_aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - log_aspect), -b[0] * b[1]))


def epoch_batches(
    bucket_of: list[tuple[int, int]], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Indices grouped into same-bucket batches, shuffled from (seed, epoch) alone.

    Deterministic so a resumed run sees exactly the data order of an uninterrupted one. A bucket's
    last partial batch is kept (dropping it would starve small buckets)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    by_bucket: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index in torch.randperm(len(bucket_of), generator=generator).tolist():
        by_bucket[bucket_of[index]].append(index)
    batches = [
        members[i : i + batch_size]
        for _, members in sorted(by_bucket.items())
        for i in range(0, len(members), batch_size)
    ]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]
