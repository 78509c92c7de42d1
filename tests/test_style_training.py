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
