"""restyle on tiny bases: the LoRA acts, runs repeat, metadata parses back, bad input fails."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from lora_helpers import make_random_embedding, make_random_lora
from PIL import Image

from infer.__main__ import main
from infer.restyle.png_info import parse_parameters, read_parameters
from oeuvre.cli import run_main

# CPU and fp32 everywhere, so results compare with plain diffusers on CPU even on a GPU machine.
FAST = ["--size", "64", "--steps", "3", "--guidance", "5", "--device", "cpu"]


def restyle(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process as a user would; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, ["restyle", *map(str, args)])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour, size in [("harbour", (40, 90, 200), (64, 64)), ("field", (200, 160, 40), (80, 64))]:
        gradient = np.linspace(0, 1, size[0])[None, :, None] * np.array(colour)[None, None, :]
        image = np.broadcast_to(gradient, (size[1], size[0], 3)).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{name}.png")
    return folder


def test_lora_changes_output_and_lora_none_matches_plain_diffusers(
    capsys, tmp_path, photos, tiny_bases, tiny_loras
):
    from diffusers import StableDiffusionImg2ImgPipeline

    image = photos / "harbour.png"
    args = [image, *FAST, "--prompt", "a harbour", "--negative", "", "--strength", "0.7"]
    code, _, err = restyle(capsys, *args, "--lora", tiny_loras["sd15"], "--out", tmp_path / "lora")
    assert code == 0, err
    code, _, err = restyle(
        capsys, *args, "--lora", "none", "--base", tiny_bases["sd15"], "--out", tmp_path / "none"
    )
    assert code == 0, err
    with_lora = pixels(tmp_path / "lora" / "harbour_seed0_str0.7_lora0.8.png")
    without = pixels(tmp_path / "none" / "harbour_seed0_str0.7_nolora.png")
    assert np.abs(with_lora - without).mean() > 1  # the LoRA was applied, not loaded as nothing (0)

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_bases["sd15"])  # diffusers alone, no LoRA
    plain = pipe(
        "a harbour",
        negative_prompt="",
        image=Image.open(image).convert("RGB"),
        strength=0.7,
        num_inference_steps=3,
        guidance_scale=5,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert np.abs(without - np.asarray(plain).astype(np.int16)).max() <= 2  # --lora none: the plain base


def test_same_seed_same_image_other_seed_differs(capsys, tmp_path, photos, tiny_loras):
    for out, seed in [("a", 3), ("b", 3), ("c", 4)]:
        code, _, err = restyle(
            capsys,
            photos / "harbour.png",
            "--lora",
            tiny_loras["sd15"],
            *FAST,
            "--seed",
            seed,
            "--out",
            tmp_path / out,
        )
        assert code == 0, err
    a = pixels(tmp_path / "a" / "harbour_seed3_str0.55_lora0.8.png")
    assert np.array_equal(a, pixels(tmp_path / "b" / "harbour_seed3_str0.55_lora0.8.png"))
    assert not np.array_equal(a, pixels(tmp_path / "c" / "harbour_seed4_str0.55_lora0.8.png"))


def test_parameters_chunk_parses_back_to_the_settings_used(capsys, tmp_path, photos, tiny_loras):
    prompt = 'a harbour, boats: at dusk "quoted"'
    code, _, err = restyle(
        capsys, photos / "field.png", "--lora", tiny_loras["sd15"], "--size", "64", "--steps", "4",
        "--guidance", "6.5", "--seed", "11", "--strength", "0.6", "--scale", "0.7",
        "--prompt", prompt, "--negative", "blurry, photo", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    png = tmp_path / "field_seed11_str0.6_lora0.7.png"
    parsed = parse_parameters(read_parameters(png))
    assert parsed["prompt"] == prompt and parsed["negative_prompt"] == "blurry, photo"
    assert parsed["loras"] == [("sd15", 0.7)]
    assert (parsed["Steps"], parsed["Seed"], parsed["CFG scale"], parsed["Denoising strength"]) == (
        "4",
        "11",
        "6.5",
        "0.6",
    )
    width, height = Image.open(png).size
    assert parsed["Size"] == f"{width}x{height}" and parsed["Sampler"] == "PLMS"
    assert parsed["Lora hashes"].startswith("sd15: ") and len(parsed["Lora hashes"]) == len("sd15: ") + 12
    sidecar = json.loads(png.with_suffix(".json").read_text())
    assert sidecar["parameters"] == read_parameters(png)
    assert (sidecar["seed"], sidecar["strength"], sidecar["lora"]["scale"], sidecar["steps"]) == (
        11,
        0.6,
        0.7,
        4,
    )


def test_sweep_writes_every_combination_and_a_rows_by_columns_grid(capsys, tmp_path, photos, tiny_loras):
    code, _, err = restyle(
        capsys, photos / "harbour.png", "--lora", tiny_loras["sd15"], *FAST, "--out", tmp_path,
        "--sweep", "strength=0.3,0.6,0.9", "scale=0,1.0",
    )  # fmt: skip
    assert code == 0, err
    strengths, scales = [0.3, 0.6, 0.9], [0, 1]
    tiles = {
        (st, sc): pixels(tmp_path / f"harbour_seed0_str{st:g}_lora{sc:g}.png")
        for st in strengths
        for sc in scales
    }
    grid = pixels(tmp_path / "harbour_seed0_grid.png")
    tile_h, tile_w = tiles[(0.3, 0)].shape[:2]
    top, left = grid.shape[0] - 3 * tile_h, grid.shape[1] - 2 * tile_w  # labels above and to the left
    assert top > 0 and left > 0
    for i, st in enumerate(strengths):
        for j, sc in enumerate(scales):
            cell = grid[
                top + i * tile_h : top + (i + 1) * tile_h, left + j * tile_w : left + (j + 1) * tile_w
            ]
            assert np.array_equal(cell, tiles[(st, sc)]), (st, sc)
    assert not np.array_equal(tiles[(0.6, 0)], tiles[(0.6, 1)])  # the scale axis really varies the LoRA
    assert grid[:top, left:].std() > 0  # a header row with labels, not blank


def test_unfused_sweep_scale_matches_fused_single_scale(capsys, tmp_path, photos, tiny_loras):
    common = [photos / "harbour.png", "--lora", tiny_loras["sd15"], *FAST, "--strength", "0.6"]
    assert restyle(capsys, *common, "--scale", "0.5", "--out", tmp_path / "fused")[0] == 0
    assert restyle(capsys, *common, "--sweep", "scale=0.5,1", "--out", tmp_path / "sweep")[0] == 0
    fused = pixels(tmp_path / "fused" / "harbour_seed0_str0.6_lora0.5.png")
    unfused = pixels(tmp_path / "sweep" / "harbour_seed0_str0.6_lora0.5.png")
    other = pixels(tmp_path / "sweep" / "harbour_seed0_str0.6_lora1.png")
    # Fusing only reorders float sums: the same picture to within rounding, far closer than another scale.
    assert np.abs(fused - unfused).mean() < 0.1 and np.abs(fused - unfused).max() <= 4
    assert np.abs(fused - other).mean() > 1


def test_no_overwrite_without_the_flag(capsys, tmp_path, photos, tiny_loras):
    args = [photos / "harbour.png", "--lora", tiny_loras["sd15"], *FAST, "--out", tmp_path]
    assert restyle(capsys, *args)[0] == 0
    out = tmp_path / "harbour_seed0_str0.55_lora0.8.png"
    out.write_bytes(b"mine")
    code, _, err = restyle(capsys, *args)
    assert code == 2 and "--overwrite" in err and str(out) in err and err.count("\n") == 1
    assert out.read_bytes() == b"mine"
    assert restyle(capsys, *args, "--overwrite")[0] == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batching_same_size_inputs_gives_the_same_images(capsys, tmp_path, photos, tiny_loras):
    shutil.copy(photos / "harbour.png", photos / "harbour2.png")
    common = [photos, "--lora", tiny_loras["sd15"], *FAST, "--num", "2"]
    assert restyle(capsys, *common, "--batch-size", "1", "--out", tmp_path / "one")[0] == 0
    assert restyle(capsys, *common, "--batch-size", "4", "--out", tmp_path / "four")[0] == 0
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "four").glob("*.png"))
    for name in names:  # batched convolutions sum in another order: equal to within float rounding
        assert np.abs(pixels(tmp_path / "one" / name) - pixels(tmp_path / "four" / name)).mean() < 0.15, name
    # ...while each image keeps its own seed inside a batch (a mix-up would differ by far more)
    seeds = [pixels(tmp_path / "four" / f"harbour_seed{seed}_str0.55_lora0.8.png") for seed in (0, 1)]
    assert np.abs(seeds[0] - seeds[1]).mean() > 2


def test_keep_size_returns_original_size_and_default_fits_size(capsys, tmp_path, photos, tiny_loras):
    args = [photos / "field.png", "--lora", tiny_loras["sd15"], *FAST]
    assert restyle(capsys, *args, "--out", tmp_path / "fit")[0] == 0
    assert restyle(capsys, *args, "--keep-size", "--out", tmp_path / "keep")[0] == 0
    fitted = Image.open(tmp_path / "fit" / "field_seed0_str0.55_lora0.8.png").size
    assert fitted[0] % 8 == 0 and fitted[1] % 8 == 0 and fitted != (80, 64)
    assert Image.open(tmp_path / "keep" / "field_seed0_str0.55_lora0.8.png").size == (80, 64)


def test_run_folder_gives_prompt_base_and_embedding(capsys, tmp_path, photos, tiny_bases, tiny_loras):
    run = tmp_path / "runs" / "tiny"
    (run / "lora").mkdir(parents=True)
    shutil.copy(tiny_loras["sd15"], run / "lora" / "tiny.safetensors")
    args = [photos / "harbour.png", *FAST, "--strength", "0.8"]
    assert restyle(capsys, *args, "--lora", run)[0] == 0  # no --base: the LoRA's metadata names it
    sidecar = json.loads((run / "restyled" / "harbour_seed0_str0.8_lora0.8.json").read_text())
    assert sidecar["prompt"] == "a painting in the style of <tiny>"  # the LoRA's caption metadata
    assert sidecar["base_model"] == str(tiny_bases["sd15"]) and sidecar["embedding"] is None

    make_random_embedding("sd15", run / "lora" / "tiny_emb.safetensors")
    assert restyle(capsys, *args, "--lora", run, "--out", tmp_path / "emb")[0] == 0
    sidecar = json.loads((tmp_path / "emb" / "harbour_seed0_str0.8_lora0.8.json").read_text())
    assert sidecar["embedding"].endswith("tiny_emb.safetensors") and sidecar["trigger_token"] == "<tiny>"
    without = pixels(run / "restyled" / "harbour_seed0_str0.8_lora0.8.png")
    assert np.abs(pixels(tmp_path / "emb" / "harbour_seed0_str0.8_lora0.8.png") - without).mean() > 1


def test_sdxl_restyle_with_text_encoder_lora_and_embedding(capsys, tmp_path, photos, tiny_bases):
    lora = make_random_lora(
        tiny_bases["sdxl"], "sdxl", tmp_path / "lora" / "xl.safetensors", text_encoder=True
    )
    make_random_embedding("sdxl", tmp_path / "lora" / "xl_emb.safetensors")
    code, _, err = restyle(capsys, photos / "harbour.png", "--lora", lora, *FAST, "--out", tmp_path / "out")
    assert code == 0, err
    png = tmp_path / "out" / "harbour_seed0_str0.55_lora0.8.png"
    assert parse_parameters(read_parameters(png))["Sampler"] == "Euler"
    assert json.loads(png.with_suffix(".json").read_text())["embedding"].endswith("xl_emb.safetensors")


# -- bad input: one line naming the file and what was expected -----------------------------------


def _one_line_error(capsys, *args, code=2) -> str:
    got, _, err = restyle(capsys, *args)
    assert got == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_guidance_cutoff_halves_the_unet_batch_after_its_steps(
    capsys, tmp_path, photos, tiny_bases, tiny_loras, monkeypatch, arch
):
    from diffusers import UNet2DConditionModel

    batches: list[int] = []
    forward = UNet2DConditionModel.forward

    def counting_forward(self, sample, *args, **kwargs):
        batches.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counting_forward)
    common = [photos / "harbour.png", "--lora", tiny_loras[arch], "--base", tiny_bases[arch], "--size", "64"]
    common += ["--steps", "8", "--strength", "1", "--guidance", "5", "--device", "cpu"]
    outputs = {}
    for cutoff in ("1", "0.5"):
        batches.clear()
        code, _, err = restyle(capsys, *common, "--guidance-cutoff", cutoff, "--out", tmp_path / cutoff)
        assert code == 0, err
        png = next((tmp_path / cutoff).glob("*.png"))
        outputs[cutoff] = (pixels(png), parse_parameters(read_parameters(png)), list(batches))
    exact, cut = outputs["1"], outputs["0.5"]
    steps = len(exact[2])
    assert exact[2] == [2] * steps  # guided: unconditional and prompted rows every step
    assert cut[2] == [2] * math.ceil(steps / 2) + [1] * (steps - math.ceil(steps / 2))
    assert "CFG cutoff" not in exact[1] and cut[1]["CFG cutoff"] == "0.5"
    assert np.abs(exact[0] - cut[0]).mean() > 0  # not exact: the unguided steps follow the prompt alone


def test_missing_input_is_a_one_line_error(capsys, tmp_path, tiny_loras):
    err = _one_line_error(
        capsys, tmp_path / "nope.jpg", "--lora", tiny_loras["sd15"], *FAST, "--out", tmp_path
    )
    assert "nope.jpg" in err and "no such file" in err


def test_non_image_among_good_ones_is_reported_and_the_rest_restyled(capsys, tmp_path, photos, tiny_loras):
    (photos / "notes.jpg").write_text("not a picture")
    code, _, err = restyle(capsys, photos, "--lora", tiny_loras["sd15"], *FAST, "--out", tmp_path / "out")
    assert code == 1 and "notes.jpg" in err and "not a readable image" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "field_seed0_str0.55_lora0.8.png",
        "harbour_seed0_str0.55_lora0.8.png",
    ]


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--strength", "0"], "--strength 0: expected a value in (0, 1]"),
        (["--strength", "1.5"], "--strength 1.5"),
        (["--scale", "-0.5"], "--scale -0.5: expected a LoRA scale >= 0"),
        (["--sweep", "strength=0.5,1.2"], "--strength 1.2"),
        (["--guidance-cutoff", "0"], "--guidance-cutoff 0: expected a fraction of the denoising steps"),
        (["--guidance-cutoff", "0.5", "--control", "canny"], "works with plain img2img only"),
    ],
)
def test_out_of_range_settings_are_one_line_errors(capsys, tmp_path, photos, tiny_loras, flags, needle):
    err = _one_line_error(capsys, photos, "--lora", tiny_loras["sd15"], *FAST, *flags, "--out", tmp_path)
    assert needle in err
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickled_lora_refused_by_name(capsys, tmp_path, photos, suffix):
    lora = tmp_path / f"style{suffix}"
    lora.write_bytes(b"\x80\x04not really a pickle")
    err = _one_line_error(capsys, photos, "--lora", lora, *FAST, "--out", tmp_path)
    assert str(lora) in err and "pickles that can run code" in err


def test_truncated_lora_is_a_one_line_error(capsys, tmp_path, photos, tiny_loras):
    lora = tmp_path / "cut.safetensors"
    lora.write_bytes(tiny_loras["sd15"].read_bytes()[:-100])
    err = _one_line_error(capsys, photos, "--lora", lora, *FAST, "--out", tmp_path)
    assert str(lora) in err and "truncated or corrupt" in err


@pytest.mark.parametrize("lora_arch,base_arch", [("sdxl", "sd15"), ("sd15", "sdxl")])
def test_lora_for_the_other_arch_is_a_one_line_error(
    capsys, tmp_path, photos, tiny_bases, tiny_loras, lora_arch, base_arch
):
    args = [
        photos,
        "--lora",
        tiny_loras[lora_arch],
        "--base",
        tiny_bases[base_arch],
        *FAST,
        "--out",
        tmp_path,
    ]
    err = _one_line_error(capsys, *args)
    assert (
        str(tiny_loras[lora_arch]) in err and f"trained for {lora_arch}" in err and f"is {base_arch}" in err
    )
