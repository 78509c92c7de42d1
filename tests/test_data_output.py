"""The dataset as others read it: imagefolder splits, metadata columns, holdout rule, report, card, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from data.build import NothingUsable, build_dataset
from data.load import load_curated
from data.split import choose_holdout, holdout_count, split_groups
from oeuvre.config import PROJECT_CONFIGS, load_config
from oeuvre.phash import from_hex, hamming

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
COLUMNS = {"file_name", "text", "source", "sha256", "width", "height", "phash", "title", "year", "genre"}


def scene(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)).resize(
        size, Image.Resampling.BICUBIC
    )


def config_for(tmp_path: Path, folder: Path, *overrides: str):
    return load_config(
        PROJECT_CONFIGS / "demo.yaml",
        [
            "artist=tester",
            f"data.sources=[{{folder: {folder}}}]",
            f"output_dir={tmp_path / 'out'}",
            "data.min_side_px=48",
            *overrides,
        ],
    )


@pytest.fixture
def works(tmp_path) -> Path:
    """Twelve distinct works, three of them with a resized and a cropped copy beside them."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        scene(i).save(src / f"work{i:02d}.png")
    for i in range(3):
        scene(i).resize((72, 60)).save(src / f"work{i:02d}_small.png")
        scene(i).crop((3, 3, 93, 77)).save(src / f"work{i:02d}_crop.png")  # 87 %: near-complete
    return src


def read_rows(split_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (split_dir / "metadata.jsonl").read_text().splitlines()]


def test_output_layout_columns_and_images(tmp_path, works):
    result = build_dataset(config_for(tmp_path, works), progress=False)
    root = result.dataset_dir
    assert {p.name for p in root.iterdir()} == {"train", "holdout", "report.json", "report.html", "README.md"}
    rows = {split: read_rows(root / split) for split in ("train", "holdout")}
    assert len(rows["train"]) + len(rows["holdout"]) == 12 and len(rows["holdout"]) == 1
    for split, split_rows in rows.items():
        for row in split_rows:
            assert set(row) >= COLUMNS, row
            assert "<demo-artist>" in row["text"]
            assert len(row["phash"]) == 16 and int(row["phash"], 16) >= 0
            with Image.open(root / split / row["file_name"]) as image:
                assert image.mode == "RGB" and image.size == (row["width"], row["height"])
            assert Path(row["source"]).is_file()


def test_imagefolder_loads_train_and_holdout(tmp_path, works):
    import datasets

    root = build_dataset(config_for(tmp_path, works), progress=False).dataset_dir
    cache = str(tmp_path / "hf-cache")
    both = load_curated(root, cache_dir=cache)
    assert set(both) == {"train", "holdout"}
    assert both["train"].num_rows == 11 and both["holdout"].num_rows == 1
    assert {"image", "text", "sha256", "phash", "source"} <= set(both["train"].column_names)
    assert both["holdout"][0]["image"].mode == "RGB"
    # The card's `configs:` header makes a plain load_dataset(<folder>) see both splits too ...
    assert set(datasets.load_dataset(str(root), cache_dir=cache)) == {"train", "holdout"}
    # ... while imagefolder with data_dir alone knows no split named "holdout": it finds only train.
    plain = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=cache)
    assert set(plain) == {"train"} and plain["train"].num_rows == 11


def test_holdout_never_splits_a_near_duplicate_group(tmp_path, works):
    for seed in range(4):
        result = build_dataset(
            config_for(tmp_path, works, f"seed={seed}", "data.holdout_fraction=0.3"), progress=False
        )
        train = read_rows(result.dataset_dir / "train")
        holdout = read_rows(result.dataset_dir / "holdout")
        assert len(holdout) == 4
        for held in holdout:
            assert all(hamming(from_hex(held["phash"]), from_hex(t["phash"])) > 6 for t in train)
        # every dropped copy sits on its work's side
        for record in result.records:
            if record.status == "duplicate":
                assert record.split == result.records[record.duplicate_of].split


def test_split_keeps_groups_whole_and_is_deterministic_from_the_seed():
    groups = [[0, 1, 2], [3], [4, 5], [6], [7], [8, 9], [10], [11]]
    keys = [f"work{g}" for g in range(len(groups))]
    for seed in range(20):
        sides = split_groups(groups, keys, 0.25, seed)
        for group in groups:
            assert len({sides[i] for i in group}) == 1
        assert sides == split_groups(groups, keys, 0.25, seed)
    assert len({frozenset(choose_holdout(keys, 0.25, s)) for s in range(20)}) > 1
    assert holdout_count(5, 0.1) == 1 and holdout_count(4, 0.1) == 0 and holdout_count(50, 0.1) == 5
    assert holdout_count(3, 0.9) == 2 and holdout_count(10, 0.0) == 0


