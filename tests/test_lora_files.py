"""LoRA and embedding files: diffusers loads what we write, alpha and metadata survive, bad ones refused."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from lora_helpers import img2img_np, make_random_embedding, make_random_lora

from infer.bases.resolve import load_img2img_pipeline
from infer.lora.files import (
    LoraFileError,
    check_lora_fits,
    find_run_lora,
    lora_tensor_shapes,
    read_lora_metadata,
    save_lora_file,
)


def test_lora_file_keeps_our_metadata_and_diffusers_adapter_metadata(tiny_loras):
    metadata = read_lora_metadata(tiny_loras["sd15"])
    assert metadata["oeuvre.arch"] == "sd15"
    assert metadata["oeuvre.trigger_token"] == "<tiny>"
    assert metadata["format"] == "pt"
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["unet.r"] == 4 and adapter["unet.lora_alpha"] == 8.0


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_diffusers_loads_lora_with_alpha_not_rank_and_it_changes_the_image(tiny_bases, tmp_path, arch):
    lora = make_random_lora(tiny_bases[arch], arch, tmp_path / "l.safetensors", text_encoder=True)
    pipe = load_img2img_pipeline(str(tiny_bases[arch]))
    plain = img2img_np(pipe)
    pipe.load_lora_weights(str(lora), adapter_name="style")
    components = ["unet", "text_encoder"] + (["text_encoder_2"] if arch == "sdxl" else [])
    for name in components:
        config = getattr(pipe, name).peft_config["style"]
        assert (config.r, config.lora_alpha) == (4, 8.0), name  # alpha survived, not reset to the rank
    styled = img2img_np(pipe)
    assert np.abs(styled - plain).mean() > 2e-4  # the LoRA did something: not loaded as nothing (0 then)


def test_arch_is_filled_in_and_contradictions_refused(tiny_loras, tmp_path):
    from peft import LoraConfig

    layers = {"down_blocks.1.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 8)}
    layers["down_blocks.1.attentions.0.proj_in.lora_B.weight"] = torch.zeros(8, 4)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["proj_in"])
    with pytest.raises(ValueError, match="contradicts"):
        save_lora_file(
            tmp_path / "x.safetensors",
            arch="sd15",
            unet_lora_layers=layers,
            unet_lora_config=config,
            metadata={"oeuvre.arch": "sdxl"},
        )
    with pytest.raises(TypeError, match="str to str"):
        save_lora_file(
            tmp_path / "x.safetensors",
            arch="sd15",
            unet_lora_layers=layers,
            unet_lora_config=config,
            metadata={"a": 1},
        )
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_formats_refused_by_name_without_unpickling(tmp_path, suffix):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps(Boom()))
    # The refusal's own words: the pytest temp path already holds "pickle", so matching it proves nothing.
    with pytest.raises(LoraFileError, match="pickles that can run code") as info:
        read_lora_metadata(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_safetensors_is_a_one_line_error(tiny_loras, tmp_path):
    data = tiny_loras["sd15"].read_bytes()
    for name, cut in [("short.safetensors", data[:5]), ("half.safetensors", data[: len(data) // 2])]:
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(LoraFileError, match="truncated or corrupt") as info:
            read_lora_metadata(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(LoraFileError, match="truncated or corrupt"):
        read_lora_metadata(tmp_path / "garbage.safetensors")


@pytest.mark.parametrize("lora_arch,base_arch", [("sdxl", "sd15"), ("sd15", "sdxl")])
def test_lora_for_other_arch_refused_before_loading(tiny_bases, tiny_loras, lora_arch, base_arch):
    pipe = load_img2img_pipeline(str(tiny_bases[base_arch]))
    with pytest.raises(LoraFileError, match=f"trained for {lora_arch}.*is {base_arch}") as info:
        check_lora_fits(tiny_loras[lora_arch], pipe, "thebase")
    assert str(tiny_loras[lora_arch]) in str(info.value)


def test_lora_without_metadata_checked_by_layer_shapes(tiny_bases, tiny_loras, tmp_path):
    import safetensors.torch

    # An SDXL LoRA from elsewhere, with no oeuvre metadata: caught by its layers, not its label.
    bare = tmp_path / "bare.safetensors"
    safetensors.torch.save_file(safetensors.torch.load_file(tiny_loras["sdxl"]), bare)
    assert "oeuvre.arch" not in read_lora_metadata(bare)
    pipe = load_img2img_pipeline(str(tiny_bases["sd15"]))
    with pytest.raises(LoraFileError, match="does not fit base"):
        check_lora_fits(bare, pipe, "thebase")
    check_lora_fits(tiny_loras["sd15"], pipe, "thebase")  # the right one passes


def test_tensor_shapes_read_from_header(tiny_loras):
    shapes = lora_tensor_shapes(tiny_loras["sd15"])
    downs = [shape for key, shape in shapes.items() if key.endswith("lora.down.weight")]
    assert downs and all(shape[0] == 4 for shape in downs)


def test_find_run_lora_ignores_kohya_and_finds_embedding(tiny_loras, tmp_path):
    folder = tmp_path / "run" / "lora"
    folder.mkdir(parents=True)
    with pytest.raises(LoraFileError, match="found none"):
        find_run_lora(tmp_path / "run")
    (folder / "vangogh.safetensors").write_bytes(tiny_loras["sd15"].read_bytes())
    (folder / "vangogh.kohya.safetensors").write_bytes(b"x")
    assert find_run_lora(tmp_path / "run") == (folder / "vangogh.safetensors", None)
    make_random_embedding("sd15", folder / "vangogh_emb.safetensors")
    assert find_run_lora(tmp_path / "run") == (
        folder / "vangogh.safetensors",
        folder / "vangogh_emb.safetensors",
    )
    with pytest.raises(LoraFileError, match="no lora/ folder"):
        find_run_lora(tmp_path)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_embedding_file_loads_with_diffusers_textual_inversion(tiny_bases, tmp_path, arch):
    from safetensors.torch import load_file

    path = make_random_embedding(arch, tmp_path / "e_emb.safetensors", num_tokens=2)
    assert read_lora_metadata(path)["oeuvre.arch"] == arch
    state = load_file(path)
    pipe = load_img2img_pipeline(str(tiny_bases[arch]))
    if arch == "sd15":
        assert set(state) == {"emb_params"} and state["emb_params"].shape == (2, 32)
        pipe.load_textual_inversion(str(path), token="<tiny>")
        encoders = [(pipe.tokenizer, pipe.text_encoder, state["emb_params"])]
    else:
        assert set(state) == {"clip_l", "clip_g"}
        pipe.load_textual_inversion(
            state["clip_l"], token="<tiny>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )
        pipe.load_textual_inversion(
            state["clip_g"], token="<tiny>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
        )
        encoders = [
            (pipe.tokenizer, pipe.text_encoder, state["clip_l"]),
            (pipe.tokenizer_2, pipe.text_encoder_2, state["clip_g"]),
        ]
    for tokenizer, encoder, vectors in encoders:
        ids = tokenizer.convert_tokens_to_ids(["<tiny>", "<tiny>_1"])
        table = encoder.get_input_embeddings().weight
        assert torch.allclose(table[ids], vectors)


def test_conv_lora_trained_in_channels_last_saves_and_loads_whole_in_diffusers(tiny_bases, tmp_path):
    import warnings

    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from lora_helpers import _randomise_lora
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(tiny_bases["sd15"] / "unet")
    config = LoraConfig(r=4, lora_alpha=4.0, target_modules=["to_q", "conv1", "conv2"])
    unet.add_adapter(config)
    _randomise_lora(unet, seed=0, std=0.1)
    unet.to(memory_format=torch.channels_last)  # as training places it: conv LoRA weights become views
    layers = get_peft_model_state_dict(unet)
    assert any(not tensor.is_contiguous() for tensor in layers.values())
    path = save_lora_file(
        tmp_path / "conv.safetensors",
        arch="sd15",
        unet_lora_layers=layers,
        unet_lora_config=config,
        metadata={},
    )
    saved = load_file(path)
    # peft's spelling throughout: diffusers' renaming covers attention only, and a file mixing the two
    # spellings loaded without a single attention weight (peft only warned).
    assert {key.removeprefix("unet.") for key in saved} == set(layers)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_bases["sd15"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # peft's warning: a targeted layer got no weights
        pipe.load_lora_weights(str(path), adapter_name="conv")
    loaded = get_peft_model_state_dict(pipe.unet, adapter_name="conv")
    assert loaded.keys() == layers.keys()
    assert all(torch.equal(loaded[key], layers[key]) for key in layers)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_text_encoder_keys_are_written_canonical_and_both_layouts_load(tiny_bases, tmp_path, arch):
    """transformers 5 drops CLIP's `text_model.` level; files keep it (hub, transformers 4, ComfyUI)."""
    import safetensors.torch

    from infer.lora.tools import load_lora

    canonical = make_random_lora(tiny_bases[arch], arch, tmp_path / "c.safetensors", text_encoder=True)
    tensors = safetensors.torch.load_file(canonical)
    text_keys = [k for k in tensors if k.startswith("text_encoder")]
    assert text_keys and all(k.partition(".")[2].startswith("text_model.encoder.layers.") for k in text_keys)
    flat = tmp_path / "flat.safetensors"
    renamed = {k.replace(".text_model.", ".", 1): v for k, v in tensors.items()}
    safetensors.torch.save_file(renamed, flat, metadata=read_lora_metadata(canonical))
    images = []
    for path in (canonical, flat):
        pipe = load_img2img_pipeline(str(tiny_bases[arch]))
        check_lora_fits(path, pipe, "tiny")
        pipe.load_lora_weights(str(path))
        images.append(img2img_np(pipe))
    assert np.array_equal(*images)
    a, b = load_lora(canonical), load_lora(flat)
    assert all(
        torch.equal(a.components[c].up[m], b.components[c].up[m])
        for c in a.components
        for m in a.components[c].up
    )
