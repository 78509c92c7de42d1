"""Style training: output preservation, block presets and masked loss, each on the tiny bases."""

from __future__ import annotations

import pytest
import torch
from train_helpers import one_process, reset_accelerate, train_config, write_dataset

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
    import json

    from PIL import Image

    from infer.lora.tools import inspect_file
    from train.masks import mask_path

    first = json.loads((run_dir / "dataset" / "train" / "metadata.jsonl").read_text().splitlines()[0])
    mask_path(run_dir / "dataset", first["sha256"]).parent.mkdir()
    Image.new("L", (first["width"], first["height"]), 128).save(
        mask_path(run_dir / "dataset", first["sha256"])
    )
    lora_file = train_in_process(config)  # with the cache on (the demo's default): masks cached too
    style = inspect_file(lora_file)["style_training"]
    assert style == {
        "output_preservation": "weight 1.0, trigger -> 'a painter'",
        "lora_blocks": "all",
        "masked_loss": "1 of 4 works, floor 0.05",
    }
    card = (lora_file.parent / "README.md").read_text()
    assert "| output preservation | weight 1.0, trigger -> 'a painter' |" in card
    assert "| masked loss | 1 of 4 works, floor 0.05 |" in card


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
    assert report["style_training"]["lora_blocks"] == "up_blocks.0.attentions.1"
    assert "| LoRA blocks | up_blocks.0.attentions.1 |" in (lora_file.parent / "README.md").read_text()
    smaller, _ = resize(load_lora(lora_file), 2)
    assert {m: smaller.components["unet"].rank(m) for m in original.down} == dict.fromkeys(original.down, 2)
    merged = merge(load_lora(lora_file), load_lora(kohya_file), (0.5, 0.5))
    assert set(merged.components["unet"].down) == set(original.down)
    pipe = load_img2img_pipeline(str(tiny_bases["sdxl"]))
    plain = img2img_np(pipe, "a harbour")
    pipe.load_lora_weights(str(kohya_file))  # the A1111/ComfyUI layout, through diffusers' converter
    assert np.abs(img2img_np(pipe, "a harbour") - plain).mean() > 1e-4


# -- masked loss -------------------------------------------------------------------------------------

FRAME_PX = 8
FRAME_RGB = (20, 230, 40)  # a loud green frame around a warm painting


