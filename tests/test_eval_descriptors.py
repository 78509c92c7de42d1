"""Style descriptors: weights-free separates styles; learned ones fall back when weights are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.synth import paint_artist
from infer.descriptors import WEIGHTS_FREE, WeightsFree, load_descriptor

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _split(paths: list[Path], n_holdout: int) -> tuple[list, list]:
    images = [Image.open(p).convert("RGB") for p in paths]
    return images[:-n_holdout], images[-n_holdout:]


def test_weights_free_descriptor_separates_the_synthetic_styles_on_every_holdout_image(tmp_path):
    descriptor = WeightsFree()
    train, holdout = {}, {}
    for style in ("swirl", "wash"):
        paths = paint_artist(tmp_path / style, style, n=10, seed=3, size_px=64)
        train_images, holdout_images = _split(sorted(paths), 3)
        train[style], holdout[style] = descriptor.embed(train_images), descriptor.embed(holdout_images)
    for style, other in (("swirl", "wash"), ("wash", "swirl")):
        own = (holdout[style] @ train[style].T).mean(axis=1)
        foreign = (holdout[style] @ train[other].T).mean(axis=1)
        assert np.all(own > foreign), (style, own, foreign)


def test_descriptor_vectors_are_unit_length_and_deterministic(tmp_path):
    image = Image.open(paint_artist(tmp_path, "swirl", n=1, seed=0, size_px=64)[0])
    first, second = WeightsFree().embed([image]), WeightsFree().embed([image])
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, second)


def test_missing_clip_weights_fall_back_to_weights_free_and_say_so(tmp_path):
    descriptor = load_descriptor(f"clip:{tmp_path / 'no-such-clip'}")
    assert descriptor.name == WEIGHTS_FREE
    assert "no-such-clip" in descriptor.note and "fell back" in descriptor.note


def test_uncached_clip_hub_id_falls_back_without_downloading(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    descriptor = load_descriptor("clip:nobody/not-a-cached-clip", allow_download=True)
    assert descriptor.name == WEIGHTS_FREE and "not-a-cached-clip" in descriptor.note


def test_csd_pickle_checkpoint_is_refused_by_name(tmp_path):
    pickle = tmp_path / "checkpoint.pth"
    pickle.write_bytes(b"not loaded")
    descriptor = load_descriptor(f"csd:{pickle}")
    assert descriptor.name == WEIGHTS_FREE and ".safetensors" in descriptor.note


def test_unknown_descriptor_kind_is_an_error():
    with pytest.raises(ValueError, match="expected weights-free"):
        load_descriptor("dino:whatever")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is absent")
def test_van_gogh_holdout_is_nearer_van_gogh_training_than_other_artists():
    """Each van Gogh work held out in turn: its mean similarity to the other van Gogh works beats its mean
    similarity to the other artists' works. The smallest margin is printed (pytest -s) for the report."""
    paintings = FIXTURES / "paintings"
    van_gogh = sorted((paintings / "vangogh").glob("*.jpg"))
    others = sorted(p for p in paintings.glob("*/*.jpg") if p.parent.name != "vangogh")
    assert len(van_gogh) >= 3 and others
    descriptor = WeightsFree()
    vectors = {p: descriptor.embed_one(Image.open(p)) for p in van_gogh + others}
    margins = {}
    for held_out in van_gogh:
        own = np.mean([vectors[held_out] @ vectors[p] for p in van_gogh if p != held_out])
        foreign = np.mean([vectors[held_out] @ vectors[p] for p in others])
        margins[held_out.name] = float(own - foreign)
    print(f"van Gogh margins (weights-free): {margins}; smallest {min(margins.values()):.3f}")
    assert min(margins.values()) > 0, margins
