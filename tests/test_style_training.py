"""Style training: output preservation, block presets and masked loss, each on the tiny bases."""

from __future__ import annotations

import pytest
import torch
from train_helpers import reset_accelerate, train_config, write_dataset

from oeuvre.paths import RunPaths
from train.batches import make_batch
from train.buckets import make_buckets
from train.images import ArtistImages
from train.loss import timestep_weights
from train.models import add_lora_adapters, load_components
from train.preservation import preservation_captions
from train.recipe import Step, make_optimizer, prompt_encoder, training_step

TOKEN = "<demo-artist>"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


@pytest.fixture
def run_dir(tmp_path):
    write_dataset(tmp_path / "dataset", TOKEN)
    return tmp_path


def make_step(config):
    parts = load_components(config.base_model)
    add_lora_adapters(parts, config.train)
    images = ArtistImages.from_split(
        RunPaths(config.output_dir).dataset, "train", make_buckets(config.train.resolution_px), ""
    )
    weights = timestep_weights(config.train, parts.noise_scheduler.config.num_train_timesteps)
    encode = prompt_encoder(parts, torch.device("cpu"))
    step = Step(parts, config.train, encode, weights, torch.device("cpu"), torch.float32, None, TOKEN)
    return parts, images, step


def class_prompt_gap(parts, step, prompt: str) -> float:
    """How far the LoRA's prediction for a prompt without the trigger is from the base's (fixed noise)."""
    from train.validation import lora_off

    generator = torch.Generator().manual_seed(7)
    noisy = torch.randn((4, 4, 8, 8), generator=generator)
    timesteps = torch.tensor([100, 300, 600, 900])
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 4)

    def predict():
        embeddings, pooled = step.encode([prompt] * 4)
        added = None if pooled is None else {"text_embeds": pooled, "time_ids": time_ids}
        return parts.unet(noisy, timesteps, embeddings, added_cond_kwargs=added).sample

    with torch.no_grad():
        styled = predict()
        with lora_off(parts):
            base = predict()
    return float((styled - base).pow(2).mean())


# -- output preservation ---------------------------------------------------------------------------


def test_preservation_prompt_swaps_the_trigger_for_the_class_words():
    captions = [f"a painting in the style of {TOKEN}", "", "no trigger here"]
    assert preservation_captions(captions, TOKEN, "a painter") == [
        "a painting in the style of a painter",
        "",
        "no trigger here",
    ]


def test_preservation_weight_zero_is_todays_loss_and_builds_no_target(tiny_bases, run_dir, monkeypatch):
    from train import preservation

    config = train_config(run_dir, tiny_bases["sd15"], "train.pivotal_tuning=false")
    parts, images, step = make_step(config)
    batch = make_batch([0, 1], images, None, config.train, None, torch.Generator().manual_seed(0))
    with torch.no_grad():
        today = training_step(batch, step, torch.Generator().manual_seed(1))
        monkeypatch.setattr(preservation.Preservation, "make", None)  # weight 0 must not call it
        off = train_config(run_dir, tiny_bases["sd15"], "train.preservation_weight=0")
        step.cfg = off.train
        assert torch.equal(training_step(batch, step, torch.Generator().manual_seed(1)), today)


