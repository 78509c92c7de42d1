"""Curation rules, one per test: decoding, modes, sizes, duplicates, captions, holdout, re-runs."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import curate as curate_module
from data.build import build_dataset
from data.decode import Rejected, decode_image
from oeuvre.config import PROJECT_CONFIGS, load_config
from oeuvre.phash import hamming, phash


def scene(seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    """A distinct smooth picture per seed (random low-frequency blobs), so pHashes differ."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
    return Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)


def save(image: Image.Image, path: Path, fmt: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path


def config_for(tmp_path: Path, *overrides: str, folder: Path | None = None):
    sources = f"data.sources=[{{folder: {folder or tmp_path / 'in'}}}]"
    return load_config(
        PROJECT_CONFIGS / "demo.yaml",
        ["artist=tester", sources, f"output_dir={tmp_path / 'out'}", "data.min_side_px=48", *overrides],
    )


def build(tmp_path: Path, *overrides: str, folder: Path | None = None):
    return build_dataset(config_for(tmp_path, *overrides, folder=folder), progress=False)


def by_name(result) -> dict[str, object]:
    return {Path(r.source).name: r for r in result.records}


def test_decode_converts_every_mode_to_rgb_and_composites_alpha_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    cases = {
        "RGBA": rgba,
        "LA": Image.new("LA", (8, 8), (0, 0)),
        "P": Image.new("P", (8, 8), 3),
        "CMYK": Image.new("CMYK", (8, 8), (0, 255, 0, 0)),
        "I;16": Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)),
        "L": Image.new("L", (8, 8), 7),
    }
    for mode, image in cases.items():
        buffer = io.BytesIO()
        image.save(buffer, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
        decoded = decode_image(buffer.getvalue(), 10_000)
        assert decoded.image.mode == "RGB", mode
    transparent = io.BytesIO()
    rgba.save(transparent, "PNG")
    assert decode_image(transparent.getvalue(), 10_000).image.getpixel((0, 0)) == (255, 255, 255)
    sixteen = io.BytesIO()
    cases["I;16"].save(sixteen, "PNG")
    assert decode_image(sixteen.getvalue(), 10_000).image.getpixel((0, 0)) == (255, 255, 255)


def test_decode_applies_exif_orientation_and_takes_first_frame():
    wide = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    wide.save(buffer, "JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue(), 10_000).image.size == (20, 40)
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(gif.getvalue(), 10_000)
    assert decoded.frames == 2
    red, green, _ = decoded.image.getpixel((5, 5))
    assert red > 200 and green < 50


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>not found</body></html>", "not_an_image"),
        (b"plain text pretending to be a picture", "not_an_image"),
    ],
)
def test_decode_rejects_non_images_with_a_reason(data, code):
    with pytest.raises(Rejected) as caught:
        decode_image(data, 10_000)
    assert caught.value.code == code


