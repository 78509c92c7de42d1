"""The artist database: index beside the dataset, nearest works in order, `python -m infer nearest`."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infer.works.descriptors import l2_normalise
from infer.works.retrieval import ArtistIndex, load_works
from oeuvre.inputs import InputError


def _write_split(dataset: Path, split: str, images: dict[str, Image.Image], titles: dict | None = None):
    folder = dataset / split
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        (folder / name).write_bytes(buffer.getvalue())
        rows.append({"file_name": name, "text": f"{name} caption", "title": (titles or {}).get(name)})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _grey(level: int) -> Image.Image:
    return Image.new("RGB", (16, 16), (level, level, level))


@dataclass
class Brightness:
    """A known descriptor: the angle of an image's brightness, so the right order is obvious."""

    name: str = "brightness"
    note: str = ""
    version: str = "1"
    calls: int = 0

    def embed(self, images):
        self.calls += len(images)
        levels = np.array([np.asarray(i.convert("L"), np.float32).mean() / 255 for i in images])
        return l2_normalise(np.stack([np.cos(levels * np.pi / 2), np.sin(levels * np.pi / 2)], axis=1))


@pytest.fixture
def greys(tmp_path) -> Path:
    dataset = tmp_path / "dataset"
    _write_split(dataset, "train", {f"g{v:03d}.png": _grey(v) for v in (0, 60, 120, 250)})
    _write_split(dataset, "holdout", {"g180.png": _grey(180)}, titles={"g180.png": "Grey at Dusk"})
    return dataset


def test_nearest_works_come_back_in_order_of_similarity(greys):
    index = ArtistIndex(greys, Brightness())
    found = index.nearest(Brightness().embed([_grey(130)]), k=5)[0]
    assert [w.path.name for w, _ in found] == ["g120.png", "g180.png", "g060.png", "g250.png", "g000.png"]
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def test_nearest_can_be_limited_to_one_split(greys):
    index = ArtistIndex(greys, Brightness())
    found = index.nearest(Brightness().embed([_grey(130)]), k=5, split="holdout")[0]
    assert [w.id for w, _ in found] == ["holdout/g180.png"] and found[0][0].label == "Grey at Dusk"


def test_index_is_saved_beside_the_dataset_and_reused(greys):
    first = ArtistIndex(greys, Brightness())
    matrix, ids = first.files
    assert matrix.parent == greys / "index" and matrix.suffix == ".safetensors"
    assert json.loads(ids.read_text())["ids"] == [w.id for w in load_works(greys)]
    descriptor = Brightness()
    second = ArtistIndex(greys, descriptor)
    assert first.built and not second.built and descriptor.calls == 0
    assert np.allclose(first.vectors, second.vectors)


def test_index_is_rebuilt_when_the_works_change(greys):
    ArtistIndex(greys, Brightness())
    _write_split(greys, "holdout", {"g200.png": _grey(200)})
    again = ArtistIndex(greys, Brightness())
    assert again.built and "holdout/g200.png" in [w.id for w in again.works]


def test_index_is_rebuilt_when_the_descriptor_version_changes(greys):
    ArtistIndex(greys, Brightness())
    again = ArtistIndex(greys, Brightness(version="2"))
    assert again.built


def test_dataset_without_works_is_an_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="no curated works"):
        ArtistIndex(tmp_path, Brightness())


def test_nearest_command_prints_the_works_and_writes_a_contact_sheet(tmp_path, run_cli):
    from data.synth import paint_artist

    run = tmp_path / "run"
    swirl = [Image.open(p) for p in paint_artist(tmp_path / "s", "swirl", n=3, seed=0, size_px=64)]
    wash = [Image.open(p) for p in paint_artist(tmp_path / "w", "wash", n=3, seed=0, size_px=64)]
    _write_split(run / "dataset", "train", {f"swirl{i}.png": im for i, im in enumerate(swirl[:2])})
    _write_split(run / "dataset", "holdout", {f"wash{i}.png": im for i, im in enumerate(wash[:2])})
    query = tmp_path / "query.png"
    wash[2].save(query)
    result = run_cli("infer", "nearest", query, "--run", run, "-k", "3")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed[:2] == ["holdout/wash0.png", "holdout/wash1.png"] or listed[:2] == [
        "holdout/wash1.png",
        "holdout/wash0.png",
    ]
    with Image.open(run / "report" / "nearest.png") as sheet:
        assert sheet.width > 3 * 128


def test_nearest_lists_the_work_a_query_copies_first_marked_as_a_copy(tmp_path, run_cli):
    from data.synth import paint_artist

    run = tmp_path / "run"
    works = [Image.open(p) for p in paint_artist(tmp_path / "s", "swirl", n=4, seed=2, size_px=192)]
    _write_split(run / "dataset", "train", {f"swirl{i}.png": im for i, im in enumerate(works[:3])})
    _write_split(run / "dataset", "holdout", {"swirl3.png": works[3]})
    query = tmp_path / "query.jpg"
    works[1].crop((30, 20, 180, 170)).resize((120, 120)).save(query, quality=60)  # cropped, shrunk, JPEG
    result = run_cli("infer", "nearest", query, "--run", run, "-k", "3")
    assert result.returncode == 0, result.stderr
    listed = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed[0][:2] == ["COPY", "train/swirl1.png"] and len(listed) == 3
    assert sum(row[0] == "COPY" for row in listed) == 1
