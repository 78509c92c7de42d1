"""Config loading: merge order, overrides, and one clear error per kind of bad input."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml

from oeuvre.config import PROJECT_CONFIGS, config_to_yaml, load_config, parse_override
from oeuvre.config_schema import Config, FolderSource, HubSource
from oeuvre.errors import ConfigError

DEMO = PROJECT_CONFIGS / "demo.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_artist_layer_overrides_base_and_command_line_overrides_artist():
    base = load_config(PROJECT_CONFIGS / "base.yaml")
    demo = load_config(DEMO)
    overridden = load_config(DEMO, ["train.max_train_steps=7", "seed=3"])
    assert base.train.max_train_steps == 1500
    assert demo.train.max_train_steps == 300  # artist layer beats base
    assert demo.train.text_encoder_lr == base.train.text_encoder_lr  # untouched keys come from base
    assert overridden.train.max_train_steps == 7  # override beats artist
    assert overridden.seed == 3


def test_later_override_wins_and_mappings_merge_deeply():
    config = load_config(DEMO, ["train.lora_rank=8", "train={lora_alpha: 2.5}", "train.lora_rank=2"])
    assert config.train.lora_rank == 2
    assert config.train.lora_alpha == 2.5
    assert config.train.max_train_steps == 300  # the mapping override merged, it did not replace train


def test_override_values_are_parsed_as_yaml():
    config = load_config(
        DEMO,
        ["data.sources=[{folder: some/dir}, {hf: huggan/wikiart, filter: {artist: x}}]", "train.lr=1e-4"],
    )
    assert config.data.sources == (
        FolderSource(folder="some/dir"),
        HubSource(
            hf="huggan/wikiart", split="train", config_name=None, image_column="image", filter={"artist": "x"}
        ),
    )
    assert isinstance(config.train.lr, float) and config.train.lr == 1e-4
    assert parse_override("train.snr_gamma=null") == {"train": {"snr_gamma": None}}


def test_output_dir_defaults_to_runs_artist():
    assert load_config(DEMO).output_dir == "runs/demo"
    assert load_config(DEMO, ["artist=monet"]).output_dir == "runs/monet"


def test_config_is_frozen_and_round_trips_through_yaml(tmp_path):
    config = load_config(DEMO, ["train.lora_rank=3"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    dumped = write(tmp_path / "resolved.yaml", config_to_yaml(config))
    write(tmp_path / "base.yaml", (PROJECT_CONFIGS / "base.yaml").read_text())
    assert load_config(dumped) == config


def test_base_yaml_sets_every_field_once():
    """Defaults live in base.yaml only: the schema gives none, so a field missing there would fail."""
    raw = yaml.safe_load((PROJECT_CONFIGS / "base.yaml").read_text())

    def missing(cls, mapping, prefix=""):
        for field in dataclasses.fields(cls):
            if field.name not in mapping:
                yield prefix + field.name
            elif dataclasses.is_dataclass(field.type if isinstance(field.type, type) else None):
                yield from missing(field.type, mapping[field.name], prefix + field.name + ".")

    assert list(missing(Config, raw)) == []
    assert set(raw) == {f.name for f in dataclasses.fields(Config)}


@pytest.mark.parametrize(
    ("layer", "overrides", "must_name"),
    [
        ("no_such_key: 1\n", [], ["no_such_key"]),
        ("train:\n  lora_rnk: 4\n", [], ["train.lora_rnk", "train.lora_rank"]),  # did-you-mean
        ("train:\n  lora_rank: four\n", [], ["train.lora_rank", "integer", "'four'"]),
        ("train:\n  lora_rank: 0\n", [], ["train.lora_rank", "> 0"]),
        ("train:\n  lr: -1.0e-4\n", [], ["train.lr", "> 0"]),
        ("train:\n  resolution_px: 100\n", [], ["train.resolution_px", "multiple of 8"]),
        ("infer:\n  strength: 1.5\n", [], ["infer.strength"]),
        ("train:\n  mixed_precision: fp8\n", [], ["train.mixed_precision", "fp16"]),
        ("data:\n  sources: [{ftp: x}]\n", [], ["data.sources"]),
        ("", ["train.lora_rank=-2"], ["override 'train.lora_rank=-2'", "train.lora_rank"]),
        ("", ["train.lora_rank"], ["override 'train.lora_rank'", "KEY=VALUE"]),
        ("", ["train.lr=[1"], ["override 'train.lr=[1'", "YAML syntax"]),
        ("train: [1\n", [], ["artist.yaml:", "YAML syntax"]),
        ("seed: 1\nseed: 2\n", [], ["duplicate key 'seed'"]),
    ],
)
def test_bad_input_names_origin_key_and_expectation(tmp_path, layer, overrides, must_name):
    artist = write(tmp_path / "artist.yaml", layer)
    with pytest.raises(ConfigError) as info:
        load_config(artist, overrides)
    message = str(info.value)
    assert "\n" not in message
    for text in must_name:
        assert text in message
    if not overrides:
        assert str(artist) in message


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found.*demo"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("args", "must_name"),
    [
        (["configs/demo.yaml", "no_such_key=1", "--dry-run"], "no_such_key"),
        (["configs/missing.yaml", "--dry-run"], "configs/missing.yaml"),
        (["configs/demo.yaml", "train.lora_rank=0", "--dry-run"], "train.lora_rank"),
        (["configs/demo.yaml", "train.lora_rank", "--dry-run"], "KEY=VALUE"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_no_traceback(run_cli, args, must_name):
    result = run_cli("train", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and must_name in lines[0]


def test_cli_debug_shows_the_traceback(run_cli):
    result = run_cli("train", "configs/demo.yaml", "no_such_key=1", "--dry-run", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "no_such_key" in result.stderr


def test_dry_run_prints_resolved_config_and_writes_nothing(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("data", "configs/demo.yaml", f"output_dir={out}", "train.lora_rank=5", "--dry-run")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["train"]["lora_rank"] == 5 and printed["output_dir"] == str(out)
    assert not out.exists()


def test_every_run_records_its_resolved_config(run_cli, tmp_path):
    out = tmp_path / "run"
    # The train command records its config before anything else, whatever happens next.
    run_cli("train", "configs/demo.yaml", f"output_dir={out}", "train.lora_rank=5", "train.max_train_steps=1")
    recorded = out / "config.yaml"
    assert recorded.is_file()
    assert yaml.safe_load(recorded.read_text())["train"]["lora_rank"] == 5


@pytest.mark.parametrize("spelling", ["no", "off", "false", "'no'"])
def test_mixed_precision_no_is_accepted_however_yaml_reads_it(tmp_path, spelling):
    artist = write(tmp_path / "artist.yaml", "")
    assert load_config(artist, [f"train.mixed_precision={spelling}"]).train.mixed_precision == "no"


def test_yes_is_still_refused_where_no_is_a_choice(tmp_path):
    artist = write(tmp_path / "artist.yaml", "")
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_config(artist, ["train.mixed_precision=yes"])