def test_decode_rejects_truncated_files_and_decompression_bombs():
    buffer = io.BytesIO()
    scene(1, (64, 64)).save(buffer, "JPEG")
    with pytest.raises(Rejected) as truncated:
        decode_image(buffer.getvalue()[: len(buffer.getvalue()) // 2], 10_000)
    assert truncated.value.code == "truncated"
    with pytest.raises(Rejected) as bomb:
        decode_image(buffer.getvalue(), 64 * 64 - 1)
    assert bomb.value.code == "too_many_pixels" and "4096" in bomb.value.message


def test_phash_survives_reencode_resize_and_colour_shift_but_separates_different_works():
    original = scene(3, (128, 96))
    base = phash(original)
    buffer = io.BytesIO()
    original.save(buffer, "JPEG", quality=40)
    shifted = Image.fromarray(
        np.clip(np.asarray(original).astype(int) + [20, 0, -10], 0, 255).astype(np.uint8)
    )
    assert hamming(base, phash(Image.open(buffer))) <= 2
    assert hamming(base, phash(original.resize((64, 48)))) <= 2
    assert hamming(base, phash(shifted)) <= 4
    assert min(hamming(base, phash(scene(s, (128, 96)))) for s in range(10, 20)) > 10


def test_folder_curation_rejects_each_bad_file_with_its_reason_and_keeps_the_rest(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        save(scene(i), src / "sub" / f"good{i}.JPG")
    save(scene(10, (30, 30)), src / "tiny.png")
    save(scene(11, (200, 50)), src / "banner.png")
    (src / "html.jpg").write_bytes(b"<html><body>oops</body></html>")
    (src / "zero.png").write_bytes(b"")
    data = (src / "sub" / "good0.JPG").read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) // 2])
    (src / "notes.pdf").write_bytes(b"%PDF-1.4")
    result = build(tmp_path)
    records = by_name(result)
    expected = {
        "tiny.png": "too_small",
        "banner.png": "aspect_ratio",
        "html.jpg": "not_an_image",
        "zero.png": "empty",
        "cut.jpg": "truncated",
        "notes.pdf": "unsupported_type",
    }
    for name, code in expected.items():
        assert records[name].status == "rejected" and records[name].code == code, name
        assert records[name].reason
    assert sorted(n for n, r in records.items() if r.status == "kept") == [
        "good0.JPG",
        "good1.JPG",
        "good2.JPG",
    ]
    report = json.loads((result.dataset_dir / "report.json").read_text())
    assert report["reasons"]["too_small"] == 1 and report["counts"]["kept"] == 3
    assert {item["source"] for item in report["items"]} == {r.source for r in result.records}


def test_exact_and_near_duplicates_keep_the_largest_then_earliest_copy(tmp_path):
    src = tmp_path / "in"
    work = scene(5, (160, 120))
    save(work.resize((80, 60)), src / "a_small.png")
    save(work, src / "b_large.png")
    save(work, src / "c_large_reencoded.jpg", quality=60)
    (src / "d_exact_copy.png").write_bytes((src / "b_large.png").read_bytes())
    save(work.crop((8, 6, 152, 114)), src / "e_crop.png")
    shifted = np.clip(np.asarray(work).astype(int) + [15, 5, -10], 0, 255).astype(np.uint8)
    save(Image.fromarray(shifted), src / "f_colour_shift.png")
    save(scene(6, (160, 120)), src / "g_other_work.png")
    result = build(tmp_path)
    records = by_name(result)
    assert records["b_large.png"].status == "kept"
    assert records["g_other_work.png"].status == "kept"
    assert records["d_exact_copy.png"].code == "exact_duplicate"
    for name in ("a_small.png", "c_large_reencoded.jpg", "e_crop.png", "f_colour_shift.png"):
        assert records[name].status == "duplicate" and records[name].code == "near_duplicate", name
        assert result.records[records[name].duplicate_of].source.endswith("b_large.png"), name
    assert "b_large.png" in records["e_crop.png"].reason


def test_threshold_zero_keeps_near_duplicates(tmp_path):
    src = tmp_path / "in"
    work = scene(5, (160, 120))
    save(work, src / "a.png")
    save(work.crop((6, 0, 160, 120)), src / "b_crop.png")
    assert by_name(build(tmp_path))["b_crop.png"].code == "near_duplicate"
    result = build(tmp_path, "data.near_duplicate_max_distance=0")
    assert all(r.status == "kept" for r in result.records)


def test_sources_are_byte_identical_after_a_run(tmp_path):
    src = tmp_path / "in"
    save(scene(1), src / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    save(scene(2), src / "b.jpg", exif=exif.tobytes())
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(src / "c.png")
    (src / "c.txt").write_text("a caption")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*")}
    mtimes = {p: p.stat().st_mtime_ns for p in src.rglob("*")}
    build(tmp_path)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*")} == before
    assert {p: p.stat().st_mtime_ns for p in src.rglob("*")} == mtimes


def test_rerun_reuses_decisions_and_yields_the_same_dataset(tmp_path, monkeypatch):
    src = tmp_path / "in"
    for i in range(6):
        save(scene(i), src / f"w{i}.png")
    first = build(tmp_path)
    assert first.decoded == 6

    def snapshot():
        return {
            p.relative_to(first.dataset_dir): p.read_bytes()
            for p in first.dataset_dir.rglob("*")
            if p.is_file()
        }

    before = snapshot()
    calls = []
    real = curate_module.compute_facts
    monkeypatch.setattr(curate_module, "compute_facts", lambda *a, **k: calls.append(a) or real(*a, **k))
    second = build(tmp_path)
    assert calls == [] and second.decoded == 0
    assert snapshot() == before
    save(scene(99), src / "w_new.png")
    third = build(tmp_path)
    assert len(calls) == 1 and third.counts["kept"] == 7


def test_captions_use_template_sidecar_title_and_trigger_token(tmp_path):
    src = tmp_path / "in"
    save(scene(1), src / "a.png")
    (src / "a.txt").write_text("a river at dusk\n")
    save(scene(2), src / "b.png")
    result = build(tmp_path, 'data.caption_template="{title}, oil painting by {token}"')
    rows = [
        json.loads(line)
        for split in ("train", "holdout")
        for line in (result.dataset_dir / split / "metadata.jsonl").read_text().splitlines()
    ]
    texts = {Path(r["source"]).name: r["text"] for r in rows}
    assert texts["a.png"] == "a river at dusk, oil painting by <demo-artist>"
    assert texts["b.png"] == "oil painting by <demo-artist>"


def test_unknown_caption_field_is_a_clear_error(tmp_path):
    save(scene(1), tmp_path / "in" / "a.png")
    from data.captions import CaptionError

    with pytest.raises(CaptionError, match=r"unknown field \{painter\}"):
        build(tmp_path, 'data.caption_template="{painter} {token}"')


def test_auto_caption_with_a_missing_model_is_a_clear_error(tmp_path):
    """The auto-caption step is real transformers code; an unusable model id fails with one line."""
    save(scene(1), tmp_path / "in" / "a.png")
    from data.captions import CaptionError

    missing = tmp_path / "no-blip-here"
    with pytest.raises(CaptionError, match=r"data.auto_caption_model '.*no-blip-here'.*cannot load a BLIP"):
        build(tmp_path, "data.auto_caption=true", f"data.auto_caption_model={missing}")
