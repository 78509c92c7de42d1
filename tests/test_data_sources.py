"""Every source kind: folders (recursive, any extension case, sidecars), hub datasets built and saved
here (the real load_dataset / load_from_disk code, ClassLabel filters), and URL lists against a local
HTTP server (good files, a 404, a slow one, HTML served as .jpg)."""

from __future__ import annotations

import http.server
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.build import build_dataset
from data.sources import SourceError
from oeuvre.config import PROJECT_CONFIGS, load_config


def scene(seed: int, size: tuple[int, int] = (80, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)).resize(
        size, Image.Resampling.BICUBIC
    )


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def build(tmp_path: Path, sources: str, *overrides: str):
    config = load_config(
        PROJECT_CONFIGS / "demo.yaml",
        [
            "artist=tester",
            f"data.sources={sources}",
            f"output_dir={tmp_path / 'out'}",
            "data.min_side_px=48",
            *overrides,
        ],
    )
    return build_dataset(config, progress=False)


def test_folder_source_is_recursive_any_extension_case_with_sidecar_captions(tmp_path):
    src = tmp_path / "in"
    names = ["a.JPG", "b.jpeg", "deep/er/c.PNG", "d.webp", "e.bmp", "f.TIF", "g.tiff"]
    for i, name in enumerate(names):
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        scene(i).save(path)
    (src / "deep" / "er" / "c.txt").write_text("the sidecar caption")
    result = build(tmp_path, f"[{{folder: {src}}}]", "data.holdout_fraction=0")
    assert sorted(Path(r.source).name for r in result.records if r.status == "kept") == sorted(
        Path(n).name for n in names
    )
    captioned = next(r for r in result.records if r.source.endswith("c.PNG"))
    assert captioned.text.startswith("the sidecar caption, ") and "<demo-artist>" in captioned.text


def test_missing_folder_is_a_one_line_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match=r"folder '.*nowhere' does not exist"):
        build(tmp_path, f"[{{folder: {tmp_path / 'nowhere'}}}]")


def make_wikiart_like(n_per_artist: int = 3):
    import datasets

    artists = ["claude-monet", "vincent-van-gogh", "paul-gauguin"]
    rows = {"image": [], "artist": [], "genre": [], "title": []}
    for a in range(len(artists)):
        for k in range(n_per_artist):
            rows["image"].append(scene(10 * a + k))
            rows["artist"].append(a)
            rows["genre"].append(k % 2)
            rows["title"].append(f"work {a}-{k}")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "artist": datasets.ClassLabel(names=artists),
            "genre": datasets.ClassLabel(names=["landscape", "portrait"]),
            "title": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def hub_copies(tmp_path_factory):
    """One WikiArt-shaped dataset saved two ways: save_to_disk, and parquet (read by load_dataset)."""
    root = tmp_path_factory.mktemp("hub")
    table = make_wikiart_like()
    table.save_to_disk(str(root / "saved"))
    (root / "parquet").mkdir()
    table.to_parquet(str(root / "parquet" / "train-00000.parquet"))
    return root


@pytest.mark.parametrize("kind", ["saved", "parquet"])
def test_hub_source_filters_classlabel_by_name_and_keeps_metadata(tmp_path, hub_copies, kind):
    source = f"[{{hf: {hub_copies / kind}, split: train, filter: {{artist: vincent-van-gogh}}}}]"
    result = build(tmp_path, source, "data.holdout_fraction=0")
    kept = [r for r in result.records if r.status == "kept"]
    assert len(result.records) == 3 and len(kept) == 3
    assert {r.meta["title"] for r in kept} == {"work 1-0", "work 1-1", "work 1-2"}
    assert {r.meta["genre"] for r in kept} == {"landscape", "portrait"}
    assert all(r.source.startswith(f"{hub_copies / kind}[train]#") for r in kept)
    row = (result.dataset_dir / "train" / "metadata.jsonl").read_text().splitlines()[0]
    assert '"genre": "landscape"' in row or '"genre": "portrait"' in row


def test_hub_filter_value_matching_nothing_names_the_closest_labels(tmp_path, hub_copies):
    source = f"[{{hf: {hub_copies / 'saved'}, filter: {{artist: van-gogh}}}}]"
    with pytest.raises(SourceError, match=r"artist='van-gogh' matches no label; closest: 'vincent-van-gogh'"):
        build(tmp_path, source)


def test_hub_filter_on_a_missing_column_lists_the_columns(tmp_path, hub_copies):
    with pytest.raises(SourceError, match=r"filter column 'painter' does not exist \(columns: image, artist"):
        build(tmp_path, f"[{{hf: {hub_copies / 'saved'}, filter: {{painter: x}}}}]")