def test_report_html_and_card(tmp_path, works):
    (works / "broken.jpg").write_bytes(b"not really a jpeg")
    root = build_dataset(config_for(tmp_path, works, "data.license=cc0-1.0"), progress=False).dataset_dir
    page = (root / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 12 + 6  # kept and duplicates have thumbnails
    assert "broken.jpg" in page and "not an image" in page
    card = (root / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "cc0-1.0" and header["size_categories"] == ["n<1K"]
    assert "art" in header["tags"]
    assert {f["split"] for f in header["configs"][0]["data_files"]} == {"train", "holdout"}
    assert "<demo-artist>" in card and "not_an_image | 1" in card


def test_cli_exact_interface_exits_zero_with_bad_inputs(tmp_path, works, run_cli):
    (works / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "cli-out"
    done = run_cli(
        "data",
        "configs/demo.yaml",
        "artist=painter",
        f"data.sources=[{{folder: {works}}}]",
        f"output_dir={out}",
    )
    assert done.returncode == 0, done.stderr
    assert "painter:" in done.stdout and "not_an_image 1" in done.stdout
    assert (out / "dataset" / "train" / "metadata.jsonl").is_file()
    assert (out / "dataset" / "holdout" / "metadata.jsonl").is_file()
    report = json.loads((out / "dataset" / "report.json").read_text())
    assert report["artist"] == "painter" and report["reasons"]["not_an_image"] == 1


def test_cli_fails_when_nothing_usable_and_counts_why(tmp_path, run_cli):
    src = tmp_path / "bad"
    src.mkdir()
    scene(1, (20, 20)).save(src / "tiny.png")
    (src / "fake.jpg").write_text("<html></html>")
    done = run_cli(
        "data", "configs/demo.yaml", f"data.sources=[{{folder: {src}}}]", f"output_dir={tmp_path / 'o'}"
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (
        "no usable images" in done.stderr and "not_an_image 1" in done.stderr and "too_small 1" in done.stderr
    )
    with pytest.raises(NothingUsable):
        build_dataset(config_for(tmp_path, src), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NothingUsable, match="no inputs found; empty sources: folder"):
        build_dataset(config_for(tmp_path, empty), progress=False)


def test_cli_missing_folder_is_one_line_nonzero(tmp_path, run_cli):
    done = run_cli(
        "data",
        "configs/demo.yaml",
        f"data.sources=[{{folder: {tmp_path / 'gone'}}}]",
        f"output_dir={tmp_path / 'o'}",
    )
    assert done.returncode != 0 and done.stderr.strip().startswith("error: data.sources folder")
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"real paintings not present at {FIXTURES}")
def test_real_paintings_follow_the_rules(tmp_path):
    src = tmp_path / "in"
    shutil.copytree(FIXTURES / "paintings", src / "paintings")
    shutil.copy(FIXTURES / "single_image_transfer" / "tubingen_starry_night.jpg", src)
    shutil.copy(FIXTURES / "photos" / "tubingen.png", src)
    starry = Image.open(FIXTURES / "paintings" / "vangogh" / "starry_night.jpg")
    starry.resize((512, 320)).save(src / "starry_small_copy.jpg", quality=70)
    w, h = starry.size
    starry.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95))).save(src / "starry_crop.jpg")
    starry.crop((int(w * 0.4), int(h * 0.3), w, h)).save(src / "starry_detail.jpg", quality=80)  # 42 %
    config = load_config(
        PROJECT_CONFIGS / "base.yaml",
        ["artist=vangogh", f"data.sources=[{{folder: {src}}}]", f"output_dir={tmp_path / 'out'}"],
    )
    result = build_dataset(config, progress=False)
    records = {Path(r.source).name: r for r in result.records}
    originals = [p.name for p in (FIXTURES / "paintings").rglob("*.jpg")]
    assert all(records[name].status == "kept" for name in originals), {
        n: records[n].reason for n in originals
    }
    assert records["great_wave_crop.jpg"].status == "kept"  # a crop of a work not in the set is its own work
    for copy in ("starry_small_copy.jpg", "starry_crop.jpg"):
        assert records[copy].code == "near_duplicate"
        assert result.records[records[copy].duplicate_of].source.endswith("starry_night.jpg")
    detail = records["starry_detail.jpg"]
    assert detail.status == "kept" and detail.split == records["starry_night.jpg"].split
    assert detail.group == records["starry_night.jpg"].index
    assert records["tubingen_starry_night.jpg"].code == "too_small"  # 320×240 < 256 px
    assert records["tubingen.png"].status == "kept"
    assert result.counts["holdout"] == 1


def test_a_detail_is_kept_grouped_with_its_work_and_lands_in_the_same_split(tmp_path):
    from data.synth import paint_artist

    src = tmp_path / "in"
    paths = paint_artist(src, "swirl", n=10, seed=4, size_px=256)
    for p in paths[:3]:  # a detail: 45 % of the area, off-centre, enlarged
        Image.open(p).crop((100, 40, 256, 226)).resize((234, 279)).save(src / f"{p.stem}_detail.png")
    for seed in range(3):
        result = build_dataset(
            config_for(tmp_path, src, f"seed={seed}", "data.holdout_fraction=0.3"), progress=False
        )
        records = {Path(r.source).name: r for r in result.records}
        for p in paths[:3]:
            detail, work = records[f"{p.stem}_detail.png"], records[p.name]
            assert detail.status == "kept" and detail.group == work.index, detail.group_reason
            assert detail.split == work.split and "detail of" in detail.group_reason
        assert {records[p.name].group for p in paths} == {records[p.name].index for p in paths}
        held = {r.group for r in result.records if r.status == "kept" and r.split == "holdout"}
        assert len(held) == 3  # 3 of the 10 works, each with its detail when it has one
    report = json.loads((result.dataset_dir / "report.json").read_text())
    assert len(report["groups"]) == 3 and all("detail of" in g["members"][0]["why"] for g in report["groups"])
    assert "Works with several images (3)" in (result.dataset_dir / "report.html").read_text()
