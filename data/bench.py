"""Benchmarks for `make bench`: curation throughput and near-duplicate search scaling.

`python -m data.bench [--images 300] [--size 512] [--workers 2]` prints one JSON object:
- curation: images/s for a folder of `size` px JPEGs, cold (decode, hash, write) and warm (re-run that
  reuses the cached decisions);
- dedupe: seconds to find every near-duplicate pair (and to group works, with crop views) among 1k, 10k
  and 100k random 64-bit hashes with 1% planted near-duplicates;
- grouping: seconds to link every image to the work it is a crop of (same-picture matcher behind its
  pre-filter) among 1k and 10k pictures (`--group-sizes`).
- hub_source: bytes and seconds for a 2 % filter on a WikiArt-shaped split served by the loopback fake
  hub (matches clustered and spread): full download vs row groups vs the viewer's /filter vs auto
  (`--hub-only` runs just this; `--hub-rows`, `--hub-px` scale it).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from oeuvre.config import PROJECT_CONFIGS, load_config


def make_jpegs(folder: Path, n: int, size_px: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        low = rng.uniform(0, 255, (12, 12, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(low).resize((size_px, size_px), Image.Resampling.BICUBIC), float)
        image += rng.normal(0, 12, image.shape)  # brush-like grain so JPEGs are not trivially small
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=90)


def bench_curation(n: int, size_px: int, workers: int) -> dict:
    from data.build import build_dataset

    with tempfile.TemporaryDirectory(prefix="oeuvre-bench-") as tmp:
        root = Path(tmp)
        make_jpegs(root / "in", n, size_px)
        config = load_config(
            PROJECT_CONFIGS / "base.yaml",
            ["artist=bench", f"data.sources=[{{folder: {root / 'in'}}}]", f"output_dir={root / 'out'}"],
        )
        start = time.perf_counter()
        cold = build_dataset(config, workers=workers, progress=False)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        build_dataset(config, workers=workers, progress=False)
        warm_s = time.perf_counter() - start
    return {
        "images": n,
        "size_px": size_px,
        "workers": workers,
        "kept": cold.counts["kept"],
        "cold_s": round(cold_s, 2),
        "cold_images_per_s": round(n / cold_s, 1),
        "warm_images_per_s": round(n / warm_s, 1),
    }


def bench_dedupe(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), max_distance: int = 6) -> list[dict]:
    from data.dedupe import group_near_duplicates, near_duplicate_pairs

    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2)
        planted = n // 100
        flips = np.uint64(1) << rng.integers(0, 64, planted).astype(np.uint64)
        hashes[-planted:] = hashes[:planted] ^ flips
        start = time.perf_counter()
        pairs = near_duplicate_pairs(hashes, hashes, max_distance)
        search_s = time.perf_counter() - start
        views = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)
        start = time.perf_counter()
        groups = group_near_duplicates(
            [int(h) for h in hashes], [[int(v) for v in vs] for vs in views], max_distance
        )
        group_s = time.perf_counter() - start
        rows.append(
            {
                "hashes": n,
                "pairs_found": int((pairs[:, 0] < pairs[:, 1]).sum()),
                "search_s": round(search_s, 3),
                "group_with_views_s": round(group_s, 3),
                "groups": len(groups),
            }
        )
    return rows


def bench_grouping(sizes: tuple[int, ...] = (1_000, 10_000), side_px: int = 160) -> list[dict]:
    """Same-picture grouping (the voting pre-filter, then geometric verification of each image's few
    candidates) over n distinct pictures, 5 % of them crops of another; the features are per-file facts,
    computed once at curation, so their time is given apart."""
    from oeuvre.same_picture import picture_features
    from oeuvre.same_picture_index import same_picture_links

    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        start = time.perf_counter()
        features, originals = [], []
        for i in range(n):
            low = rng.uniform(0, 255, (10, 10, 3)).astype(np.uint8)
            image = np.asarray(
                Image.fromarray(low).resize((side_px, side_px), Image.Resampling.BICUBIC), float
            )
            picture = Image.fromarray(
                np.clip(image + rng.normal(0, 14, image.shape), 0, 255).astype(np.uint8)
            )
            if i % 20 == 19:  # a crop of the previous picture: 49 % of its area
                picture = originals[-1].crop((20, 30, 20 + 112, 30 + 112))
            originals.append(picture)
            features.append(picture_features(picture, mirrored=False))
        features_s = time.perf_counter() - start
        start = time.perf_counter()
        links = same_picture_links(features)
        rows.append(
            {
                "images": n,
                "side_px": side_px,
                "features_s": round(features_s, 1),
                "group_s": round(time.perf_counter() - start, 1),
                "crops_planted": n // 20,
                "links_found": len(links),
            }
        )
        originals.clear()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--group-sizes", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--hub-only", action="store_true", help="only the streamed hub-source benchmark")
    parser.add_argument("--hub-rows", type=int, default=50, help="rows per shard (20 shards)")
    parser.add_argument("--hub-px", type=int, default=64, help="side of each noise JPEG, px")
    args = parser.parse_args(argv)
    from data.bench_hub import measure

    result: dict = {"cpu_count": os.cpu_count()}
    if not args.hub_only:
        result["curation"] = bench_curation(args.images, args.size, args.workers)
        result["dedupe"] = bench_dedupe()
        result["grouping"] = bench_grouping(tuple(args.group_sizes))
    result["hub_source"] = measure(rows_per_shard=args.hub_rows, image_px=args.hub_px)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
