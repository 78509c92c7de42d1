"""Per-file curation: read, hash, decode, check, and write the processed copy; decisions are cached.

What is learnt about a file's *content* (decodable or why not, size, perceptual hashes, the processed
copy) is stored by its SHA-256 in `facts.jsonl`, so a re-run decodes nothing twice. The rules that
depend on the config (minimum side, aspect ratio, pixel cap) are applied to those facts on every run.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from data.decode import Rejected, decode_image
from data.sources import Candidate
from oeuvre.atomic import atomic_write_bytes
from oeuvre.config_schema import DataConfig
from oeuvre.phash import phash, to_hex, view_hashes
from oeuvre.same_picture import PictureFeatures, from_arrays, picture_features, to_arrays

FACTS_VERSION = 3  # 3: same-picture features (features/<sha>.safetensors)
THUMB_PX = 112


@dataclass
class Record:
    """One input and what became of it."""

    index: int
    source: str
    kind: str
    caption: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    status: str = "kept"  # kept | rejected | duplicate
    code: str | None = None
    reason: str | None = None
    duplicate_of: int | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None
    views: list[str] = field(default_factory=list)
    image: str | None = None  # processed copy, relative to the cache folder
    thumb: str | None = None
    features: str | None = None  # same-picture features, relative to the cache folder
    group: int | None = None  # the work this image belongs to (index of the group's best copy)
    group_reason: str | None = None  # why it is in that group
    split: str | None = None
    file_name: str | None = None
    text: str | None = None
    mask: dict[str, Any] | None = None  # what its loss mask came from (data/masks.py)

    def reject(self, code: str, reason: str, status: str = "rejected") -> None:
        self.status, self.code, self.reason = status, code, reason


class FactsCache:
    """sha256 -> facts, one JSON object a line, appended as files are first seen."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root / "facts.jsonl"
        self.facts: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that file is simply processed again
                if entry.get("version") == FACTS_VERSION:
                    self.facts[entry["sha256"]] = entry
        self._handle = None

    def get(self, sha256: str, max_pixels: int) -> dict[str, Any] | None:
        entry = self.facts.get(sha256)
        if entry is None:
            return None
        if entry["ok"]:
            files_there = all((self.root / entry[k]).is_file() for k in ("image", "thumb", "features"))
            return entry if files_there else None
        # A bomb refused under a smaller cap may decode under a larger one.
        if entry["code"] == "too_many_pixels" and entry.get("max_pixels") != max_pixels:
            return None
        return entry

    def put(self, entry: dict[str, Any]) -> None:
        entry = {"version": FACTS_VERSION, **entry}
        self.facts[entry["sha256"]] = entry
        if self._handle is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def compute_facts(data: bytes, sha256: str, cache_root: Path, max_pixels: int) -> dict[str, Any]:
    """Decode and describe one file's content; write its processed copy and thumbnail into the cache."""
    try:
        decoded = decode_image(data, max_pixels)
    except Rejected as rejected:
        return {
            "sha256": sha256,
            "ok": False,
            "code": rejected.code,
            "reason": rejected.message,
            "max_pixels": max_pixels,
        }
    image = decoded.image
    # JPEG sources stay JPEG (high quality, no chroma subsampling); everything else becomes PNG.
    buffer = io.BytesIO()
    if decoded.format in ("JPEG", "MPO"):
        suffix = ".jpg"
        image.save(buffer, "JPEG", quality=95, subsampling=0)
    else:
        suffix = ".png"
        image.save(buffer, "PNG", compress_level=3)
    relative_image = f"images/{sha256[:2]}/{sha256}{suffix}"
    atomic_write_bytes(cache_root / relative_image, buffer.getvalue())
    thumb = image.copy()
    thumb.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR, reducing_gap=2.0)
    thumb_buffer = io.BytesIO()
    thumb.save(thumb_buffer, "JPEG", quality=75)
    relative_thumb = f"thumbs/{sha256[:2]}/{sha256}.jpg"
    atomic_write_bytes(cache_root / relative_thumb, thumb_buffer.getvalue())
    relative_features = f"features/{sha256[:2]}/{sha256}.safetensors"
    write_features(cache_root / relative_features, picture_features(image, mirrored=False))
    return {
        "sha256": sha256,
        "ok": True,
        "width": image.width,
        "height": image.height,
        "format": decoded.format,
        "mode": decoded.original_mode,
        "frames": decoded.frames,
        "phash": to_hex(phash(image)),
        "views": [to_hex(v) for v in view_hashes(image)],
        "image": relative_image,
        "thumb": relative_thumb,
        "features": relative_features,
    }


