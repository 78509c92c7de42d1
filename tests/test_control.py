"""restyle --control: canny and depth control images, the ControlNet img2img pipelines on tiny SD 1.5
and SDXL bases (single and multi-ControlNet), their A1111 record, the architecture check, the control
sweep axis, and the offline proof that a trained tiny ControlNet keeps more of the photo's content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from infer.__main__ import main
from infer.restyle.png_info import parse_parameters, read_parameters
from oeuvre.cli import run_main

FAST = ["--size", "64", "--steps", "3", "--guidance", "5", "--device", "cpu", "--prompt", "a house"]


def restyle(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, ["restyle", *map(str, args)])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def square_photo(path: Path, size=(64, 64)) -> Path:
    image = Image.new("RGB", size, (40, 90, 200))
    ImageDraw.Draw(image).rectangle([16, 16, 47, 47], fill=(230, 200, 60))
    image.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_depth_estimator(tmp_path_factory) -> Path:
    from infer.bases.control_images import write_tiny_depth_estimator

    return write_tiny_depth_estimator(tmp_path_factory.mktemp("depth") / "estimator")


def test_canny_marks_the_edges_and_its_thresholds_act(tmp_path):
    from infer.bases.control_images import canny_image

    photo = Image.open(square_photo(tmp_path / "p.png"))
    edges = np.asarray(canny_image(photo, 100, 200))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    on = edges[..., 0] > 0
    assert on[15:17, 20:44].any(axis=0).all() and on[20:44, 15:17].any(axis=1).all()  # the square's border
    assert not on[:10].any() and not on[24:40, 24:40].any()  # flat sky and flat inside
    faint = Image.new("RGB", (64, 64), (100, 100, 100))
    ImageDraw.Draw(faint).rectangle([16, 16, 47, 47], fill=(110, 110, 110))
    assert not np.asarray(canny_image(faint, 100, 200)).any()  # too faint for the default thresholds
    assert np.asarray(canny_image(faint, 10, 20)).any()  # ... but not for low ones


def test_depth_map_comes_from_a_local_estimator(tmp_path, tiny_depth_estimator):
    from infer.bases.control_images import depth_image

    photo = Image.open(square_photo(tmp_path / "p.png", (80, 64)))
    depth = depth_image(photo, str(tiny_depth_estimator))
    assert depth.size == (80, 64) and depth.mode == "RGB"
    assert np.asarray(depth).std() > 0  # a map, not a constant


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_control_restyle_records_a1111_fields_and_saves_the_control(
    capsys, tmp_path, arch, tiny_bases, tiny_loras, tiny_controlnets
):
    photo = square_photo(tmp_path / "house.png")
    common = [photo, *FAST, "--lora", tiny_loras[arch], "--strength", "0.8", "--out", tmp_path / "out"]
    model = ["--control-model", f"canny={tiny_controlnets[arch]}"]
    code, out = restyle(capsys, *common, "--control", "canny:0.9", *model, "--save-control")
    assert code == 0, out
    code, out = restyle(capsys, *common)
    assert code == 0, out
    controlled = tmp_path / "out" / "house_seed0_str0.8_lora0.8_canny0.9.png"
    params = parse_parameters(read_parameters(controlled))
    assert params["ControlNet 0"] == (
        f"Module: canny, Model: {tiny_controlnets[arch].name}, Weight: 0.9, Threshold A: 100, "
        "Threshold B: 200, Guidance Start: 0, Guidance End: 1"
    )
    assert np.asarray(Image.open(tmp_path / "out" / "house_canny.png")).max() == 255
    plain = pixels(tmp_path / "out" / "house_seed0_str0.8_lora0.8.png")
    assert np.abs(pixels(controlled) - plain).mean() > 1  # the ControlNet acted


def test_multi_controlnet_and_control_sweep(
    capsys, tmp_path, tiny_bases, tiny_controlnets, tiny_depth_estimator
):
    photo = square_photo(tmp_path / "house.png")
    models = ["--control-model", f"canny={tiny_controlnets['sd15']}", "--control-model"]
    models += [f"depth={tiny_controlnets['sd15']}", "--depth-model", tiny_depth_estimator]
    args = [photo, *FAST, "--lora", "none", "--base", tiny_bases["sd15"], "--strength", "0.8"]
    code, out = restyle(
        capsys,
        *args,
        "--control",
        "canny",
        "--control",
        "depth:0.5",
        *models,
        "--sweep",
        "control=0,1",
        "--control-start",
        "0.1",
        "--out",
        tmp_path / "sweep",
    )
    assert code == 0, out
    code, out = restyle(capsys, *args, "--out", tmp_path / "plain")
    assert code == 0, out
    sweep = tmp_path / "sweep"
    assert (sweep / "house_seed0_grid.png").is_file()
    off, on = (
        sweep / "house_seed0_str0.8_nolora_canny0_depth0.png",
        sweep / "house_seed0_str0.8_nolora_canny1_depth1.png",
    )
    params = parse_parameters(read_parameters(on))
    assert params["ControlNet 1"].startswith(f"Module: depth, Model: {tiny_controlnets['sd15'].name}")
    assert "Weight: 1" in params["ControlNet 1"] and "Guidance Start: 0.1" in params["ControlNet 0"]
    plain = pixels(tmp_path / "plain" / "house_seed0_str0.8_nolora.png")
    assert np.abs(pixels(off) - plain).max() <= 2  # weight 0: the plain img2img image
    assert np.abs(pixels(on) - plain).mean() > 1


def test_controlnet_for_the_other_architecture_is_refused_before_any_image(
    capsys, tmp_path, tiny_bases, tiny_controlnets
):
    photo = square_photo(tmp_path / "house.png")
    code, out = restyle(
        capsys,
        photo,
        *FAST,
        "--lora",
        "none",
        "--base",
        tiny_bases["sd15"],
        "--control",
        "canny",
        "--control-model",
        f"canny={tiny_controlnets['sdxl']}",
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and "is made for sdxl" in out and "(sd15)" in out, out
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_bad_control_flags_fail_with_one_line(capsys, tmp_path, tiny_bases):
    photo = square_photo(tmp_path / "house.png")
    base = ["--lora", "none", "--base", tiny_bases["sd15"]]
    for flags, message in [
        (["--control", "edges"], "KIND one of canny, depth"),
        (["--control", "canny:x"], "must be a number"),
        (["--sweep", "control=0.5,1"], "pass --control"),
        (["--control", "canny", "--control-start", "0.8", "--control-end", "0.2"], "start < end"),
    ]:
        code, out = restyle(capsys, photo, *FAST, *base, *flags)
        assert code != 0 and message in out, (flags, out)


# The offline proof: a tiny base pre-trained on generic pictures, with a canny ControlNet trained on
# the same pictures (tiny-base --controlnet canny), restyles the built-in scenes at strength 0.75.
PROOF_BASE = dict(pretrain_steps=80, vae_downsample=4, controlnets=("canny",), controlnet_steps=120)


@pytest.fixture(scope="session")
def control_trained_base(tmp_path_factory) -> Path:
    from infer.bases.tiny import write_tiny_base

    return write_tiny_base(tmp_path_factory.mktemp("proof") / "base", "sd15", seed=0, **PROOF_BASE)


@pytest.mark.slow  # about 45 s on 2 idle cores, most of it the base's and the ControlNet's training
def test_trained_tiny_controlnet_keeps_more_content_at_strength_075(capsys, tmp_path, control_trained_base):
    from infer.evaluate.content_kept import content_kept
    from infer.restyle.content import write_builtin_content

    scenes = write_builtin_content(tmp_path / "content", 64)
    own = control_trained_base / "controlnet-canny"
    assert (own / "diffusion_pytorch_model.safetensors").is_file()
    args = [tmp_path / "content", "--lora", "none", "--base", control_trained_base, "--strength", "0.75"]
    args += ["--size", "64", "--steps", "10", "--guidance", "5", "--device", "cpu", "--prompt", "a picture"]
    kept = {}
    for name, flags in [("plain", []), ("canny", ["--control", "canny"])]:
        code, out = restyle(capsys, *args, *flags, "--out", tmp_path / name)
        assert code == 0, out
        outputs = {o.name.split("_seed")[0]: o for o in (tmp_path / name).glob("*.png")}
        assert sorted(outputs) == sorted(s.stem for s in scenes)
        kept[name] = np.mean(
            [content_kept(Image.open(s), Image.open(outputs[s.stem]))["content_kept"] for s in scenes]
        )
    record = (tmp_path / "canny" / "house_seed0_str0.75_nolora_canny1.json").read_text()
    assert str(own) in record  # the base's own ControlNet, found without --control-model
    print(f"content kept at strength 0.75: {kept['plain']:.3f} without, {kept['canny']:.3f} with canny")
    assert kept["canny"] > kept["plain"] + 0.01, kept


def test_tiny_base_adds_a_trained_sdxl_controlnet_to_an_existing_base(tmp_path, tiny_bases, capsys):
    import json
    import shutil

    base = shutil.copytree(tiny_bases["sdxl"], tmp_path / "base")
    args = ["tiny-base", str(base), "--controlnet", "canny", "--controlnet-steps", "2", "--add-to-existing"]
    assert main(args) == 0
    folder = base / "controlnet-canny"
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.glob("*.bin"))
    assert json.loads((folder / "config.json").read_text())["addition_embed_type"] == "text_time"  # SDXL's
    with pytest.raises(Exception, match="already exists"):
        main(args)
