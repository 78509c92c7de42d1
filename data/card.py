"""The dataset card, README.md: the Hub's YAML header, then sources, counts, rejections and the rules."""

from __future__ import annotations

from typing import Any

import yaml


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def render_card(report: dict[str, Any], license_id: str, holdout_fraction: float, seed: int) -> str:
    counts = report["counts"]
    data_files = [{"split": "train", "path": "train/*"}]
    if counts["holdout"]:
        data_files.append({"split": "holdout", "path": "holdout/*"})
    header = {
        "license": license_id,
        "pretty_name": f"{report['artist']} (oeuvre style dataset)",
        "tags": ["art", "painting", "style", "lora", "oeuvre"],
        "task_categories": ["text-to-image"],
        "size_categories": [size_category(counts["kept"])],
        "configs": [{"config_name": "default", "data_files": data_files}],
    }
    sources = "\n".join(f"- {s['source']}: {s['inputs']} inputs" for s in report["sources"]) or "- (none)"
    reasons = "\n".join(f"| {code} | {n} |" for code, n in report["reasons"].items()) or "| (none) | 0 |"
    return f"""---
{yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip()}
---

# {report["artist"]}: a curated style dataset

Built by `python -m data` (oeuvre) to learn the overall style of **{report["artist"]}** as a LoRA.
Every caption contains the trigger token `{report["trigger_token"]}`
(template: `{report["caption_template"]}`).

## Sources
{sources}

## Counts
{counts["inputs"]} inputs: {counts["kept"]} kept ({counts["train"]} train, {counts["holdout"]} holdout),
{counts["rejected"]} rejected, {counts["duplicates"]} duplicates.

| dropped because | files |
|---|---|
{reasons}

Every input and its reason is listed in `report.json`; `report.html` is a contact sheet.

## Rules
- Decoded fully; EXIF orientation applied; every image converted to RGB (transparency on white).
- Rejected below {report["rules"]["min_side_px"]} px on the short side, beyond an aspect ratio of
  {report["rules"]["max_aspect_ratio"]:g}, or above {report["rules"]["max_image_pixels"]} pixels.
- Exact duplicates by SHA-256; near-duplicates (re-encodes, resizes, crops, colour shifts) by a 64-bit
  DCT perceptual hash within Hamming distance {report["rules"]["near_duplicate_max_distance"]}, keeping
  the largest copy (then the earliest source).

## Holdout
Artwork-level: {holdout_fraction:g} of the works (at least one when there are five or more), chosen by a
hash of seed {seed} and each work's content hash. A work and all its near-duplicates stay on one side, so
evaluation never sees a crop or re-encode of a training image.

## Loading
```python
from datasets import load_dataset
ds = load_dataset("path/to/dataset")  # reads this card's configs: train and holdout splits
```
`load_dataset("imagefolder", data_dir=...)` alone finds only `train` (it knows no split named
holdout); pass `data_files={{"train": "train/*", "holdout": "holdout/*"}}` with it instead.

## Licence
The licence field says `{license_id}`; check the rights of each work before sharing.
"""
