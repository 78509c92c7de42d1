"""The artwork-level holdout: whole near-duplicate groups go to holdout, never part of one.

Each group's place in the order is a hash of the seed and the group's key (its best copy's SHA-256),
so the split is deterministic, does not depend on input order, and adding works moves few others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def holdout_count(n_groups: int, fraction: float) -> int:
    """round(fraction × n), at least one when there are 5 or more works, never all of them."""
    if fraction <= 0 or n_groups < 2:
        return 0
    count = round(fraction * n_groups)
    if n_groups >= 5:
        count = max(count, 1)
    return min(count, n_groups - 1)


def choose_holdout(group_keys: Sequence[str], fraction: float, seed: int) -> set[int]:
    """Indices into `group_keys` of the groups held out."""

    def rank(i: int) -> str:
        return hashlib.sha256(f"{seed}:{group_keys[i]}".encode()).hexdigest()

    order = sorted(range(len(group_keys)), key=rank)
    return set(order[: holdout_count(len(group_keys), fraction)])


def split_groups(
    groups: Sequence[Sequence[int]], keys: Sequence[str], fraction: float, seed: int
) -> dict[int, str]:
    """Item index -> "train" or "holdout", with every member of a group on the same side."""
    held = choose_holdout(keys, fraction, seed)
    return {item: ("holdout" if g in held else "train") for g, group in enumerate(groups) for item in group}
