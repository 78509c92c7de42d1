"""A loopback stand-in for the Hub and its dataset viewer, for the tests and `python -m data.bench --hub`.

It serves what oeuvre uses, as the real ones do: `/api/datasets/<id>/parquet` (the shard list), the
shards with HEAD and Range GET, the viewer's `/filter` (simple `"col"=value` clauses) and its image
assets. It listens on 127.0.0.1 only and counts every body byte it sends, per path.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

VAN_GOGH = "vincent-van-gogh"


def write_wikiart_like(
    folder: Path,
    *,
    shards: int = 20,
    rows_per_shard: int = 50,
    share: float = 0.02,
    spread: bool = False,
    image_px: int = 64,
    row_group_rows: int = 10,
    seed: int = 0,
) -> list[Path]:
    """WikiArt-shaped parquet shards (image struct, ClassLabel artist and genre, title, the `huggingface`
    schema metadata): `share` of the rows are van Gogh's, sorted together or shuffled (`spread`)."""
    import datasets
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n = shards * rows_per_shard
    others = [f"painter-{k:02d}" for k in range(49)]
    names = sorted([*others, VAN_GOGH])
    ours = max(1, round(n * share))
    artists = [names.index(VAN_GOGH)] * ours + [names.index(rng.choice(others)) for _ in range(n - ours)]
    artists = list(rng.permutation(artists)) if spread else sorted(artists)
    rows: dict[str, list[Any]] = {"image": [], "artist": [], "genre": [], "title": []}
    for i, artist in enumerate(artists):
        noise = rng.uniform(0, 255, (image_px, image_px, 3)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, "JPEG", quality=90)
        rows["image"].append({"bytes": buffer.getvalue(), "path": None})
        rows["artist"].append(int(artist))
        rows["genre"].append(i % 2)
        rows["title"].append(f"work {i}")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "artist": datasets.ClassLabel(names=names),
            "genre": datasets.ClassLabel(names=["landscape", "portrait"]),
            "title": datasets.Value("string"),
        }
    )
    table = datasets.Dataset.from_dict(rows, features=features).data.table
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = folder / f"train-{s:05d}-of-{shards:05d}.parquet"
        pq.write_table(table.slice(s * rows_per_shard, rows_per_shard), path, row_group_size=row_group_rows)
        paths.append(path)
    return paths


class FakeHub:
    """`with FakeHub() as hub: hub.add("me/set", shard_paths)`; then point HF_ENDPOINT and
    OEUVRE_VIEWER_ENDPOINT at `hub.url`. `fail(path, first_byte, length)` returning True answers 503."""

    def __init__(self) -> None:
        self.datasets: dict[str, list[Path]] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.bytes_by_path: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.fail: Callable[[str, int, int], bool] = lambda path, start, length: False
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def bytes_served(self) -> int:
        return sum(self.bytes_by_path.values())

    def reset(self) -> None:
        with self._lock:
            self.bytes_by_path.clear()
            self.hits.clear()

    def add(self, dataset: str, shards: list[Path]) -> None:
        import pyarrow.parquet as pq

        self.datasets[dataset] = shards
        rows = []
        for path in shards:
            if path.read_bytes()[-4:] == b"PAR1":  # a deliberately broken shard is served, never filtered
                rows += pq.read_table(path).to_pylist()
        self.rows[dataset] = rows

    def shard_url(self, dataset: str, index: int) -> str:
        return f"{self.url}/files/{dataset}/{self.datasets[dataset][index].name}"

    def route(self, path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET without its Range."""
        if match := re.fullmatch(r"/api/datasets/(.+)/parquet", path):
            if match.group(1) not in self.datasets:
                return 404, "application/json", b'{"error": "Repository not found"}'
            urls = [self.shard_url(match.group(1), i) for i in range(len(self.datasets[match.group(1)]))]
            return 200, "application/json", json.dumps({"default": {"train": urls}}).encode()
        if match := re.fullmatch(r"/files/(.+)/([^/]+)", path):
            shard = next((p for p in self.datasets.get(match.group(1), []) if p.name == match.group(2)), None)
            if shard is not None:
                return 200, "application/octet-stream", shard.read_bytes()
        if path == "/filter" and query.get("dataset") in self.datasets:
            return 200, "application/json", json.dumps(self.filter(query)).encode()
        if match := re.fullmatch(r"/assets/(.+)/(\d+)\.jpg", path):
            return 200, "image/jpeg", self.rows[match.group(1)][int(match.group(2))]["image"]["bytes"]
        return 404, "text/plain", b"not found"

    def filter(self, query: dict[str, str]) -> dict[str, Any]:
        wanted: dict[str, set] = {}
        for column, value in re.findall(r"\"(\w+)\"=(\d+|'[^']*')", query["where"]):
            wanted.setdefault(column, set()).add(int(value) if value.isdigit() else value.strip("'"))
        rows = self.rows[query["dataset"]]
        hits = [i for i, r in enumerate(rows) if all(r.get(c) in v for c, v in wanted.items())]
        offset, length = int(query.get("offset", 0)), min(int(query.get("length", 100)), 100)
        out = []
        for i in hits[offset : offset + length]:
            row = {k: v for k, v in rows[i].items() if k != "image"}
            row["image"] = {"src": f"{self.url}/assets/{query['dataset']}/{i}.jpg", "height": 0, "width": 0}
            out.append({"row_idx": i, "row": row, "truncated_cells": []})
        return {"rows": out, "num_rows_total": len(hits), "num_rows_per_page": 100, "partial": False}

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(head=True)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                status, content_type, body = hub.route(parts.path, query)
                start, end = 0, len(body)
                ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
                if ranged and status == 200:
                    first, last = ranged.groups()
                    start = len(body) - int(last) if not first else int(first)
                    end = len(body) if not first or not last else min(int(last) + 1, len(body))
                    start = max(start, 0)
                with hub._lock:
                    hub.hits[parts.path] = hub.hits.get(parts.path, 0) + 1
                if hub.fail(parts.path, start, end - start):
                    status, content_type, body, ranged, start, end = 503, "text/plain", b"busy", None, 0, 4
                self.send_response(206 if ranged and status == 200 else status)
                self.send_header("Content-Type", content_type)
                self.send_header("Accept-Ranges", "bytes")
                if ranged and status == 200:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                if not head:
                    with hub._lock:
                        hub.bytes_by_path[parts.path] = hub.bytes_by_path.get(parts.path, 0) + end - start
                    self.wfile.write(body[start:end])

            def log_message(self, *args: object) -> None:
                pass

        return Handler
