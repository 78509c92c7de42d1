"""Tiny offline bases: diffusers loads them as is, the tokenizer is real, the seed decides the weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from safetensors.torch import load_file

from infer.bases.resolve import detect_arch, load_img2img_pipeline, resolve_base
from infer.bases.tiny import build_pipeline, write_tiny_base
from oeuvre.errors import BaseModelError, OeuvreError


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_tiny_base_loads_in_diffusers_img2img_and_returns_requested_size(tiny_bases, arch):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    cls = StableDiffusionXLImg2ImgPipeline if arch == "sdxl" else StableDiffusionImg2ImgPipeline
    pipe = cls.from_pretrained(tiny_bases[arch])  # diffusers' own loader, nothing of ours
    content = Image.new("RGB", (96, 64), (200, 120, 40))
    result = pipe(
        "a painting in the style of <vangogh>",
        image=content,
        strength=0.6,
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert result.size == (96, 64)
    assert np.asarray(result).std() > 0  # an image, not a blank


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_tiny_base_is_safetensors_only_with_real_tokenizer(tiny_bases, arch):
    folder = tiny_bases[arch]
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    assert list((folder / "unet").glob("*.safetensors"))
    pipe = load_img2img_pipeline(str(folder))
    for tokenizer in [pipe.tokenizer, getattr(pipe, "tokenizer_2", None)]:
        if tokenizer is None:
            continue
        ids = tokenizer("a painting in the style of <vangogh>").input_ids
        assert len(ids) > 3 + 2  # more than 3 tokens besides BOS/EOS
        assert tokenizer.unk_token_id not in ids[1:-1]  # CLIP: unk is also EOS
        assert tokenizer.model_max_length == 77
        padded = tokenizer("a harbour", padding="max_length", truncation=True).input_ids
        assert len(padded) == 77


def test_words_become_whole_tokens():
    tokenizer = build_pipeline("sd15").tokenizer
    words = tokenizer.tokenize("a painting of a harbour with boats")
    assert words == ["a</w>", "painting</w>", "of</w>", "a</w>", "harbour</w>", "with</w>", "boats</w>"]


def test_same_seed_same_weights_and_other_seed_differs(tmp_path):
    a = write_tiny_base(tmp_path / "a", "sd15", seed=7)
    b = write_tiny_base(tmp_path / "b", "sd15", seed=7)
    c = write_tiny_base(tmp_path / "c", "sd15", seed=8)
    for part in ("unet", "vae", "text_encoder"):
        [file_a] = (a / part).glob("*.safetensors")
        wa, wb = load_file(file_a), load_file(b / part / file_a.name)
        wc = load_file(c / part / file_a.name)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        if part == "vae":  # hand-set, not drawn: the same for every seed
            assert all(torch.equal(wa[k], wc[k]) for k in wa)
        else:
            assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].numel() > 1)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_tiny_vae_round_trips_8x8_block_colours(tiny_bases, arch):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_bases[arch], subfolder="vae")  # as saved, reloaded
    image = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(image).latent_dist.sample()
        decoded = vae.decode(latents).sample
    blocks = torch.nn.functional.avg_pool2d(image, 8)
    expected = torch.nn.functional.interpolate(blocks, scale_factor=8, mode="nearest")
    assert latents.shape == (2, 4, 8, 12)
    assert (decoded - expected).abs().max() < 1e-3
    # Scaled latents are the block colours times a fixed spread, the same scale as SD's latents.
    scaled = latents[:, :3] * vae.config.scaling_factor
    assert torch.allclose(scaled, blocks * 2.5, atol=1e-3)


@pytest.mark.parametrize(("arch", "downsample"), [("sd15", 2), ("sd15", 4), ("sdxl", 2)])
def test_tiny_vae_can_code_finer_blocks(tmp_path, arch, downsample):
    from diffusers import AutoencoderKL, AutoPipelineForImage2Image

    base = write_tiny_base(tmp_path / "base", arch, vae_downsample=downsample)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(image).latent_dist.sample()
        decoded = vae.decode(latents).sample
    blocks = torch.nn.functional.avg_pool2d(image, downsample)
    assert latents.shape == (1, 4, 64 // downsample, 64 // downsample)
    assert (decoded - torch.nn.functional.interpolate(blocks, scale_factor=downsample)).abs().max() < 1e-3
    # diffusers sizes its latents from the VAE's config, so the whole pipeline follows.
    pipe = AutoPipelineForImage2Image.from_pretrained(base)
    assert pipe.vae_scale_factor == downsample
    picture = (decoded[0].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1).numpy()
    out = pipe("a house", image=picture[None], strength=0.5, num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, 64, 64, 3)


def test_full_size_vae_downsamples_by_8_only(tmp_path):
    with pytest.raises(OeuvreError, match="vae-downsample 2"):
        write_tiny_base(tmp_path / "full", "sd15", size="full", vae_downsample=2)
    with pytest.raises(OeuvreError, match="vae-downsample 3"):
        build_pipeline("sd15", vae_downsample=3)
    assert not (tmp_path / "full").exists()


def test_pretraining_teaches_the_tiny_unet_to_denoise():
    from infer.bases.tiny_pretrain import pretrain_unet

    pipe = build_pipeline("sd15")
    losses = pretrain_unet(pipe, 60, pictures=32, batch_size=8)
    assert len(losses) == 60
    assert np.mean(losses[-15:]) < 0.6 * np.mean(losses[:5])
    assert not pipe.unet.training and not any(p.requires_grad for p in pipe.unet.parameters())


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_pretrained_base_is_written_and_differs_from_the_random_one(tmp_path, arch):
    random_base = write_tiny_base(tmp_path / "random", arch, seed=3)
    trained = write_tiny_base(tmp_path / "trained", arch, seed=3, pretrain_steps=3)
    [name] = [f.name for f in (random_base / "unet").glob("*.safetensors")]
    before, after = load_file(random_base / "unet" / name), load_file(trained / "unet" / name)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_pretraining_is_only_for_the_tiny_size(tmp_path):
    with pytest.raises(OeuvreError, match="pretrain"):
        write_tiny_base(tmp_path / "full", "sd15", size="full", pretrain_steps=10)
    assert not (tmp_path / "full").exists()


def test_full_size_is_the_real_sd15_architecture():
    import torch

    with torch.device("meta"):  # the shapes only: 860 M random weights take 45 s to initialise on CPU
        unet = build_pipeline.__globals__["_sd15_unet"]("full")
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    unet_config = unet.config
    assert tuple(unet_config.block_out_channels) == (320, 640, 1280, 1280)
    assert unet_config.cross_attention_dim == 768


def test_arch_is_detected_from_the_folder(tiny_bases):
    assert detect_arch(str(tiny_bases["sd15"])) == "sd15"
    assert detect_arch(str(tiny_bases["sdxl"])) == "sdxl"


def test_not_a_pipeline_folder_is_refused(tmp_path):
    with pytest.raises(BaseModelError, match="no model_index.json"):
        resolve_base(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(BaseModelError, match="neither SD 1.5 nor SDXL"):
        detect_arch(str(tmp_path))


def test_uncached_hub_id_fails_at_once_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BaseModelError) as info:
        detect_arch("stable-diffusion-v1-5/stable-diffusion-v1-5")
    message = str(info.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "tiny-base" in message


def test_tiny_base_refuses_to_overwrite(tmp_path):
    write_tiny_base(tmp_path / "base", "sd15")
    with pytest.raises(OeuvreError, match="already exists"):
        write_tiny_base(tmp_path / "base", "sd15")


def test_tiny_base_cli_writes_a_loadable_folder(run_cli, tmp_path):
    result = run_cli("infer", "tiny-base", tmp_path / "b", "--arch", "sdxl", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert run_cli("infer", "arch", tmp_path / "b").stdout.strip() == "sdxl"


def test_builtin_content_scenes_are_written(run_cli, tmp_path):
    from PIL import Image

    result = run_cli("infer", "content", tmp_path / "c", "--size", "64")
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "c").glob("*.png"))
    assert [f.stem for f in files] == ["harbour", "house", "portrait"]
    assert all(Image.open(f).size == (64, 64) for f in files)
    assert len({Image.open(f).tobytes() for f in files}) == 3


def test_pretraining_pictures_are_captioned_with_their_colours():
    from infer.bases.tiny_pretrain import colour_name, generic_picture

    assert colour_name((25, 35, 95)) == "dark blue" and colour_name((250, 250, 245)) == "white"
    image, caption = generic_picture(np.random.default_rng(1), 64)
    top = tuple(int(c) for c in np.random.default_rng(1).integers(0, 256, 3))  # its first draw
    assert caption.startswith(f"a picture, {colour_name(top)} top, ")
    assert image.size == (64, 64)
    tokenizer = build_pipeline("sd15").tokenizer
    assert tokenizer.unk_token_id not in tokenizer(caption).input_ids[1:-1]  # every word is in the vocabulary


def test_tiny_base_if_changed_keeps_the_same_recipe_and_rebuilds_another(tmp_path, capsys):
    from infer.__main__ import main

    out = tmp_path / "base"

    def build(*extra):
        assert main(["tiny-base", str(out), "--pretrain-steps", "1", "--if-changed", *extra]) == 0
        return capsys.readouterr().out

    assert "wrote" in build()
    assert json.loads((out / "tiny_base.json").read_text())["noise_offset"] == 0.0
    assert "kept" in build()  # the same arguments: the folder is left as it is
    assert "wrote" in build("--noise-offset", "0.3")  # another recipe: built again in place
    assert json.loads((out / "tiny_base.json").read_text())["noise_offset"] == 0.3


def test_tiny_base_copies_a_prebuilt_base_only_when_its_recipe_matches(tmp_path, capsys):
    from infer.__main__ import main

    prebuilt, out = tmp_path / "prebuilt", tmp_path / "run" / "base"
    assert main(["tiny-base", str(prebuilt), "--pretrain-steps", "1"]) == 0
    marker = prebuilt / "unet" / "marker.txt"  # only a copy has it; a fresh build would not
    marker.write_text("prebuilt")
    capsys.readouterr()

    def build(*extra):
        flags = ["--if-changed", "--prebuilt", str(prebuilt)]
        assert main(["tiny-base", str(out), "--pretrain-steps", "1", *flags, *extra]) == 0
        return capsys.readouterr().out

    assert "copied the prebuilt" in build()
    assert (out / "unet" / "marker.txt").read_text() == "prebuilt"
    assert "kept" in build()
    assert "wrote" in build("--noise-offset", "0.3")  # another recipe than the prebuilt's: pre-trained
    assert not (out / "unet" / "marker.txt").exists()
    assert marker.is_file()  # the prebuilt folder itself is never touched


def test_the_demo_ships_its_base_built_by_its_own_recipe():
    """infer/bases/demo_base is what `make demo-base` writes: its tiny_base.json names the arguments the
    demo asks for, so the demo copies it rather than pre-training for minutes."""
    import argparse

    from infer.bases.cli import add_tiny_base_arguments, recipe_of
    from infer.bases.tiny import built_with
    from oeuvre.demo import PREBUILT_BASE, tiny_base_recipe

    parser = argparse.ArgumentParser()
    add_tiny_base_arguments(parser)
    args = parser.parse_args(["out", *tiny_base_recipe()])
    assert built_with(REPO / PREBUILT_BASE, **recipe_of(args))
    sizes = sum(f.stat().st_size for f in (REPO / PREBUILT_BASE).rglob("*") if f.is_file())
    assert sizes < 8e6  # small enough to live in git


def test_img2img_always_runs_at_least_one_denoising_step():
    from infer.restyle.restyler import steps_for_one_denoise

    for steps, strength in [(2, 0.3), (2, 0.35), (10, 0.05), (3, 1 / 3), (1, 0.5)]:
        assert int(steps_for_one_denoise(steps, strength) * strength) >= 1, (steps, strength)
    assert steps_for_one_denoise(30, 0.55) == 30  # enough already: unchanged