def framed_dataset(root, masked: bool, mask_value: int = 0):
    """One framed work (and the held-out one), with a mask that leaves the frame out if `masked`."""
    import json

    from PIL import Image, ImageDraw

    from train.masks import mask_path

    write_dataset(root, TOKEN, n_train=1)
    folder = root / "train"
    row = json.loads((folder / "metadata.jsonl").read_text())
    image = Image.open(folder / row["file_name"]).convert("RGB")
    draw = ImageDraw.Draw(image)
    for inset in range(FRAME_PX):
        draw.rectangle((inset, inset, image.width - 1 - inset, image.height - 1 - inset), outline=FRAME_RGB)
    image.save(folder / row["file_name"])
    import hashlib

    row["sha256"] = hashlib.sha256((folder / row["file_name"]).read_bytes()).hexdigest()
    (folder / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    if masked:
        mask = Image.new("L", image.size, 255)
        inner = (FRAME_PX, FRAME_PX, image.width - 1 - FRAME_PX, image.height - 1 - FRAME_PX)
        ImageDraw.Draw(mask).rectangle((0, 0, image.width, image.height), fill=mask_value)
        ImageDraw.Draw(mask).rectangle(inner, fill=255)
        path = mask_path(root, row["sha256"])
        path.parent.mkdir(exist_ok=True)
        mask.save(path)
    return root


def border_greenness(images) -> float:
    """Mean (G - (R + B) / 2) over the outer FRAME_PX pixels of each sample, 0..255."""
    import numpy as np

    values = []
    for image in images:
        pixels = np.asarray(image, np.float32)
        ring = np.ones(pixels.shape[:2], bool)
        ring[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = False
        green = pixels[..., 1] - (pixels[..., 0] + pixels[..., 2]) / 2
        values.append(float(green[ring].mean()))
    return float(np.mean(values))


def frame_and_inside_errors(parts, step, batch, seed: int) -> tuple[float, float]:
    """The UNet's squared error on the frame cells and on the inside, at the step's own latents, noise
    and timestep for `seed` (what training_step draws from the same generator)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from train.loss import make_noise, sample_timesteps

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dists = parts.vae.encode(batch.pixels).latent_dist.parameters
        latents = DiagonalGaussianDistribution(dists).sample(generator=generator)
        latents = latents * parts.vae.config.scaling_factor
        noise = make_noise(latents, 0.0, generator)
        timesteps = sample_timesteps(step.timestep_weights, 1, generator)
        embeddings, _ = step.encode(batch.captions)
        noisy = parts.noise_scheduler.add_noise(latents, noise, timesteps)
        error = (parts.unet(noisy, timesteps, embeddings).sample - noise).pow(2).mean(1)[0]
    frame = torch.ones(latents.shape[-2:], dtype=torch.bool)
    cells = FRAME_PX * latents.shape[-1] // 64
    frame[cells:-cells, cells:-cells] = False
    return float(error[frame].mean()), float(error[~frame].mean())


def test_an_all_ones_mask_is_the_unmasked_loss_exactly(tiny_bases, tmp_path):
    from train.batches import fill_latent_cache
    from train.cache import LatentCache

    framed_dataset(tmp_path / "dataset", masked=True, mask_value=255)  # the mask file is all ones
    config = train_config(tmp_path, tiny_bases["sd15"], "train.mask_floor_weight=0")
    parts, images, step = make_step(config)
    masked = make_batch([0], images, None, config.train, None, torch.Generator().manual_seed(0))
    assert masked.masks is not None and bool((masked.masks == 1).all())
    plain = train_config(tmp_path, tiny_bases["sd15"], "train.masked_loss=false").train
    unmasked = make_batch([0], images, None, plain, None, torch.Generator().manual_seed(0))
    assert unmasked.masks is None
    with torch.no_grad():
        a = training_step(masked, step, torch.Generator().manual_seed(1))
        b = training_step(unmasked, step, torch.Generator().manual_seed(1))
        assert torch.equal(a, b)
        cache = LatentCache(tmp_path / "cache", parts.vae)  # cached latents carry their masks
        fill_latent_cache(cache, images, None, parts.vae, one_process())
        cached = make_batch([0], images, None, config.train, cache, torch.Generator().manual_seed(0))
        assert cached.latent_dists is not None and cached.masks is not None
        assert torch.equal(training_step(cached, step, torch.Generator().manual_seed(1)), a)


def test_a_masked_frame_is_not_learnt_and_an_unmasked_one_is(tiny_bases, tmp_path):
    errors = {}
    for masked in (False, True):
        root = tmp_path / str(masked)
        framed_dataset(root / "dataset", masked)
        config = train_config(
            root,
            tiny_bases["sd15"],
            "train.lr=2e-2",
            "train.snr_gamma=null",
            "train.pivotal_tuning=false",
            "train.mask_floor_weight=0",
        )
        parts, images, step = make_step(config)
        optimizer = make_optimizer(config.train, parts, [], [])
        batch = make_batch([0], images, None, config.train, None, torch.Generator().manual_seed(0))
        assert (batch.masks is not None) == masked
        before = frame_and_inside_errors(parts, step, batch, 1)
        for _ in range(6):  # the same noise each step: the model fits exactly what the loss sees
            training_step(batch, step, torch.Generator().manual_seed(1)).backward()
            optimizer.step()
            optimizer.zero_grad()
        errors[masked] = (before, frame_and_inside_errors(parts, step, batch, 1))
    (frame_before, inside_before), (frame_plain, inside_plain) = errors[False]
    _, (frame_masked, inside_masked) = errors[True]
    assert frame_plain < 0.95 * frame_before, errors  # without the mask the frame is learnt
    assert frame_masked > 0.98 * frame_before, errors  # with it, not at all
    assert inside_masked < 0.95 * inside_before and inside_plain < 0.95 * inside_before, errors


# -- masks from curation -----------------------------------------------------------------------------


def test_curation_writes_masks_from_frames_sidecars_and_alpha_and_reports_them(tmp_path):
    import json

    import numpy as np
    from PIL import Image, ImageDraw
    from train_helpers import painted

    from data.build import build_dataset
    from data.masks import detect_frame
    from oeuvre.config import PROJECT_CONFIGS, load_config

    folder = tmp_path / "in"
    folder.mkdir()
    framed = painted(1, (96, 96))
    ImageDraw.Draw(framed).rectangle((0, 0, 95, 95), outline=FRAME_RGB, width=6)
    framed.save(folder / "framed.png")
    painted(2, (96, 96)).save(folder / "plain.png")
    painted(3, (96, 96)).save(folder / "signed.png")
    signature = Image.new("L", (96, 96), 255)
    ImageDraw.Draw(signature).rectangle((70, 80, 95, 95), fill=0)
    signature.save(folder / "signed.mask.png")  # a sidecar, not a work
    cutout = painted(4, (96, 96)).convert("RGBA")
    cutout.putalpha(
        Image.fromarray(np.where(np.arange(96)[None, :] < 20, 0, 255).repeat(96, 0).astype(np.uint8))
    )
    cutout.save(folder / "cutout.png")
    config = load_config(
        PROJECT_CONFIGS / "demo.yaml",
        [f"data.sources=[{{folder: {folder}}}]", f"output_dir={tmp_path / 'out'}", "data.min_side_px=48",
         "data.holdout_fraction=0", "data.detect_frames=true"],
    )  # fmt: skip
    result = build_dataset(config, progress=False)
    assert detect_frame(painted(2, (96, 96))) is None
    big = framed.resize((1920, 1920), Image.NEAREST)  # measured on a smaller copy, scaled back
    assert detect_frame(big) == (120, 120, 1800, 1800)
    report = json.loads((result.dataset_dir / "report.json").read_text())
    items = {item["source"].rsplit("/", 1)[-1]: item for item in report["items"]}
    assert set(items) == {"framed.png", "plain.png", "signed.png", "cutout.png"}
    assert items["framed.png"]["mask"] == {"from": ["frame"], "frame": [6, 6, 90, 90]}
    assert "mask" not in items["plain.png"]
    assert items["signed.png"]["mask"]["from"] == ["sidecar"]
    assert items["cutout.png"]["mask"]["from"] == ["alpha"]
    masks = {name: result.dataset_dir / "masks" / f"{item['sha256']}.png" for name, item in items.items()}
    assert not masks["plain.png"].exists()
    frame_mask = np.asarray(Image.open(masks["framed.png"]))
    assert frame_mask[:6].max() == 0 and frame_mask[6:90, 6:90].min() == 255
    assert np.asarray(Image.open(masks["signed.png"]))[85, 80] == 0
    assert np.asarray(Image.open(masks["cutout.png"]))[50, :20].max() == 0
    assert "mask: frame" in (result.dataset_dir / "report.html").read_text()
