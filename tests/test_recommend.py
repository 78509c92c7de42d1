"""`python -m infer recommend` on a tiny trained run: the choice is consistent with its own numbers, it
travels in both LoRA files and the card, and restyle uses it unless flags say otherwise."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from eval_helpers import train_tiny_run

from infer.__main__ import main
from infer.evaluate.recommend import TIE_DIGITS, Recommendation
from infer.lora.files import find_run_lora, read_lora_metadata
from infer.lora.recommended import PLOT, recommended_settings


@pytest.fixture(scope="module")
def recommended(tiny_bases, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny run (checkpoint step-1, final step 2) and its recommendation over one content image and a
    2 x 2 grid (the command's default is 3 x 3; a smaller grid keeps the suite fast)."""
    from infer.restyle.content import write_builtin_content

    run = train_tiny_run(tmp_path_factory.mktemp("run"), tiny_bases["sd15"])
    content = tmp_path_factory.mktemp("content")
    write_builtin_content(content, 64)
    for name in ("portrait.png", "harbour.png"):
        (content / name).unlink()
    # Floor 0: every cell but a copy is eligible, so the tiny run always gets a recommendation.
    grid = ["--strengths", "0.35", "0.75", "--scales", "0.6", "1.0"]
    assert main(["recommend", str(run), "--content", str(content), "--floor", "0", *grid]) == 0
    return run, json.loads((run / "report" / "recommendation.json").read_text())


def test_grid_covers_every_checkpoint_strength_and_scale(recommended):
    _, data = recommended
    cells = {(c["step"], c["strength"], c["scale"]) for c in data["cells"]}
    assert cells == {(s, t, c) for s in (1, 2) for t in (0.35, 0.75) for c in (0.6, 1.0)}
    assert data["final_step"] == 2 and data["seconds_per_cell"] > 0


def test_choice_satisfies_the_constraint_and_no_eligible_cell_beats_it(recommended):
    _, data = recommended
    result = Recommendation.from_json(data)
    choice = result.choice
    assert choice is not None and choice.content_kept >= result.floor and choice.copies == 0
    eligible = [c for c in result.cells if c.content_kept >= result.floor and c.copies == 0]
    best = round(choice.style, TIE_DIGITS)
    assert all(round(c.style, TIE_DIGITS) <= best for c in eligible)
    assert result.runner_up in eligible and result.runner_up != choice


def test_both_lora_files_carry_the_recommendation(recommended):
    run, data = recommended
    lora, _ = find_run_lora(run)
    choice = data["choice"]
    for file in (lora, lora.with_name(f"{lora.stem}.kohya.safetensors")):
        found = recommended_settings(read_lora_metadata(file))
        assert found["strength"] == choice["strength"] and found["scale"] == choice["scale"]
        assert found["checkpoint"].startswith(f"step-{choice['step']}")
        assert found["evidence"]["descriptor"] == "weights-free"
        assert found["evidence"]["style"] == pytest.approx(choice["style"])
    card = (lora.parent / "README.md").read_text()
    assert "## Recommended settings" in card and PLOT in card and (lora.parent / PLOT).is_file()
    if choice["step"] != data["final_step"]:  # the earlier checkpoint shipped; the final one kept
        assert (run / "checkpoints" / "final-step-2" / lora.name).is_file()
        assert "beat the final step" in card


def test_restyle_defaults_to_the_recommended_strength_and_scale_and_flags_win(recommended):
    from infer.restyle.settings import add_arguments, resolve_settings

    run, data = recommended
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = resolve_settings(parser.parse_args(["in.png", "--lora", str(run)]))
    assert settings.strengths == (data["choice"]["strength"],)
    assert settings.scales == (data["choice"]["scale"],)
    flags = resolve_settings(parser.parse_args(["in.png", "--lora", str(run), "--strength", "0.9"]))
    assert flags.strengths == (0.9,) and flags.scales == (data["choice"]["scale"],)


def test_lora_inspect_shows_the_recommendation(recommended, capsys):
    run, data = recommended
    lora, _ = find_run_lora(run)
    assert main(["lora", "inspect", str(lora)]) == 0
    assert f"recommended: strength {data['choice']['strength']:g}" in capsys.readouterr().out


def test_grid_larger_than_the_bound_is_refused(recommended):
    from oeuvre.inputs import InputError

    run, _ = recommended
    with pytest.raises(InputError, match="1 to 3"):
        main(["recommend", str(run), "--scales", "0.2", "0.4", "0.6", "0.8"])


def test_an_earlier_checkpoint_ships_and_a_rerun_restores_the_final_step(recommended, tmp_path):
    import safetensors.torch

    from infer.lora.checkpoints import checkpoint_as_lora
    from infer.lora.recommended import ship_recommendation

    run, _ = recommended
    lora, emb = find_run_lora(run)
    kept = run / "checkpoints" / "final-step-2" / lora.name
    before = safetensors.torch.load_file(lora) if not kept.is_file() else safetensors.torch.load_file(kept)
    step1, emb1 = checkpoint_as_lora(run / "checkpoints" / "step-1", lora, emb, tmp_path / "step-1")
    evidence = {"descriptor": "weights-free", "style": 0.5, "content_kept": 0.5, "floor": 0.0}
    ship_recommendation(
        run, step=1, final_step=2, strength=0.35, scale=0.6, evidence=evidence,
        points=[(0.5, 0.5, True)], chosen=(0.5, 0.5), weights=(step1, emb1),
    )  # fmt: skip
    shipped, checkpoint = safetensors.torch.load_file(lora), safetensors.torch.load_file(step1)
    assert all((shipped[key] == checkpoint[key]).all() for key in checkpoint)
    assert kept.is_file() and "beat the final step" in (lora.parent / "README.md").read_text()

    args = ["--strengths", "0.55", "--scales", "0.8", "--no-checkpoints", "--floor", "0"]
    assert main(["recommend", str(run), *args, "--out", str(tmp_path / "report")]) == 0
    restored = safetensors.torch.load_file(lora)
    assert all((restored[key] == before[key]).all() for key in before)
    assert recommended_settings(read_lora_metadata(lora))["checkpoint"] == "step-2 (final)"
