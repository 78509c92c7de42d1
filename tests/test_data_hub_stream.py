"""Hub ids are streamed: against a loopback stand-in for the Hub and its viewer (data/fake_hub.py),
serving 20 WikiArt-shaped parquet shards (1,000 rows of ~4 KB JPEGs, 2 % van Gogh) with range requests
and /filter, a run reads a small fraction of the bytes, keeps what a full-download run keeps, estimates
first, and resumes after a network error without reading finished shards again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data.build import build_dataset
from data.fake_hub import FakeHub, write_wikiart_like
from data.sources import SourceError
from oeuvre.config import PROJECT_CONFIGS, load_config

ARRANGEMENTS = ("clustered", "spread")
VAN_GOGH = "{artist: vincent-van-gogh}"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("wikiart")
    made = {k: write_wikiart_like(root / k, spread=k == "spread") for k in ARRANGEMENTS}
    broken = root / "broken" / "train-00000-of-00001.parquet"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8 a JPEG, not parquet " * 40)
    made["broken"] = [broken]
    return made


@pytest.fixture
def hub(shards, monkeypatch):
    with FakeHub() as fake:
        for name, paths in shards.items():
            fake.add(f"fake/{name}", paths)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("OEUVRE_VIEWER_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online, against the loopback hub only
        yield fake


def config(out: Path, source: str, *overrides: str):
    return load_config(
        PROJECT_CONFIGS / "demo.yaml",
        [
            "artist=tester",
            f"data.sources=[{source}]",
            f"output_dir={out}",
            "data.min_side_px=48",
            "data.holdout_fraction=0",
            "data.download_retries=1",
            *overrides,
        ],
    )


def kept(result) -> set[tuple[int, str]]:
    """(row in the split, image SHA-256) of each kept work: the same whichever way the rows came."""
    return {(int(r.source.rsplit("#", 1)[1]), r.sha256) for r in result.records if r.status == "kept"}


def done_units(out: Path) -> list[str]:
    (state,) = (out / "cache" / "data" / "hub").glob("*/state.json")
    return json.loads(state.read_text())["done"]


@pytest.fixture(scope="module")
def full_download(shards, tmp_path_factory) -> dict[str, set]:
    """The old way: every shard on disk, read whole through `datasets`, then filtered."""
    out = {}
    for name in ARRANGEMENTS:
        folder = shards[name][0].parent
        run = tmp_path_factory.mktemp(f"full-{name}")
        out[name] = kept(build_dataset(config(run, f"{{hf: {folder}, filter: {VAN_GOGH}}}"), progress=False))
    return out


@pytest.mark.parametrize(("arrangement", "method"), [("clustered", "rg"), ("spread", "filter")])
def test_streamed_run_reads_a_small_fraction_and_keeps_what_a_full_download_keeps(
    tmp_path, hub, shards, full_download, arrangement, method
):
    dataset_bytes = sum(p.stat().st_size for p in shards[arrangement])
    result = build_dataset(
        config(tmp_path, f"{{hf: fake/{arrangement}, filter: {VAN_GOGH}}}"), progress=False
    )
    assert kept(result) == full_download[arrangement] and len(full_download[arrangement]) == 20
    # Clustered: footers, the artist column and 2 row groups of 100; spread: footers, the artist column
    # and the 20 rows through /filter (row groups would be 18 of 100, about 21 %). Both measure ~5 %.
    assert hub.bytes_served < 0.08 * dataset_bytes
    assert {u.split(":")[0] for u in done_units(tmp_path)} == {method}  # the cheaper way was chosen


def test_row_groups_on_spread_matches_read_more_than_filter_which_is_why_auto_avoids_them(tmp_path, hub):
    served = {}
    for read in ("row_groups", "filter"):
        hub.reset()
        build_dataset(
            config(tmp_path / read, f"{{hf: fake/spread, filter: {VAN_GOGH}, read: {read}}}"), progress=False
        )
        served[read] = hub.bytes_served
    assert served["row_groups"] > 2.5 * served["filter"]


def test_dry_run_prints_the_estimate_reads_no_image_and_writes_nothing(tmp_path, hub, capsys):
    from data.__main__ import main

    out = tmp_path / "run"
    main(
        [
            "configs/demo.yaml",
            f"output_dir={out}",
            f"data.sources=[{{hf: fake/clustered, filter: {VAN_GOGH}}}]",
            "--dry-run",
        ]
    )
    printed = capsys.readouterr().out
    estimate = re.search(r"# estimate: .*", printed).group()
    assert "20 parquet shards" in estimate and "match 20 rows in 2 of 100 row groups" in estimate
    assert "by row groups" in estimate
    assert not any(path.startswith("/assets/") for path in hub.hits)
    assert hub.bytes_served < 0.04 * sum(p.stat().st_size for p in hub.datasets["fake/clustered"])
    assert not out.exists()


def test_max_works_keeps_a_sample_fixed_by_the_seed_and_reads_only_it(tmp_path, hub):
    def run(name: str, seed: int) -> set:
        source = f"{{hf: fake/spread, filter: {VAN_GOGH}}}"
        return kept(
            build_dataset(config(tmp_path / name, source, "data.max_works=5", f"seed={seed}"), progress=False)
        )

    hub.reset()
    first = run("a", 0)
    images_read = sum(1 for p in hub.hits if p.startswith("/assets/"))
    assert len(first) == 5 and images_read == 5
    assert run("b", 0) == first and run("c", 1) != first


def test_network_error_fails_with_one_line_naming_the_shard_and_the_next_run_resumes(
    tmp_path, hub, shards, full_download
):
    source = f"{{hf: fake/spread, filter: {VAN_GOGH}, read: row_groups}}"
    broken = f"/files/fake/spread/{shards['spread'][10].name}"
    size = shards["spread"][10].stat().st_size
    # Image column chunks fail; the scan's reads (small filter-column chunks, the footer at the end) pass.
    failures = []

    def fail(path: str, start: int, length: int) -> bool:
        if path == broken and length > 2000 and start + length < size - 8:
            failures.append(start)
            return True
        return False

    hub.fail = fail
    with pytest.raises(SourceError) as failed:
        build_dataset(config(tmp_path, source), progress=False)
    message = str(failed.value)
    assert "\n" not in message and "shard 10" in message and "after 2 tries: HTTP 503" in message
    assert len(failures) == 2 and len(set(failures)) == 1  # one read, retried once, then given up
    finished = done_units(tmp_path)
    assert finished and all(int(u.split(":")[1]) < 10 for u in finished)

    hub.fail = lambda path, start, length: False
    hub.reset()
    result = build_dataset(config(tmp_path, source), progress=False)
    assert kept(result) == full_download["spread"]
    shards_read = {int(p.split("-")[1]) for p in hub.hits if p.startswith("/files/")}
    assert shards_read and min(shards_read) >= 10  # nothing before the failure is read again


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (f"{{hf: fake/nothing-here, filter: {VAN_GOGH}}}", r"'fake/nothing-here'.*no such dataset"),
        (f"{{hf: fake/spread, split: test, filter: {VAN_GOGH}}}", r"no split 'test' \(splits: train\)"),
        (
            "{hf: fake/spread, filter: {painter: x}}",
            r"filter column 'painter' does not exist \(columns: image",
        ),
        ("{hf: fake/spread, filter: {artist: van-gogh}}", r"matches no label; closest: 'vincent-van-gogh'"),
        (
            "{hf: fake/spread, filter: {title: work-7}}",
            r"title='work-7' matches no row; closest values: 'work 7'",
        ),
        ("{hf: fake/broken}", r"shard 0 \(.*\): not a parquet file"),
    ],
)
def test_bad_hub_input_is_a_one_line_error(tmp_path, hub, source, message):
    with pytest.raises(SourceError, match=message) as failed:
        build_dataset(config(tmp_path, source), progress=False)
    assert "\n" not in str(failed.value)
