"""Nothing lost: atomic writes keep the old file or folder until the new one is whole, files keep the
usual permissions, and the holdout split is the same in every process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oeuvre.atomic import aside_name, atomic_directory, atomic_write_bytes, replace_directory, restore_aside

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_files_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "lora.safetensors", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_replaced_folder_survives_a_crash_before_its_successor_is_renamed_in(tmp_path, monkeypatch):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = os.replace

    def crash_on_rename_in(src, dst):
        if Path(dst) == target:
            raise KeyboardInterrupt  # the process dies between "aside" and "in"
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_rename_in)
    with pytest.raises(KeyboardInterrupt), atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert not target.exists() and (aside_name(target) / "old.txt").read_text() == "old"
    restore_aside(target)  # what the next run does first
    assert (target / "old.txt").read_text() == "old"


def test_replacing_a_folder_leaves_only_the_new_one(tmp_path):
    target, new = tmp_path / "dataset", tmp_path / "new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_directory(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"] and not aside_name(target).exists()


def test_holdout_split_is_the_same_under_any_hash_seed():
    # Python's hash() is salted per process: a split keyed by it would differ between runs.
    code = (
        "from data.split import choose_holdout as c; print(sorted(c([f'w{i}' for i in range(40)], 0.25, 7)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and outputs.pop().strip() != "[]"


@pytest.mark.slow
def test_a_dataset_without_holdout_trains_and_the_card_says_so(tmp_path, tiny_bases, run_cli):
    """data.holdout_fraction=0 (a user with eight works who wants all of them for training)."""
    from train_helpers import train_config, train_in_process, write_dataset

    from infer.lora.files import read_lora_metadata

    works = tmp_path / "works"
    works.mkdir()
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (80, 96, 3), np.uint8)).save(
            works / f"w{i}.png"
        )
    out = tmp_path / "data-run"
    built = run_cli(
        "data",
        "configs/demo.yaml",
        f"data.sources=[{{folder: {works}}}]",
        f"output_dir={out}",
        "data.min_side_px=48",
        "data.holdout_fraction=0",
    )
    assert built.returncode == 0, built.stderr
    assert (out / "dataset" / "holdout" / "metadata.jsonl").read_text() == ""
    assert len((out / "dataset" / "train" / "metadata.jsonl").read_text().splitlines()) == 8

    run_dir = tmp_path / "run"
    write_dataset(run_dir / "dataset", "<demo-artist>", n_holdout=0)
    lora = train_in_process(train_config(run_dir, tiny_bases["sd15"], "train.max_train_steps=2"))
    assert read_lora_metadata(lora)["oeuvre.holdout_works"] == "0"
    assert "No works were held out" in (run_dir / "lora" / "README.md").read_text()
    assert list((run_dir / "samples").glob("step-*.png"))  # the sample grid still comes, without holdout rows
