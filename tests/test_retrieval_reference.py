"""`restyle --reference nearest`: the nearest work's title/caption joins the prompt; IP-Adapter errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_retrieval import _write_split

from data.synth import paint_artist
from infer.__main__ import main
from infer.restyle.reference import reference_prompt
from infer.works.retrieval import Work
from oeuvre.inputs import InputError

FAST = ["--size", "64", "--steps", "2", "--device", "cpu", "--prompt", "a painting in the style of <x>"]


def _work(title=None, text=None) -> Work:
    return Work("train", Path("train/w.png"), title, text, None)


def test_reference_prompt_adds_the_title_else_the_caption_subject():
    prompt = "a painting in the style of <x>"
    assert reference_prompt(prompt, _work("The Harbour", "ignored")) == f"{prompt}, The Harbour"
    assert (
        reference_prompt(prompt, _work(None, f"a village at night, {prompt}"))
        == f"{prompt}, a village at night"
    )
    assert reference_prompt(prompt, _work(None, prompt)) == prompt


@pytest.fixture
def run_with_lora(tmp_path, tiny_loras) -> Path:
    """A run folder: the tiny random LoRA plus a dataset of two titled swirl works and one wash work."""
    run = tmp_path / "run"
    (run / "lora").mkdir(parents=True)
    shutil.copy(tiny_loras["sd15"], run / "lora" / "art.safetensors")
    swirl = [Image.open(p) for p in paint_artist(tmp_path / "s", "swirl", n=2, seed=0, size_px=64)]
    wash = [Image.open(p) for p in paint_artist(tmp_path / "w", "wash", n=2, seed=0, size_px=64)]
    titles = {"swirl0.png": "Swirling Night", "swirl1.png": "Swirling Day", "wash0.png": "Pale Morning"}
    _write_split(run / "dataset", "train", {"swirl0.png": swirl[0], "wash0.png": wash[0]}, titles)
    _write_split(run / "dataset", "holdout", {"swirl1.png": swirl[1]}, titles)
    wash[1].save(tmp_path / "pale.png")
    return run


def test_reference_nearest_puts_the_nearest_works_title_in_the_prompt(tmp_path, run_with_lora):
    out = tmp_path / "out"
    code = main(
        ["restyle", str(tmp_path / "pale.png"), "--lora", str(run_with_lora), "--out", str(out)]
        + FAST
        + ["--reference", "nearest"]
    )
    assert code == 0
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["reference"]["work"] == "train/wash0.png"
    assert record["prompt"] == "a painting in the style of <x>, Pale Morning"
    assert "Pale Morning" in record["parameters"]


def test_missing_ip_adapter_is_a_clear_error(tmp_path, run_with_lora):
    with pytest.raises(InputError, match="--ip-adapter .*could not load"):
        main(
            [
                "restyle",
                str(tmp_path / "pale.png"),
                "--lora",
                str(run_with_lora),
                "--out",
                str(tmp_path / "o"),
            ]
            + FAST
            + ["--reference", "nearest", "--ip-adapter", str(tmp_path / "no-ip-adapter")]
        )


def test_ip_adapter_without_reference_nearest_is_refused(tmp_path, run_with_lora):
    with pytest.raises(InputError, match="only used with --reference nearest"):
        main(
            ["restyle", str(tmp_path / "pale.png"), "--lora", str(run_with_lora)]
            + FAST
            + ["--ip-adapter", "h94/IP-Adapter"]
        )
