"""The kohya (A1111/ComfyUI) file: same image as the diffusers file through diffusers' own loader,
true alpha, and key names of the form A1111's and ComfyUI's loaders map."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from lora_helpers import TEXT_TARGETS, UNET_TARGETS, img2img_np, make_random_lora
from safetensors.torch import load_file

from infer.bases.resolve import load_img2img_pipeline
from infer.lora.files import read_lora_metadata
from infer.lora.tools import load_lora, save_lora

RANK, ALPHA = 4, 8.0  # alpha != rank: a converter that writes alpha = rank halves the strength


def _both_files(base, arch, folder, text_encoder):
    diffusers_file = make_random_lora(
        base, arch, folder / "d.safetensors", rank=RANK, alpha=ALPHA, text_encoder=text_encoder
    )
    kohya_file = save_lora(load_lora(diffusers_file), folder / "d.kohya.safetensors", "kohya")
    return diffusers_file, kohya_file


@pytest.mark.parametrize("text_encoder", [False, True], ids=["unet-only", "with-text-encoder"])
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_kohya_file_gives_the_same_image_as_the_diffusers_file(tiny_bases, tmp_path, arch, text_encoder):
    diffusers_file, kohya_file = _both_files(tiny_bases[arch], arch, tmp_path, text_encoder)
    pipe = load_img2img_pipeline(str(tiny_bases[arch]))
    plain = img2img_np(pipe, "a harbour, <tiny>")
    pipe.load_lora_weights(str(diffusers_file))
    from_diffusers = img2img_np(pipe, "a harbour, <tiny>")
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(kohya_file))  # diffusers converts the kohya keys itself
    if text_encoder:
        for name in ["text_encoder"] + (["text_encoder_2"] if arch == "sdxl" else []):
            assert getattr(pipe, name).peft_config, f"{name} LoRA silently dropped"
    from_kohya = img2img_np(pipe, "a harbour, <tiny>")
    largest = float(np.abs(from_kohya - from_diffusers).max())
    print(f"{arch} text_encoder={text_encoder}: largest pixel difference kohya vs diffusers {largest:.2e}")
    assert largest <= 1e-5
    assert np.abs(from_diffusers - plain).mean() > 2e-4  # neither loaded as nothing (that gives 0)
    assert np.abs(from_kohya - plain).mean() > 2e-4


def test_text_encoder_lora_changes_the_image_beyond_the_unet_lora(tiny_bases, tmp_path):
    unet_only, _ = _both_files(tiny_bases["sd15"], "sd15", tmp_path, False)
    (tmp_path / "te").mkdir()
    _, with_te_kohya = _both_files(tiny_bases["sd15"], "sd15", tmp_path / "te", True)
    pipe = load_img2img_pipeline(str(tiny_bases["sd15"]))
    pipe.load_lora_weights(str(unet_only))
    a = img2img_np(pipe, "a harbour, <tiny>")
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(with_te_kohya))
    assert (
        np.abs(img2img_np(pipe, "a harbour, <tiny>") - a).mean() > 1e-4
    )  # same UNet seed: the difference is the text encoder


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_alpha_tensors_hold_the_true_alpha_not_the_rank(tiny_bases, tmp_path, arch):
    _, kohya_file = _both_files(tiny_bases[arch], arch, tmp_path, True)
    tensors = load_file(kohya_file)
    alphas = {key: value for key, value in tensors.items() if key.endswith(".alpha")}
    assert alphas and all(value.shape == () and float(value) == ALPHA for value in alphas.values())
    downs = [value for key, value in tensors.items() if key.endswith(".lora_down.weight")]
    assert all(value.shape[0] == RANK for value in downs)


def _comfyui_style_names(arch, unet, encoders) -> set[str]:
    """Every LoRA key name ComfyUI's comfy/lora.py would map for the targeted layers, written from its
    scheme: UNet `lora_unet_` + the diffusers module path with '.' -> '_'; CLIP layers
    `lora_te_text_model_encoder_layers_{b}_{layer}` (SD 1.5), `lora_te1_`/`lora_te2_` (SDXL)."""
    names = set()
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith("." + t) for t in UNET_TARGETS):
            names.add("lora_unet_" + name.replace(".", "_"))
    prefixes = ["lora_te"] if arch == "sd15" else ["lora_te1", "lora_te2"]
    for prefix, encoder in zip(prefixes, encoders, strict=True):
        for block in range(encoder.config.num_hidden_layers):
            for target in TEXT_TARGETS:
                names.add(f"{prefix}_text_model_encoder_layers_{block}_self_attn_{target}")
    return names


# A1111's networks.py turns diffusers-style UNet names into its own with these shapes of name.
A1111_UNET = re.compile(
    r"lora_unet_(down_blocks_\d+_attentions_\d+|mid_block_attentions_0|up_blocks_\d+_attentions_\d+)"
    r"_transformer_blocks_\d+_attn[12]_(to_q|to_k|to_v|to_out_0)"
)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_kohya_keys_are_the_names_a1111_and_comfyui_map(tiny_bases, tmp_path, arch):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    base = tiny_bases[arch]
    _, kohya_file = _both_files(base, arch, tmp_path, True)
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    encoders = [CLIPTextModel.from_pretrained(base / "text_encoder")]
    if arch == "sdxl":
        encoders.append(CLIPTextModelWithProjection.from_pretrained(base / "text_encoder_2"))
    expected = _comfyui_style_names(arch, unet, encoders)
    tensors = load_file(kohya_file)
    modules = {key.partition(".")[0] for key in tensors}
    assert modules == expected  # every targeted layer, nothing else
    for module in modules:
        suffixes = {key.partition(".")[2] for key in tensors if key.partition(".")[0] == module}
        assert suffixes == {"lora_down.weight", "lora_up.weight", "alpha"}, module
        if module.startswith("lora_unet_"):
            assert A1111_UNET.fullmatch(module), module
    assert not any(k.startswith("lora_te1_") for k in tensors) or arch == "sdxl"


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_round_trip_convert_keeps_weights_alpha_and_metadata(tiny_bases, tmp_path, arch):
    diffusers_file, kohya_file = _both_files(tiny_bases[arch], arch, tmp_path, True)
    back = save_lora(load_lora(kohya_file), tmp_path / "back.safetensors", "diffusers")
    original, returned = load_lora(diffusers_file), load_lora(back)
    assert returned.format == "diffusers" and load_lora(kohya_file).format == "kohya"
    assert set(original.components) == set(returned.components)
    for name, component in original.components.items():
        assert component.alpha == returned.components[name].alpha
        for module, down in component.down.items():
            assert torch.equal(down, returned.components[name].down[module])
            assert torch.equal(component.up[module], returned.components[name].up[module])
    for path in (kohya_file, back):
        metadata = read_lora_metadata(path)
        assert metadata["oeuvre.trigger_token"] == "<tiny>" and metadata["oeuvre.arch"] == arch
    assert read_lora_metadata(kohya_file)["oeuvre.format"] == "kohya"
    assert "lora_adapter_metadata" not in read_lora_metadata(kohya_file)  # diffusers-only key dropped


@pytest.mark.parametrize("lora_arch,base_arch", [("sdxl", "sd15"), ("sd15", "sdxl")])
def test_kohya_lora_of_another_arch_refused_even_without_metadata(tiny_bases, tmp_path, lora_arch, base_arch):
    from safetensors.torch import save_file

    from infer.lora.files import LoraFileError, check_lora_fits

    _, kohya_file = _both_files(tiny_bases[lora_arch], lora_arch, tmp_path, False)
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(kohya_file), bare)  # a file from elsewhere: no oeuvre.arch to go by
    pipe = load_img2img_pipeline(str(tiny_bases[base_arch]))
    with pytest.raises(LoraFileError, match=f"kohya LoRA for {lora_arch}.*is {base_arch}") as info:
        check_lora_fits(bare, pipe, "thebase")
    assert "bare.safetensors" in str(info.value)


def test_per_module_rank_and_alpha_survive_both_layouts(tiny_bases, tiny_loras, tmp_path):
    lora = load_lora(tiny_loras["sd15"])
    unet = lora.components["unet"]
    odd = sorted(unet.down)[0]  # one layer at rank 2 and alpha 3, the rest rank 4 and alpha 8
    unet.down[odd], unet.up[odd], unet.alpha[odd] = unet.down[odd][:2], unet.up[odd][:, :2], 3.0
    diffusers_file = save_lora(lora, tmp_path / "odd.safetensors", "diffusers")
    kohya_file = save_lora(lora, tmp_path / "odd.kohya.safetensors", "kohya")
    assert float(load_file(kohya_file)[f"lora_unet_{odd.replace('.', '_')}.alpha"]) == 3.0
    reread = load_lora(kohya_file).components["unet"]
    assert (reread.rank(odd), reread.alpha[odd]) == (2, 3.0)
    # diffusers 0.42 loads per-module kohya alphas under names peft never matches (a warning, then
    # the default alpha), so the diffusers loader is checked on the diffusers file only.
    pipe = load_img2img_pipeline(str(tiny_bases["sd15"]))
    pipe.load_lora_weights(str(diffusers_file), adapter_name="odd")
    layer = pipe.unet.get_submodule(odd)
    assert layer.lora_A["odd"].weight.shape[0] == 2 and layer.scaling["odd"] == 1.5
    other = pipe.unet.get_submodule(sorted(unet.down)[1])
    assert other.lora_A["odd"].weight.shape[0] == 4 and other.scaling["odd"] == 2.0


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_dora_kohya_file_carries_dora_scale_in_the_lycoris_layout(tiny_bases, tmp_path, arch):
    from infer.lora.tools import inspect_file

    diffusers_file = make_random_lora(
        tiny_bases[arch],
        arch,
        tmp_path / "d.safetensors",
        rank=RANK,
        alpha=ALPHA,
        text_encoder=True,
        dora=True,
    )
    kohya_file = save_lora(load_lora(diffusers_file), tmp_path / "d.kohya.safetensors", "kohya")
    tensors = load_file(kohya_file)
    scales = {k.rsplit(".", 1)[0]: v for k, v in tensors.items() if k.endswith(".dora_scale")}
    alphas = {k.rsplit(".", 1)[0] for k in tensors if k.endswith(".alpha")}
    assert set(scales) == alphas  # every module, the text encoders' too
    assert all(v.ndim == 2 and v.shape[1] == 1 for v in scales.values())  # LyCORIS: [out, 1]
    assert any(k.startswith("lora_te") for k in scales)
    assert inspect_file(kohya_file)["dora"] and inspect_file(diffusers_file)["dora"]
    dora_back = save_lora(load_lora(kohya_file), tmp_path / "back.safetensors", "diffusers")
    images = []
    for path in (diffusers_file, dora_back):  # diffusers 0.42 drops dora_scale from kohya files: not asked
        pipe = load_img2img_pipeline(str(tiny_bases[arch]))
        plain = img2img_np(pipe)
        pipe.load_lora_weights(str(path))
        images.append(img2img_np(pipe))
    assert np.abs(images[0] - plain).mean() > 2e-4
    assert np.array_equal(images[0], images[1])
    # The LyCORIS/ComfyUI reading of the kohya tensors (weight decomposition on the output axis)
    # gives the weight peft's DoRA layer computes.
    layer = pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    weight = layer.base_layer.weight.detach().double()
    down, up = tensors[f"{name}.lora_down.weight"].double(), tensors[f"{name}.lora_up.weight"].double()
    merged = weight + float(tensors[f"{name}.alpha"]) / down.shape[0] * up @ down
    lycoris = scales[name].double() * merged / merged.norm(dim=1, keepdim=True)
    layer.merge()
    assert torch.allclose(layer.base_layer.weight.detach().double(), lycoris, atol=1e-5)
