"""Bytes and time a streamed hub source costs against downloading every shard, on the loopback fake hub.

For each arrangement of the same rows (van Gogh's 2 % sorted together, or shuffled), `measure` runs
the full download (every shard fetched whole, then read through `datasets`), row-group pruning,
the viewer's /filter and `auto`, and reports bytes served, requests, loopback seconds, and seconds
projected for an assumed link (LINK_MBIT_S, ROUND_TRIP_S per request, requests one after another).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

from data.fake_hub import FakeHub, write_wikiart_like

LINK_MBIT_S = 50.0
ROUND_TRIP_S = 0.05


def projected_s(bytes_read: int, requests: int) -> float:
    return round(bytes_read * 8 / (LINK_MBIT_S * 1e6) + requests * ROUND_TRIP_S, 2)


def _build(out: Path, source: str) -> int:
    from data.build import build_dataset
    from oeuvre.config import PROJECT_CONFIGS, load_config

    config = load_config(
        PROJECT_CONFIGS / "demo.yaml",
        ["artist=bench", f"data.sources=[{source}]", f"output_dir={out}", "data.min_side_px=48"],
    )
    return build_dataset(config, progress=False).counts["kept"]


def _full_download(hub: FakeHub, dataset: str, shards: list[Path], folder: Path, out: Path) -> int:
    folder.mkdir(parents=True)
    for i, shard in enumerate(shards):
        with urllib.request.urlopen(hub.shard_url(dataset, i)) as response:  # noqa: S310 - loopback
            (folder / shard.name).write_bytes(response.read())
    return _build(out, f"{{hf: {folder}, filter: {{artist: vincent-van-gogh}}}}")


def _used(out: Path) -> str:
    (state,) = (out / "cache" / "data" / "hub").glob("*/state.json")
    done = json.loads(state.read_text())["done"]
    return "filter" if done and done[0].startswith("filter") else "row_groups"


def measure(shards: int = 20, rows_per_shard: int = 50, image_px: int = 64) -> dict:
    saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "OEUVRE_VIEWER_ENDPOINT", "HF_HUB_OFFLINE")}
    results: dict = {"assumed_link": {"mbit_s": LINK_MBIT_S, "round_trip_s": ROUND_TRIP_S}}
    with tempfile.TemporaryDirectory(prefix="oeuvre-bench-hub-") as tmp, FakeHub() as hub:
        root = Path(tmp)
        os.environ.update(HF_ENDPOINT=hub.url, OEUVRE_VIEWER_ENDPOINT=hub.url, HF_HUB_OFFLINE="0")
        try:
            for arrangement in ("clustered", "spread"):
                files = write_wikiart_like(
                    root / arrangement,
                    shards=shards,
                    rows_per_shard=rows_per_shard,
                    image_px=image_px,
                    spread=arrangement == "spread",
                )
                dataset = f"bench/{arrangement}"
                hub.add(dataset, files)
                size = sum(p.stat().st_size for p in files)
                rows = {"dataset_bytes": size, "rows": shards * rows_per_shard}
                for method in ("full_download", "row_groups", "filter", "auto"):
                    hub.reset()
                    start = time.perf_counter()
                    out = root / "runs" / arrangement / method
                    if method == "full_download":
                        kept = _full_download(hub, dataset, files, root / "full" / arrangement, out)
                    else:
                        source = f"{{hf: {dataset}, filter: {{artist: vincent-van-gogh}}, read: {method}}}"
                        kept = _build(out, source)
                        rows[f"{method}_used"] = _used(out)
                    requests = sum(hub.hits.values())
                    rows[method] = {
                        "bytes": hub.bytes_served,
                        "share": round(hub.bytes_served / size, 4),
                        "requests": requests,
                        "loopback_s": round(time.perf_counter() - start, 2),
                        "projected_s": projected_s(hub.bytes_served, requests),
                        "kept": kept,
                    }
                results[arrangement] = rows
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return results