def test_hub_dataset_not_cached_offline_fails_at_once_with_a_clear_message(tmp_path):
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"hf 'nobody-here/no-such-dataset-xyz'.*HF_HUB_OFFLINE=1"):
        build(tmp_path, "[{hf: nobody-here/no-such-dataset-xyz}]")
    assert time.monotonic() - start < 30


class _Handler(http.server.BaseHTTPRequestHandler):
    good = png_bytes(scene(101))
    good2 = png_bytes(scene(102), "JPEG")
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/slow.jpg":
            time.sleep(1.0)
        routes = {
            "/good.png": (200, "image/png", self.good),
            "/good2.jpg": (200, "image/jpeg", self.good2),
            "/slow.jpg": (200, "image/jpeg", self.good2),
            "/page.jpg": (200, "text/html; charset=utf-8", b"<html><body>a gallery page</body></html>"),
            "/huge.png": (200, "image/png", b"\x89PNG" + b"0" * 200_000),
            "/huge-unannounced.png": (200, "image/png", b"\x89PNG" + b"0" * 200_000),
        }
        status, content_type, body = routes.get(self.path, (404, "text/plain", b"missing"))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if "unannounced" not in self.path:  # this one streams until the connection closes
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.hits = {}
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_source_downloads_good_files_and_reports_each_failure(tmp_path, server):
    urls = tmp_path / "urls.txt"
    paths = [
        "good.png",
        "good2.jpg",
        "missing.jpg",
        "slow.jpg",
        "page.jpg",
        "huge.png",
        "huge-unannounced.png",
    ]
    urls.write_text("# the artist's works\n" + "".join(f"{server}/{p}\n" for p in paths) + "\n")
    overrides = (
        "data.download_timeout_s=0.3",
        "data.download_retries=1",
        "data.download_max_bytes=100000",
        "data.holdout_fraction=0",
    )
    result = build(tmp_path, f"[{{urls: {urls}}}]", *overrides)
    records = {r.source.rsplit("/", 1)[-1]: r for r in result.records}
    assert records["good.png"].status == "kept" and records["good2.jpg"].status == "kept"
    assert "HTTP 404" in records["missing.jpg"].reason
    assert "timed out" in records["slow.jpg"].reason and "2 tries" in records["slow.jpg"].reason
    assert "content-type 'text/html'" in records["page.jpg"].reason
    assert "download_max_bytes 100000" in records["huge.png"].reason
    assert "more than download_max_bytes 100000" in records["huge-unannounced.png"].reason
    assert _Handler.hits["/missing.jpg"] == 1  # a 404 is not retried
    assert _Handler.hits["/slow.jpg"] == 2  # a timeout is
    hits_before = dict(_Handler.hits)
    again = build(tmp_path, f"[{{urls: {urls}}}]", *overrides)
    assert again.counts["kept"] == 2
    assert _Handler.hits["/good.png"] == hits_before["/good.png"]  # cached: not downloaded twice
    assert _Handler.hits["/good2.jpg"] == hits_before["/good2.jpg"]


def test_missing_url_list_is_a_one_line_error(tmp_path):
    with pytest.raises(SourceError, match=r"urls '.*no-list.txt': file not found"):
        build(tmp_path, f"[{{urls: {tmp_path / 'no-list.txt'}}}]")


def test_sources_mix_in_one_run(tmp_path, hub_copies, server):
    folder = tmp_path / "in"
    folder.mkdir()
    scene(50).save(folder / "own.png")
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{server}/good.png\n")
    sources = (
        f"[{{folder: {folder}}}, {{hf: {hub_copies / 'saved'}, filter: {{artist: claude-monet}}}}, "
        f"{{urls: {urls}}}]"
    )
    result = build(tmp_path, sources)
    assert {r.kind for r in result.records if r.status == "kept"} == {"folder", "hf", "urls"}
    assert result.counts["kept"] == 5


def test_output_inside_a_source_folder_is_not_read_back(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    scene(1).save(src / "a.png")
    scene(2).save(src / "b.png")
    config = load_config(
        PROJECT_CONFIGS / "demo.yaml",
        [
            "artist=tester",
            f"data.sources=[{{folder: {src}}}]",
            f"output_dir={src / 'run'}",
            "data.min_side_px=48",
        ],
    )
    build_dataset(config, progress=False)
    again = build_dataset(config, progress=False)
    assert len(again.records) == 2 and all(r.status == "kept" for r in again.records)
