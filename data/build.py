"""The whole `python -m data` run: sources → curation → dedupe → holdout → captions → dataset folder.

Writes `<output_dir>/dataset/` in one go (a temporary sibling renamed into place): train/ and holdout/
imagefolders with metadata.jsonl, report.json, report.html and the card README.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from data.captions import AutoCaptioner, check_template, render_caption
from data.card import render_card
from data.curate import FactsCache, Record, curate
from data.grouping import group_works
from data.masks import work_mask
from data.report import build_report, reason_counts, write_report_html, write_report_json
from data.sources import Candidate, describe_source, iter_source
from data.split import split_groups
from oeuvre.atomic import atomic_directory, atomic_write_text
from oeuvre.config import to_plain
from oeuvre.config_schema import Config
from oeuvre.errors import OeuvreError
from oeuvre.paths import MASKS_FOLDER, RunPaths

SPLITS = ("train", "holdout")
METADATA_KEYS = ("title", "year", "genre", "style")


class NothingUsable(OeuvreError):
    """No input survived curation; the message counts why."""


@dataclass
class BuildResult:
    dataset_dir: Path
    records: list[Record]
    counts: dict[str, int]
    decoded: int  # files decoded this run (the rest came from the cache)


def cache_root(config: Config) -> Path:
    return RunPaths(config.output_dir).root / "cache" / "data"


def build_dataset(config: Config, workers: int = 2, progress: bool = True) -> BuildResult:
    """Read every source, curate, group copies and details into works, split, caption, write."""
    data = config.data
    check_template(data.caption_template)
    if not data.sources:
        raise OeuvreError(
            "data.sources is empty: expected at least one {folder: DIR}, {hf: ID} or {urls: FILE}"
        )
    root = cache_root(config)
    records, source_inputs, decoded = curate_sources(config, root, workers, progress)
    header = {
        "artist": config.artist,
        "trigger_token": config.trigger_token,
        "caption_template": data.caption_template,
        "rules": {k: v for k, v in to_plain(data).items() if k not in ("sources",)},
        "sources": [{"source": name, "inputs": n} for name, n in source_inputs.items()],
    }
    paths = RunPaths(config.output_dir)
    if not any(r.status == "kept" for r in records):
        fail_when_nothing_usable(config, records, header, source_inputs, paths)
    kept = assign_splits(config, records, root)
    auto = auto_captions(kept, data.auto_caption_model, root) if data.auto_caption else {}
    for record in kept:
        record.text = render_caption(
            data.caption_template,
            {
                "token": config.trigger_token,
                "artist": config.artist,
                "caption": record.caption or auto.get(record.sha256),
                **record.meta,
            },
        )
        record.file_name = file_name(record)
    masks = work_masks(kept, root, data.detect_frames)  # before the report: it lists each work's mask
    report = build_report(records, header)
    write_dataset(config, paths, root, kept, records, report, masks)
    return BuildResult(dataset_dir=paths.dataset, records=records, counts=report["counts"], decoded=decoded)


def curate_sources(config: Config, root: Path, workers: int, progress: bool):
    """Every source's candidates through curation: (records, inputs per source, images decoded anew)."""
    data = config.data
    # Open every source first, so a missing folder or uncached dataset fails before any work.
    run_root = RunPaths(config.output_dir).root
    opened = [
        (describe_source(s), iter_source(s, data, root, run_root, config.seed, progress))
        for s in data.sources
    ]
    source_inputs: dict[str, int] = {name: 0 for name, _ in opened}

    def candidates() -> Iterator[Candidate]:
        for name, items in opened:
            for candidate in items:
                source_inputs[name] += 1
                yield candidate

    cache = FactsCache(root)
    known_before = set(cache.facts)
    try:
        stream = curate(candidates(), data, cache, workers=workers)
        records, passed = [], 0
        with tqdm(stream, desc="curating", unit="img", disable=not progress) as bar:
            for record in bar:
                records.append(record)
                passed += record.status == "kept"
                bar.set_postfix(kept=passed, refresh=False)  # before duplicates are grouped
    finally:
        cache.close()
    decoded = len({r.sha256 for r in records if r.sha256} - known_before)
    return records, source_inputs, decoded


def fail_when_nothing_usable(config: Config, records, header: dict, source_inputs: dict, paths) -> None:
    """Write the rejections where the user can read them, and stop with one line counting why."""
    report = build_report(records, header)
    failed = paths.root / "data_rejections.json"
    write_report_json(failed, report)
    empty = [name for name, n in source_inputs.items() if n == 0]
    why = ", ".join(f"{code} {n}" for code, n in reason_counts(records).items())
    detail = f"{len(records)} inputs, all dropped: {why}" if records else "no inputs found"
    if empty:
        detail += f"; empty sources: {', '.join(empty)}"
    raise NothingUsable(f"no usable images for artist '{config.artist}': {detail} (details: {failed})")


