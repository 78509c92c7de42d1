"""Tiny offline bases: diffusers loads them as is, the tokenizer is real, the seed decides the weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from infer.base_model import detect_arch, load_img2img_pipeline, resolve_base
from infer.tiny_base import build_pipeline, write_tiny_base
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
        assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].numel() > 1)


def test_full_size_is_the_real_sd15_architecture():
    unet_config = build_pipeline.__globals__["_sd15_unet"]("full").config
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
