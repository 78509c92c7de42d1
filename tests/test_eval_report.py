"""`python -m infer evaluate`: the report on a tiny trained run; bad input refused before models load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from eval_helpers import train_tiny_run
from PIL import Image

from infer.__main__ import main
from oeuvre.inputs import InputError

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
STRENGTHS = ("0.5", "0.9")


@pytest.fixture(scope="module")
def tiny_run(tiny_bases, tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("run"), tiny_bases["sd15"])


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> dict:
    """One evaluation with a baseline that is a copy of a training work, and checkpoints."""
    from infer.restyle.content import write_builtin_content

    content = tmp_path_factory.mktemp("content")
    write_builtin_content(content, 64)
    (content / "portrait.png").unlink()  # house and harbour are enough, and faster
    baseline = tmp_path_factory.mktemp("baseline")
    shutil.copy(tiny_run / "dataset" / "train" / "train-001.png", baseline / "house_single_image.png")
    out = tmp_path_factory.mktemp("report")
    code = main(
        ["evaluate", str(tiny_run), "--content", str(content), "--baseline", str(baseline), "--checkpoints"]
        + ["--out", str(out), "--strengths", *STRENGTHS]
    )
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    data["folder"] = out
    return data


def test_report_has_every_column_for_every_content_image(report):
    expected = ["content", "baseline", "base@0.5", "base@0.9", "oeuvre@0.5", "oeuvre@0.9"]
    assert report["columns"] == expected
    rows = {row["content"]: row["cells"] for row in report["rows"]}
    assert set(rows) == {"house", "harbour"}
    assert set(rows["house"]) == set(expected)  # the only content image with a baseline
    assert set(rows["harbour"]) == set(expected) - {"baseline"}
    for cells in rows.values():
        for cell in cells.values():
            assert set(cell) >= {"image", "style", "nearest_holdout", "copy", "content_kept"}
            assert (report["folder"] / cell["image"]).is_file()
            assert cell["nearest_holdout"]["id"].startswith("holdout/")
            assert cell["copy"]["id"].startswith("train/")


def test_report_names_the_descriptor_of_every_style_number(report):
    assert report["descriptors"] == ["weights-free"]
    for column in report["means"].values():
        assert set(column["style"]) == {"weights-free"}
    html = (report["folder"] / "index.html").read_text()
    assert "style [weights-free]" in html and "style[weights-free]" in html


def test_report_has_the_strength_and_checkpoint_plots_as_png(report):
    assert report["plots"] == [
        "style_vs_strength.png",
        "content_vs_strength.png",
        "style_vs_step.png",
        "content_vs_step.png",
    ]
    html = (report["folder"] / "index.html").read_text()
    for plot in report["plots"]:
        with Image.open(report["folder"] / plot) as image:
            assert image.format == "PNG" and image.width > 200
        assert f'src="{plot}"' in html


def test_checkpoints_are_evaluated_by_training_step(report):
    steps = [row["step"] for row in report["checkpoints"]]
    assert steps == [1, 2]  # checkpoint step-1, then the final LoRA (step 2)


def test_baseline_copy_of_a_training_work_is_flagged_and_restyles_are_not(report):
    house = next(row for row in report["rows"] if row["content"] == "house")["cells"]
    assert house["baseline"]["copy"]["flagged"] and house["baseline"]["copy"]["id"] == "train/train-001.png"
    assert '<b class="copy">COPY</b>' in (report["folder"] / "index.html").read_text()
    for row in report["rows"]:
        for column in ("oeuvre@0.5", "oeuvre@0.9"):
            assert not row["cells"][column]["copy"]["flagged"]


def test_means_table_covers_every_column(report):
    assert list(report["means"]) == report["columns"]
    assert report["means"]["content"]["content_kept"] == pytest.approx(1.0)
    assert report["means"]["baseline"]["copies"] == 1


def test_report_states_per_strength_whether_the_lora_beat_the_base(report, tmp_path):
    from infer.evaluate.report import verdict

    sentence = report["verdict"]
    assert sentence.startswith("Under weights-free, the LoRA's outputs are ")
    for strength in report["settings"]["strengths"]:
        assert f"{strength:g}: " in sentence
    row = {"n": 1, "content_kept": 0.5, "copies": 0}
    table = {
        "base@0.3": {**row, "style": {"d": 0.20}},
        "base@0.6": {**row, "style": {"d": 0.20}},
        "oeuvre@0.3": {**row, "style": {"d": 0.19}},
        "oeuvre@0.6": {**row, "style": {"d": 0.25}},
    }
    assert "at 1 of 2 strengths (LoRA minus base: 0.3: -0.010, 0.6: +0.050)" in verdict(table, "d")
    table["oeuvre@0.6"]["style"]["d"] = 0.1
    assert "not more similar" in verdict(table, "d")


def test_run_without_holdout_is_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "index"))
    shutil.rmtree(run / "dataset" / "holdout")
    with pytest.raises(InputError, match="no held-out works"):
        main(["evaluate", str(run)])


def test_empty_content_folder_is_refused(tiny_run, tmp_path):
    with pytest.raises(InputError, match="no image files"):
        main(["evaluate", str(tiny_run), "--content", str(tmp_path), "--out", str(tmp_path / "r")])


def test_baseline_names_matching_no_content_are_listed(tiny_run, tmp_path):
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    for name in ("lighthouse.png", "house_ok.png", "zebra.png"):
        Image.new("RGB", (8, 8)).save(baseline / name)
    with pytest.raises(InputError, match="lighthouse.png, zebra.png match no content image"):
        main(["evaluate", str(tiny_run), "--baseline", str(baseline), "--out", str(tmp_path / "r")])


def test_missing_learned_descriptor_falls_back_and_says_so(tiny_run, tmp_path, capsys):
    from infer.evaluate.command import Judge

    judge = Judge(tiny_run / "dataset", [f"clip:{tmp_path / 'absent'}"], top_k=3)
    assert [d.name for d in judge.descriptors] == ["weights-free"]
    assert "absent" in judge.notes[0] and "fell back to weights-free" in capsys.readouterr().err


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is absent")
def test_single_image_baseline_is_evaluated_beside_a_restyle_of_the_same_photo(tiny_run, tmp_path):
    out = tmp_path / "r"
    code = main(
        ["evaluate", str(tiny_run), "--content", str(FIXTURES / "photos"), "--strengths", "0.5"]
        + ["--baseline", str(FIXTURES / "single_image_transfer"), "--out", str(out)]
    )
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    row = next(r for r in data["rows"] if r["content"] == "tubingen")
    assert {"content", "baseline", "base@0.5", "oeuvre@0.5"} <= set(row["cells"])
    assert data["baselines"]["tubingen"].endswith("tubingen_starry_night.jpg")
    assert row["cells"]["baseline"]["content_kept"]["content_kept"] > 0


def test_control_adds_its_columns_and_the_style_against_content_plot(tiny_run, tiny_controlnets, tmp_path):
    from infer.restyle.content import write_builtin_content

    content = tmp_path / "content"
    write_builtin_content(content, 64)
    (content / "portrait.png").unlink()
    (content / "harbour.png").unlink()
    code = main(
        ["evaluate", str(tiny_run), "--content", str(content), "--out", str(tmp_path / "report")]
        + [
            "--strengths",
            "0.9",
            "--control",
            "canny:0.8",
            "--control-model",
            f"canny={tiny_controlnets['sd15']}",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["columns"] == ["content", "base@0.9", "oeuvre@0.9", "oeuvre+canny@0.9"]
    assert data["settings"]["controls"] == [
        {"kind": "canny", "model": str(tiny_controlnets["sd15"]), "weight": 0.8}
    ]
    with_control, without = data["means"]["oeuvre+canny@0.9"], data["means"]["oeuvre@0.9"]
    assert with_control["content_kept"] != without["content_kept"]  # a different image: the ControlNet acted
    assert "style_vs_content.png" in data["plots"]
    assert Image.open(tmp_path / "report" / "style_vs_content.png").size[0] > 100
