"""What training leaves in runs/<artist>/lora/ for sharing: both LoRA layouts, the embedding, the same
metadata in every file, samples and a Hub model card that parses back (a tiny 2-step run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import train_config, train_in_process, write_dataset

from infer.bases.resolve import load_img2img_pipeline
from infer.lora.files import read_lora_metadata
from infer.lora.metadata import REQUIRED_KEYS
from oeuvre.paths import RunPaths

TOKEN = "<demo-artist>"


@pytest.fixture(scope="module")
def trained(tiny_bases, tmp_path_factory):
    """One tiny SD 1.5 run (2 steps, pivotal tuning on, as in the demo): its lora/ folder."""

    out = tmp_path_factory.mktemp("run")
    write_dataset(out / "dataset", TOKEN)
    train_in_process(train_config(out, tiny_bases["sd15"], "train.max_train_steps=2", "train.lr=5e-2"))
    return RunPaths(out).lora


def test_run_folder_holds_both_layouts_embedding_card_and_samples(trained):
    names = sorted(p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "demo.kohya.safetensors",
        "demo.safetensors",
        "demo_emb.safetensors",
        "samples/step-000002.png",
    ]


@pytest.mark.parametrize("name", ["demo.safetensors", "demo.kohya.safetensors", "demo_emb.safetensors"])
def test_every_file_carries_the_full_metadata(trained, name):
    metadata = read_lora_metadata(trained / name)
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    assert not missing
    assert metadata["oeuvre.trigger_token"] == TOKEN and metadata["oeuvre.arch"] == "sd15"
    assert metadata["modelspec.trigger_phrase"] == TOKEN
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("4", "4.0")
    assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_num_train_images"] == "4"
    assert json.loads(metadata["oeuvre.config"])["train"]["max_train_steps"] == 2
    assert len(metadata["oeuvre.dataset_sha256"]) == 64
    assert json.loads(metadata["ss_tag_frequency"]) == {"demo": {f"a painting in the style of {TOKEN}": 4}}


def test_sshs_hashes_are_kohyas_hash_of_each_files_tensor_bytes(trained):
    import hashlib

    from safetensors.torch import load_file, save

    for name in ("demo.safetensors", "demo.kohya.safetensors"):
        metadata = read_lora_metadata(trained / name)
        ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
        data = save(load_file(trained / name), metadata=ss_only)
        body = data[8 + int.from_bytes(data[:8], "little") :]
        assert metadata["sshs_model_hash"] == hashlib.sha256(body).hexdigest(), name


def test_base_model_in_metadata_loads_and_both_layouts_give_the_same_image(trained):
    base = read_lora_metadata(trained / "demo.safetensors")["oeuvre.base_model"]
    pipe = load_img2img_pipeline(base)  # absolute path to the local base: loads from anywhere

    def image():
        return pipe(
            f"a harbour, {TOKEN}",
            image=Image.new("RGB", (64, 64), (90, 120, 160)),
            strength=0.8,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images[0]

    plain = image()
    pipe.load_lora_weights(str(trained / "demo.safetensors"))
    from_diffusers = image()
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(trained / "demo.kohya.safetensors"))
    from_kohya = image()
    assert np.abs(from_kohya - from_diffusers).max() <= 1e-5
    assert np.abs(from_diffusers - plain).max() > 0  # a 2-step LoRA is small, but not nothing


def test_model_card_header_parses_with_huggingface_hub(trained):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    card = ModelCard.load(trained / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] and data["instance_prompt"] == TOKEN
    assert {"lora", "stable-diffusion", "diffusers", "text-to-image"} <= set(data["tags"])
    assert data["widget"][0]["output"]["url"] == "samples/step-000002.png"
    assert metadata_load(trained / "README.md")["license"] == "other"
    for needed in ("load_lora_weights", "<lora:demo:", "LoraLoader", "## Limitations", "## Dataset", TOKEN):
        assert needed in card.text, needed


def test_embedding_file_is_in_the_a1111_comfyui_layout(trained):
    from safetensors.torch import load_file

    tensors = load_file(trained / "demo_emb.safetensors")
    assert list(tensors) == ["emb_params"] and tuple(tensors["emb_params"].shape) == (2, 32)
    metadata = read_lora_metadata(trained / "demo_emb.safetensors")
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/textual-inversion"
    assert metadata["oeuvre.format"] == "embedding"