def write_features(path: Path, features: PictureFeatures) -> None:
    from safetensors.numpy import save

    atomic_write_bytes(path, save(to_arrays(features)))


def read_features(path: Path) -> PictureFeatures:
    from safetensors.numpy import load_file

    return from_arrays(load_file(str(path)))


def apply_rules(record: Record, facts: dict[str, Any], config: DataConfig) -> None:
    """Fill `record` from its facts and reject it if a config rule says so."""
    if not facts["ok"]:
        record.reject(facts["code"], facts["reason"])
        return
    width, height = facts["width"], facts["height"]
    record.width, record.height = width, height
    record.phash, record.views = facts["phash"], list(facts["views"])
    record.image, record.thumb, record.features = facts["image"], facts["thumb"], facts["features"]
    if width * height > config.max_image_pixels:
        record.reject(
            "too_many_pixels",
            f"{width}×{height} = {width * height} pixels > max_image_pixels {config.max_image_pixels}",
        )
    elif min(width, height) < config.min_side_px:
        record.reject(
            "too_small",
            f"{width}×{height} px: shorter side {min(width, height)} < min_side_px {config.min_side_px}",
        )
    elif max(width, height) / min(width, height) > config.max_aspect_ratio:
        record.reject(
            "aspect_ratio",
            f"{width}×{height} px: aspect ratio {max(width, height) / min(width, height):.2f} > "
            f"max_aspect_ratio {config.max_aspect_ratio:g}",
        )


def _read(candidate: Candidate) -> tuple[bytes | None, Rejected | None]:
    if candidate.rejected is not None:
        return None, candidate.rejected
    try:
        return candidate.read(), None
    except Rejected as rejected:
        return None, rejected
    except OSError as exc:
        return None, Rejected("unreadable", f"cannot read file: {exc.strerror or exc}")


def curate(
    candidates: Iterable[Candidate], config: DataConfig, cache: FactsCache, workers: int = 2
) -> Iterator[Record]:
    """Records in input order. Files are read, decoded and written by a small thread pool (Pillow
    releases the GIL), with a bounded queue so only a few images are in memory at once."""
    seen: dict[str, Record] = {}  # sha256 -> the first record with that content

    def work(candidate: Candidate) -> tuple[Candidate, str | None, Rejected | None, dict | None]:
        data, rejected = _read(candidate)
        if rejected is not None or data is None:
            return candidate, None, rejected, None
        sha256 = hashlib.sha256(data).hexdigest()
        facts = cache.get(sha256, config.max_image_pixels)
        if facts is None:
            facts = compute_facts(data, sha256, cache.root, config.max_image_pixels)
        return candidate, sha256, None, facts

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        queue: deque[Future] = deque()
        index = 0

        def drain_one() -> Record:
            nonlocal index
            candidate, sha256, rejected, facts = queue.popleft().result()
            record = Record(
                index=index,
                source=candidate.source,
                kind=candidate.kind,
                caption=candidate.caption,
                meta=dict(candidate.meta),
                sha256=sha256,
            )
            index += 1
            if rejected is not None:
                record.reject(rejected.code, rejected.message)
            elif sha256 in seen:
                first = seen[sha256]
                record.reject("exact_duplicate", f"same bytes as {first.source}", "duplicate")
                record.duplicate_of = first.index
            else:
                seen[sha256] = record
                if cache.facts.get(sha256) is not facts:
                    cache.put(facts)
                apply_rules(record, facts, config)
            return record

        for candidate in candidates:
            queue.append(pool.submit(work, candidate))
            if len(queue) >= 4 * max(1, workers):
                yield drain_one()
        while queue:
            yield drain_one()
