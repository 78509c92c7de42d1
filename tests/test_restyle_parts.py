"""The small parts of restyle: inputs, sizes, the A1111 parameters text, sweep parsing and the grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infer.restyle.png_info import format_parameters, parse_parameters, png_with_parameters, read_parameters
from infer.restyle.sweep import grid_image, parse_sweep
from oeuvre.inputs import InputError, collect_inputs, fit_size, open_image, output_stems


def test_collect_inputs_files_folders_recursive_and_globs(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for name in ["a/one.jpg", "a/deep/two.PNG", "a/.hidden/three.png", "a/notes.txt", "four.webp"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_inputs([str(tmp_path / "a")])] == ["two.PNG", "one.jpg"]
    found = collect_inputs([str(tmp_path / "*.webp"), str(tmp_path / "a" / "one.jpg"), str(tmp_path / "a")])
    assert sorted(p.name for p in found) == ["four.webp", "one.jpg", "two.PNG"]  # one.jpg once
    with pytest.raises(InputError, match="matches no image files"):
        collect_inputs([str(tmp_path / "*.gif")])
    with pytest.raises(InputError, match="missing.jpg: no such file"):
        collect_inputs([str(tmp_path / "missing.jpg")])


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert open_image(tmp_path / "turned.jpg").size == (20, 40)


def test_unreadable_image_is_an_input_error(tmp_path):
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(InputError, match="fake.png: not a readable image"):
        open_image(tmp_path / "fake.png")


@pytest.mark.parametrize("size", [(4000, 3000), (640, 480), (100, 300), (64, 64), (2000, 50)])
def test_fit_size_keeps_aspect_near_the_area_in_multiples(size):
    width, height = fit_size(*size, 512, 8)
    assert width % 8 == 0 and height % 8 == 0 and width >= 8 and height >= 8
    if min(size) >= 100:
        assert abs(width / height - size[0] / size[1]) / (size[0] / size[1]) < 0.1
        assert 0.85 < width * height / 512**2 < 1.15
    assert fit_size(*size, 512, 64)[0] % 64 == 0


def test_output_stems_are_distinct_for_same_named_files(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "y.jpg"]
    stems = output_stems(paths)
    assert stems[paths[2]] == "y" and len(set(stems.values())) == 3


def test_parameters_round_trip_with_commas_quotes_and_lora_tag(tmp_path):
    fields = {"Steps": 30, "Sampler": "Euler", "CFG scale": "7", "Seed": 5, "Size": "512x384"}
    fields |= {
        "Model": "sd15",
        "Denoising strength": "0.55",
        "Lora hashes": "vangogh: 0123456789ab",
        "Skip": None,
    }
    text = format_parameters('boats, at "dusk": calm', "blurry, low", fields, ("vangogh", 0.8))
    assert text.splitlines()[0] == 'boats, at "dusk": calm <lora:vangogh:0.8>'
    path = tmp_path / "p.png"
    path.write_bytes(png_with_parameters(Image.new("RGB", (8, 8)), text))
    parsed = parse_parameters(read_parameters(path))
    assert parsed["prompt"] == 'boats, at "dusk": calm' and parsed["negative_prompt"] == "blurry, low"
    assert parsed["loras"] == [("vangogh", 0.8)] and parsed["Lora hashes"] == "vangogh: 0123456789ab"
    assert parsed["Steps"] == "30" and parsed["Size"] == "512x384" and "Skip" not in parsed


def test_parse_sweep_and_its_errors():
    assert parse_sweep(["strength=0.3,0.5,0.7", "scale=0.5,1.0"]) == {
        "strength": [0.3, 0.5, 0.7],
        "scale": [0.5, 1.0],
    }
    for bad, message in [
        (["cfg=1,2"], "KEY one of strength, scale"),
        (["strength=a,b"], "numbers"),
        (["scale="], "no values"),
        (["scale=1", "scale=2"], "swept twice"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_sweep(bad)


def test_grid_places_each_tile_in_its_row_and_column():
    rows, columns = [0.3, 0.6], [0.0, 0.5, 1.0]
    colours = {(r, c): (int(r * 200), int(c * 200), 50) for r in rows for c in columns}
    tiles = {key: Image.new("RGB", (16, 12), colour) for key, colour in colours.items()}
    grid = np.asarray(grid_image(tiles, rows, columns))
    top, left = grid.shape[0] - 2 * 12, grid.shape[1] - 3 * 16
    assert top > 0 and left > 0
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            assert tuple(grid[top + i * 12 + 6, left + j * 16 + 8]) == colours[(r, c)]


def test_run_config_gives_defaults_and_flags_override(tmp_path, tiny_loras):
    import argparse
    import shutil

    from infer.restyle.settings import add_arguments, resolve_settings
    from oeuvre.config import PROJECT_CONFIGS, config_to_yaml, load_config

    run = tmp_path / "run"
    (run / "lora").mkdir(parents=True)
    shutil.copy(tiny_loras["sd15"], run / "lora" / "tiny.safetensors")
    config = load_config(PROJECT_CONFIGS / "base.yaml", ["infer.steps=7", "infer.size_px=96", "seed=5"])
    (run / "config.yaml").write_text(config_to_yaml(config))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = resolve_settings(parser.parse_args(["in.png", "--lora", str(run)]))
    assert (settings.steps, settings.size_px, settings.seeds) == (7, 96, (5,))
    assert settings.prompt == "a painting in the style of <tiny>" and settings.out == run / "restyled"
    settings = resolve_settings(
        parser.parse_args(["in.png", "--lora", str(run), "--steps", "3", "--num", "2"])
    )
    assert settings.steps == 3 and settings.seeds == (5, 6)
