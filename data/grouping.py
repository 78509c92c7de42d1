"""Which curated images are the same work? Groups, and the near-complete duplicates inside them.

Two images are linked when their pHashes are near (the whole picture, or one against the other's
centred crop views) or when the same-picture matcher (`oeuvre.same_picture`, the one the copy check
uses) finds one inside the other: a crop or a detail down to 40 % of the work's area, rescaled,
recoloured or re-encoded. Linked images form a group: one work, which the holdout split keeps on one
side. Inside a group the largest image is the work's best copy; an image that shows nearly all of it
(pHash within `max_distance`, or both covering at least NEAR_COMPLETE of each other) is a near-duplicate
and dropped; a crop or detail is kept for training, with the reason it sits in the group.
"""

from __future__ import annotations

from pathlib import Path

from data.curate import Record, read_features
from data.dedupe import UnionFind, group_near_duplicates
from oeuvre.phash import from_hex, hamming
from oeuvre.same_picture import NEAR_COMPLETE, Match, verify
from oeuvre.same_picture_index import same_picture_links


def group_works(records: list[Record], max_distance: int, cache_root: Path) -> list[list[Record]]:
    """Set each kept record's `group` and `group_reason`, mark near-duplicates; return the groups of
    kept records (duplicates dropped), each a work, in input order."""
    eligible = [r for r in records if r.status == "kept"]
    features = [read_features(cache_root / r.features) for r in eligible]
    uf = UnionFind(len(eligible))
    if max_distance > 0:
        hashes = [from_hex(r.phash) for r in eligible]
        views = [[from_hex(v) for v in r.views] for r in eligible]
        for group in group_near_duplicates(hashes, views, max_distance):
            for i in group[1:]:
                uf.union(group[0], i)
    for i, j, _ in same_picture_links(features):
        uf.union(i, j)
    members: dict[int, list[int]] = {}
    for i in range(len(eligible)):
        members.setdefault(uf.find(i), []).append(i)
    groups = []
    for group in sorted(members.values(), key=lambda g: g[0]):
        best = max(group, key=lambda i: (eligible[i].width * eligible[i].height, -eligible[i].index))
        kept = [eligible[best]]
        for i in group:
            record = eligible[i]
            record.group = eligible[best].index
            if i == best:
                record.group_reason = "the work's largest copy" if len(group) > 1 else None
                continue
            match = verify(features[i], features[best]) if features[i] is not None else None
            if _near_duplicate(record, eligible[best], match, max_distance):
                record.reject(
                    "near_duplicate",
                    f"near-duplicate of {eligible[best].source} ({_why(record, eligible[best], match)})",
                    "duplicate",
                )
                record.duplicate_of = eligible[best].index
            else:
                record.group_reason = _detail_reason(record, eligible[best], match)
                kept.append(record)
        groups.append(kept)
    return groups


def _phash_distance(record: Record, best: Record) -> int:
    return min(
        hamming(from_hex(a), from_hex(b))
        for a in [record.phash, *record.views]
        for b in [best.phash, *best.views]
    )


def _near_duplicate(record: Record, best: Record, match: Match | None, max_distance: int) -> bool:
    """Shows nearly all of the best copy. `max_distance` 0 keeps every near-duplicate (still grouped)."""
    if max_distance <= 0:
        return False
    if hamming(from_hex(record.phash), from_hex(best.phash)) <= max_distance:
        return True
    return (
        match is not None
        and match.same_picture
        and min(match.work_coverage, match.query_coverage) >= NEAR_COMPLETE
    )


def _why(record: Record, best: Record, match: Match | None) -> str:
    text = f"pHash distance {_phash_distance(record, best)}"
    if match is not None and match.same_picture:
        text += f"; {match.inliers} matching keypoints, shows {match.work_coverage:.0%} of it"
    return text


def _detail_reason(record: Record, best: Record, match: Match | None) -> str:
    if match is not None and match.same_picture:
        shows = f"{match.inliers} matching keypoints, shows {match.work_coverage:.0%} of it"
        return f"detail of {best.source}: {shows}"
    return f"same work as {best.source} ({_why(record, best, match)}, or through another copy)"
