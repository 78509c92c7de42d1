"""Training checkpoints as LoRA files (`python -m infer evaluate RUN --checkpoints`), for every kind of
LoRA training writes: UNet only, with text encoders (SD 1.5's one, SDXL's two), DoRA."""

from __future__ import annotations

import pytest
import torch
from lora_helpers import img2img_np
from safetensors.torch import load_file
from train_helpers import reset_accelerate, train_config, write_dataset

from infer.bases.resolve import load_img2img_pipeline
from infer.lora.checkpoints import checkpoint_as_lora, checkpoint_steps, checkpoint_tensors
from infer.lora.files import find_run_lora
from oeuvre.paths import CHECKPOINT_TRAINABLE_FILE
from train import recipe

TOKEN = "<demo-artist>"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("sd15", ["train.train_text_encoder=true"]),
        ("sdxl", ["train.train_text_encoder=true"]),
        ("sd15", ["train.use_dora=true"]),
        ("sdxl", ["train.use_dora=true", "train.train_text_encoder=true"]),
    ],
    ids=["sd15-text-encoder", "sdxl-both-text-encoders", "sd15-dora", "sdxl-dora-text-encoders"],
)
def test_checkpoint_becomes_a_lora_that_loads_and_changes_the_image(tiny_bases, tmp_path, arch, options):
    write_dataset(tmp_path / "dataset", TOKEN)
    settings = ["train.max_train_steps=2", "train.checkpoint_every=1", "train.lr=5e-2", *options]
    recipe.run(train_config(tmp_path, tiny_bases[arch], *settings))
    lora_file, embedding_file = find_run_lora(tmp_path)
    [(step, folder)] = checkpoint_steps(tmp_path)
    assert step == 1
    lora, embedding = checkpoint_as_lora(folder, lora_file, embedding_file, tmp_path / "eval")
    final, converted = load_file(lora_file), load_file(lora)
    assert converted.keys() == final.keys()
    components = {key.partition(".")[0] for key in final}
    encoders = {"text_encoder"} | ({"text_encoder_2"} if arch == "sdxl" else set())
    assert components == {"unet"} | (encoders if "train.train_text_encoder=true" in options else set())
    if "train.use_dora=true" in options:
        assert any("lora_magnitude_vector" in key for key in final)
    # The checkpoint's own tensors, by component and kind, not the final step's.
    found = checkpoint_tensors(load_file(folder / CHECKPOINT_TRAINABLE_FILE))
    assert {kind for _, _, kind in found} >= {"down", "up"}
    assert sorted(t.sum().item() for t in found.values()) == pytest.approx(
        sorted(t.sum().item() for t in converted.values())
    )
    assert any(not torch.equal(converted[k], final[k]) for k in final if ".up." in k or "lora_B" in k)
    pipe = load_img2img_pipeline(str(tiny_bases[arch]))
    plain = img2img_np(pipe)
    pipe.load_lora_weights(str(lora))
    assert abs(img2img_np(pipe) - plain).mean() > 1e-4
    assert embedding is not None and load_file(embedding).keys() == load_file(embedding_file).keys()
