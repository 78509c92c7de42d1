"""Style descriptors: weights-free separates styles; learned ones fall back when weights are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.synth import paint_artist
from infer.works.descriptors import WEIGHTS_FREE, WeightsFree, load_descriptor

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
    assert descriptor.name == WEIGHTS_FREE and "CSD weights must be .safetensors" in descriptor.note


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


def _tiny_clip(folder: Path) -> Path:
    import transformers
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    processor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_clip_descriptor_from_a_local_folder_gives_unit_projected_embeddings(tmp_path):
    descriptor = load_descriptor(f"clip:{_tiny_clip(tmp_path / 'clip')}")
    assert descriptor.name.startswith("clip:") and not descriptor.note
    vectors = descriptor.embed([Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 30))])
    assert vectors.shape == (2, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _openai_vit_state(width: int = 64, layers: int = 1, patch: int = 8, grid: int = 2) -> dict:
    """Random tensors in CSD's checkpoint layout (OpenAI CLIP ViT under backbone.*, then the heads)."""
    import torch

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    state = {
        "backbone.conv1.weight": rand(width, 3, patch, patch),
        "backbone.class_embedding": rand(width),
        "backbone.positional_embedding": rand(grid * grid + 1, width),
        "backbone.ln_pre.weight": torch.ones(width),
        "backbone.ln_pre.bias": torch.zeros(width),
        "backbone.ln_post.weight": torch.ones(width),
        "backbone.ln_post.bias": torch.zeros(width),
        "backbone.proj": rand(width, 16),
        "last_layer_style": rand(16, 8),
        "last_layer_content": rand(16, 8),
    }
    for i in range(layers):
        p = f"backbone.transformer.resblocks.{i}."
        state |= {
            p + "attn.in_proj_weight": rand(3 * width, width),
            p + "attn.in_proj_bias": rand(3 * width),
            p + "attn.out_proj.weight": rand(width, width),
            p + "attn.out_proj.bias": rand(width),
            p + "ln_1.weight": torch.ones(width),
            p + "ln_1.bias": torch.zeros(width),
            p + "ln_2.weight": torch.ones(width),
            p + "ln_2.bias": torch.zeros(width),
            p + "mlp.c_fc.weight": rand(4 * width, width),
            p + "mlp.c_fc.bias": rand(4 * width),
            p + "mlp.c_proj.weight": rand(width, 4 * width),
            p + "mlp.c_proj.bias": rand(width),
        }
    return state


def test_csd_checkpoint_converted_with_weights_only_gives_style_embeddings(tmp_path):
    import torch

    from infer.works.descriptors import convert_csd_checkpoint

    torch.save(
        {"model_state_dict": {f"module.{k}": v for k, v in _openai_vit_state().items()}}, tmp_path / "c.pth"
    )
    converted = convert_csd_checkpoint(tmp_path / "c.pth", tmp_path / "csd.safetensors")
    descriptor = load_descriptor(f"csd:{converted}")
    assert descriptor.name == "csd:csd.safetensors" and not descriptor.note
    vectors = descriptor.embed([Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 30))])
    assert vectors.shape == (2, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
