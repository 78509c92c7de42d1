"""The recommendation's decision rule on hand-made cells: constraint, maximum, tie-breaks."""

from __future__ import annotations

import itertools
import random

from infer.evaluate.recommend import Cell, Recommendation, default_floor, recommend


def cell(step=1, strength=0.55, scale=0.8, style=0.5, kept=0.8, copies=0) -> Cell:
    return Cell(step, strength, scale, style, kept, copies)


def test_choice_is_the_most_similar_eligible_cell():
    cells = [
        cell(style=0.9, kept=0.3),  # best style but loses the content
        cell(style=0.8, copies=1),  # copies a work
        cell(style=0.7, scale=1.0),
        cell(style=0.6, scale=0.6),
    ]
    result = recommend(cells, floor=0.5)
    assert result.choice == cells[2]
    assert result.runner_up == cells[3]


def test_ties_go_to_the_earlier_checkpoint_then_the_lower_scale():
    cells = [cell(step=4, scale=0.6), cell(step=2, scale=1.0), cell(step=2, scale=0.6, strength=0.75)]
    assert recommend(cells, floor=0.5).choice == cells[2]
    assert recommend(cells[:2], floor=0.5).choice == cells[1]
    near = [cell(step=2, style=0.5 + 1e-9), cell(step=1, style=0.5)]  # equal to TIE_DIGITS decimals
    assert recommend(near, floor=0.5).choice == near[1]


def test_content_kept_equal_to_the_floor_is_eligible():
    assert recommend([cell(kept=0.6)], floor=0.6).choice == cell(kept=0.6)


def test_nothing_is_recommended_when_no_cell_is_eligible():
    result = recommend([cell(kept=0.1), cell(copies=2)], floor=0.5)
    assert result.choice is None and result.runner_up is None
    assert len(result.cells) == 2


def test_random_grids_choice_satisfies_the_constraint_and_no_eligible_cell_beats_it():
    rng = random.Random(0)
    for _ in range(200):
        cells = [
            Cell(step, strength, scale, rng.random(), rng.random(), int(rng.random() < 0.2))
            for step, strength, scale in itertools.product((1, 2), (0.35, 0.55, 0.75), (0.6, 0.8, 1.0))
        ]
        floor = rng.random()
        result = recommend(cells, floor)
        eligible = [c for c in cells if c.content_kept >= floor and c.copies == 0]
        if not eligible:
            assert result.choice is None
            continue
        assert result.choice.content_kept >= floor and result.choice.copies == 0
        assert all(round(c.style, 6) <= round(result.choice.style, 6) for c in eligible)
        assert result.runner_up is None or result.runner_up != result.choice


def test_recommendation_round_trips_through_json():
    result = recommend([cell(style=0.7), cell(style=0.6, step=2)], floor=0.5)
    assert Recommendation.from_json(result.to_json()) == result


def test_default_floor_is_a_fraction_of_the_base_models_content_kept():
    assert default_floor(0.8) == 0.72


def test_report_section_draws_the_grid_as_a_heat_map_with_the_choice(tmp_path):
    from PIL import Image

    from infer.evaluate.recommend_report import HEATMAP, section_html, write_heatmap

    cells = [
        cell(step=step, strength=strength, scale=scale, style=strength * scale, copies=int(scale == 1.0))
        for step in (1, 2)
        for strength in (0.35, 0.55)
        for scale in (0.6, 1.0)
    ]
    data = {**recommend(cells, floor=0.5).to_json(), "descriptor": "weights-free", "seconds_per_cell": 0.5}
    write_heatmap(tmp_path / HEATMAP, data)
    with Image.open(tmp_path / HEATMAP) as image:
        assert image.format == "PNG" and image.height > image.width / 2  # two rows of panels
    text = section_html(data)
    assert "<h2>Recommended</h2>" in text and f'src="{HEATMAP}"' in text
    assert "step 1, strength 0.55, scale 0.6" in text  # the best cell without a copy, earlier step