def assign_splits(config: Config, records: list[Record], root: Path) -> list[Record]:
    """Group copies and details into works, cap their number, and put each work on one side; returns
    the kept records. A group is one work: its best copy and the crops and details kept beside it go
    to one side, and its dropped near-duplicates follow it, so the holdout never shows a work that trains."""
    data = config.data
    groups = group_works(records, data.near_duplicate_max_distance, root)
    groups = cap_works(groups, data.max_works, config.seed)
    kept = [r for r in records if r.status == "kept"]
    by_index = {r.index: i for i, r in enumerate(kept)}
    sides = split_groups(
        [[by_index[r.index] for r in group] for group in groups],
        [group[0].sha256 for group in groups],
        data.holdout_fraction,
        config.seed,
    )
    for i, record in enumerate(kept):
        record.split = sides[i]
    for record in records:
        if record.status == "duplicate" and record.duplicate_of is not None:
            record.split = records[record.duplicate_of].split
    return kept


def write_dataset(config: Config, paths, root: Path, kept, records, report: dict, masks: dict) -> None:
    """train/ and holdout/ (images + metadata.jsonl), masks/, report.json, report.html and the card, as
    one folder that replaces the previous dataset only once it is whole."""
    data = config.data
    with atomic_directory(paths.dataset, overwrite=True) as tmp:
        for split in SPLITS:
            rows = [metadata_row(r) for r in kept if r.split == split]
            (tmp / split).mkdir()
            for record in (r for r in kept if r.split == split):
                place(root / record.image, tmp / split / record.file_name)
            atomic_write_text(
                tmp / split / "metadata.jsonl",
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
            )
        for sha256, mask in masks.items():
            (tmp / MASKS_FOLDER).mkdir(exist_ok=True)
            mask.save(tmp / MASKS_FOLDER / f"{sha256}.png")
        write_report_json(tmp / "report.json", report)
        write_report_html(tmp / "report.html", report, records, root)
        atomic_write_text(
            tmp / "README.md", render_card(report, data.license, data.holdout_fraction, config.seed)
        )


def cap_works(groups: list[list[Record]], max_works: int | None, seed: int) -> list[list[Record]]:
    """Keep at most `max_works` works (a work is a group: its best copy with its details): a sample
    fixed by the seed and the images' content, whatever order the sources yielded them in."""
    if max_works is None or len(groups) <= max_works:
        return groups
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g[0].sha256}".encode()).hexdigest())
    for group in order[max_works:]:
        for record in group:
            record.reject(
                "max_works", f"over data.max_works {max_works} (a sample fixed by the seed is kept)"
            )
    kept = {id(g) for g in order[:max_works]}
    return [g for g in groups if id(g) in kept]


def file_name(record: Record) -> str:
    stem = record.meta.get("title") or re.split(r"[/\\]", record.source.split("?")[0].rstrip("/"))[-1]
    stem = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", str(stem))
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40] or "image"
    return f"{slug}-{record.sha256[:10]}{Path(record.image).suffix}"


def metadata_row(record: Record) -> dict:
    row = {
        "file_name": record.file_name,
        "text": record.text,
        "source": record.source,
        "sha256": record.sha256,
        "width": record.width,
        "height": record.height,
        "phash": record.phash,
    }
    for key in METADATA_KEYS:
        value = record.meta.get(key)
        if key == "year" and value is not None:
            match = re.search(r"\d{4}", str(value))
            value = int(match.group()) if match else None
        row[key] = None if value is None else (value if key == "year" else str(value))
    return row


def work_masks(records: list[Record], root: Path, detect_frames: bool) -> dict:
    """sha256 -> loss mask for every work that has one (sidecar, alpha, detected frame); each
    record notes where its mask came from."""
    from PIL import Image

    masks = {}
    for record in records:
        with Image.open(root / record.image) as opened:
            mask, record.mask = work_mask(record.source, record.kind, opened.convert("RGB"), detect_frames)
        if mask is not None:
            masks[record.sha256] = mask
    return masks


def place(source: Path, target: Path) -> None:
    """Hard-link the cached processed copy into the dataset (no second copy on disk), else copy it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def auto_captions(records: list[Record], model: str, root: Path, batch_size: int = 8) -> dict[str, str]:
    """Captions from the auto-caption model for images without a sidecar, cached by content and model."""
    from PIL import Image

    cache_path = root / "captions.jsonl"
    cached: dict[str, str] = {}
    if cache_path.is_file():
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("model") == model:
                cached[entry["sha256"]] = entry["caption"]
    todo = [r for r in records if not r.caption and r.sha256 not in cached]
    if todo:
        captioner = AutoCaptioner(model)
        with cache_path.open("a", encoding="utf-8") as handle:
            batches = (
                itertools.batched(todo, batch_size)
                if hasattr(itertools, "batched")
                else (todo[i : i + batch_size] for i in range(0, len(todo), batch_size))
            )
            for batch in tqdm(list(batches), desc="auto-captioning", unit="batch"):
                images = [Image.open(root / r.image).convert("RGB") for r in batch]
                for record, text in zip(batch, captioner.caption(images), strict=True):
                    cached[record.sha256] = text
                    handle.write(
                        json.dumps({"sha256": record.sha256, "model": model, "caption": text}) + "\n"
                    )
    return cached