def test_preservation_target_is_the_lora_free_prediction(tiny_bases, run_dir):
    """With lora_B still zero the LoRA predicts what the base does: the preservation term is zero."""
    config = train_config(run_dir, tiny_bases["sd15"], "train.preservation_weight=1.0")
    parts, images, step = make_step(config)
    batch = make_batch([0], images, None, config.train, None, torch.Generator().manual_seed(0))
    with torch.no_grad():
        on = training_step(batch, step, torch.Generator().manual_seed(1))
        step.cfg = train_config(run_dir, tiny_bases["sd15"]).train
        off = training_step(batch, step, torch.Generator().manual_seed(1))
        assert torch.allclose(on, off, rtol=1e-5, atol=1e-7)
        for name, parameter in parts.unet.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.02)
        step.cfg = config.train
        on = training_step(batch, step, torch.Generator().manual_seed(1))
        step.cfg = train_config(run_dir, tiny_bases["sd15"]).train
        assert on > training_step(batch, step, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_preservation_keeps_the_class_prompt_at_the_base(tiny_bases, run_dir, arch):
    gaps = {}
    for weight in (0.0, 3.0):
        torch.manual_seed(0)
        config = train_config(
            run_dir,
            tiny_bases[arch],
            "train.lr=2e-2",
            "train.snr_gamma=null",
            "train.pivotal_tuning=false",
            f"train.preservation_weight={weight}",
        )
        parts, images, step = make_step(config)
        optimizer = make_optimizer(config.train, parts, [], [])
        for number in range(8):
            generator = torch.Generator().manual_seed(0)
            batch = make_batch([number % 4], images, None, config.train, None, generator)
            loss = training_step(batch, step, torch.Generator().manual_seed(number))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        gaps[weight] = class_prompt_gap(parts, step, "a painting in the style of a painter")
    assert gaps[3.0] < 0.5 * gaps[0.0], gaps


def test_a_run_with_preservation_accumulation_and_text_encoder_lora_trains(tiny_bases, run_dir):
    from train_helpers import train_in_process

    config = train_config(
        run_dir,
        tiny_bases["sd15"],
        "train.max_train_steps=2",
        "train.gradient_accumulation_steps=2",
        "train.train_text_encoder=true",
        "train.preservation_weight=1.0",
    )
    assert train_in_process(config).is_file()


@pytest.mark.slow
def test_two_processes_train_with_preservation(tiny_bases, tmp_path):
    from train_helpers import launch

    write_dataset(tmp_path / "dataset", TOKEN)
    done = launch(tmp_path, tiny_bases["sd15"], "train.max_train_steps=2", "train.preservation_weight=1.0")
    assert done.returncode == 0, done.stderr[-3000:]


# -- block presets -----------------------------------------------------------------------------------


def lora_blocks_of(unet) -> set[str]:
    return {
        name.split(".attn")[0].rsplit(".transformer_blocks", 1)[0]
        for name, _ in unet.named_modules()
        if name.endswith(".lora_A")
    }


@pytest.mark.parametrize(
    ("arch", "overrides", "expected"),
    [
        ("sdxl", ["train.lora_blocks=style"], {"up_blocks.0.attentions.1"}),
        ("sd15", ["train.lora_blocks=style"], {"up_blocks.0.attentions.0", "up_blocks.0.attentions.1"}),
        (
            "sd15",
            ["train.lora_blocks=custom", "train.lora_block_patterns=['down_blocks.*']"],
            {"down_blocks.1.attentions.0"},
        ),
        ("sd15", [], None),
    ],
    ids=["sdxl-style", "sd15-style", "sd15-custom", "sd15-all"],
)
def test_adapters_land_only_on_the_chosen_blocks(tiny_bases, run_dir, arch, overrides, expected):
    config = train_config(run_dir, tiny_bases[arch], *overrides)
    parts = load_components(config.base_model)
    add_lora_adapters(parts, config.train)
    blocks = lora_blocks_of(parts.unet)
    if expected is None:  # all: the down, mid and up attentions alike
        assert any(b.startswith("down_blocks") for b in blocks) and "mid_block.attentions.0" in blocks
        assert any(b.startswith("up_blocks") for b in blocks)
    else:
        assert blocks == expected


def test_block_patterns_that_match_nothing_name_the_blocks_there_are(tiny_bases, run_dir):
    from oeuvre.errors import BaseModelError

    config = train_config(
        run_dir, tiny_bases["sd15"], "train.lora_blocks=custom", "train.lora_block_patterns=['up_blocks.7']"
    )
    parts = load_components(config.base_model)
    with pytest.raises(BaseModelError, match="up_blocks.0.attentions"):
        add_lora_adapters(parts, config.train)


def test_a_style_block_lora_converts_inspects_resizes_merges_and_loads(tiny_bases, run_dir):
    import numpy as np
    from lora_helpers import img2img_np
    from safetensors.torch import load_file
    from test_lora_kohya import A1111_UNET
    from train_helpers import train_in_process

    from infer.bases.resolve import load_img2img_pipeline
    from infer.lora.tools import inspect_file, load_lora, merge, resize, save_lora

    config = train_config(
        run_dir, tiny_bases["sdxl"], "train.max_train_steps=2", "train.lr=5e-2", "train.lora_blocks=style"
    )
    lora_file = train_in_process(config)
    kohya_file = lora_file.with_name("demo.kohya.safetensors")
    assert all(".up_blocks.0.attentions.1." in key for key in load_file(lora_file))
    kohya_keys = {key.partition(".")[0] for key in load_file(kohya_file)}
    assert kohya_keys and all(k.startswith("lora_unet_up_blocks_0_attentions_1_") for k in kohya_keys)
    assert all(A1111_UNET.fullmatch(k) for k in kohya_keys)
    back = save_lora(load_lora(kohya_file), run_dir / "back.safetensors", "diffusers")
    original, returned = load_lora(lora_file).components["unet"], load_lora(back).components["unet"]
    assert set(original.down) == set(returned.down)
    assert all(torch.equal(original.up[m], returned.up[m]) for m in original.down)
    report = inspect_file(kohya_file)
    assert report["targets"]["unet"]["modules"] == len(original.down)
    smaller, _ = resize(load_lora(lora_file), 2)
    assert {m: smaller.components["unet"].rank(m) for m in original.down} == dict.fromkeys(original.down, 2)
    merged = merge(load_lora(lora_file), load_lora(kohya_file), (0.5, 0.5))
    assert set(merged.components["unet"].down) == set(original.down)
    pipe = load_img2img_pipeline(str(tiny_bases["sdxl"]))
    plain = img2img_np(pipe, "a harbour")
    pipe.load_lora_weights(str(kohya_file))  # the A1111/ComfyUI layout, through diffusers' converter
    assert np.abs(img2img_np(pipe, "a harbour") - plain).mean() > 1e-4
