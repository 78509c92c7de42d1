"""Near-duplicate search matches the quadratic reference; synthetic styles are real and measurable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data.dedupe import brute_force_pairs, group_near_duplicates, near_duplicate_pairs
from data.synth import STYLES, paint, paint_artist, style_statistics
from oeuvre.errors import OeuvreError


def random_hashes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, n, dtype=np.uint64
    )


@pytest.mark.parametrize("max_distance", [0, 3, 6, 10, 17])
def test_multi_index_search_finds_exactly_the_brute_force_pairs(max_distance):
    base = random_hashes(800, 0)
    rng = np.random.default_rng(1)
    copies = base[:300].copy()
    for _ in range(4):  # up to four flipped bits per copy
        copies ^= np.uint64(1) << rng.integers(0, 64, 300).astype(np.uint64)
    hashes = np.concatenate([base, copies])
    found = near_duplicate_pairs(hashes, hashes, max_distance)
    assert np.array_equal(found, brute_force_pairs(hashes, hashes, max_distance))
    if max_distance >= 4:
        assert len(found) >= len(hashes) + 2 * 300  # every copy found both ways, plus i == i


def test_groups_link_crops_through_view_hashes_and_are_transitive():
    hashes = [0b0, 0b1111_1111 << 40, (1 << 64) - 1, 0b111]
    views = [[0b1111_1111 << 40], [], [], []]  # 1 is a crop of 0; 3 is 3 bits from 0
    assert group_near_duplicates(hashes, views, 3) == [[0, 1, 3], [2]]
    assert group_near_duplicates(hashes, views, 2) == [[0, 1], [2], [3]]


def test_synthetic_styles_separate_on_every_image_by_saturation_and_texture(tmp_path):
    stats = {}
    for style in ("swirl", "wash"):
        paths = paint_artist(tmp_path / style, style, 6, seed=3, size_px=96)
        assert len(paths) == 6 and all(p.with_suffix(".txt").read_text().strip() for p in paths)
        stats[style] = [style_statistics(Image.open(p)) for p in paths]
    assert max(s["saturation"] for s in stats["wash"]) < 0.2 < min(s["saturation"] for s in stats["swirl"])
    assert max(s["texture"] for s in stats["wash"]) < 15 < min(s["texture"] for s in stats["swirl"])


def test_synthetic_paintings_are_deterministic_and_varied():
    a, caption_a = paint("swirl", 7, 64)
    b, caption_b = paint("swirl", 7, 64)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and caption_a == caption_b
    others = [np.asarray(paint("swirl", s, 64)[0], dtype=float) for s in range(8, 12)]
    assert all(np.abs(np.asarray(a, dtype=float) - o).mean() > 10 for o in others)
    assert len({paint("wash", s, 32)[1] for s in range(20)}) >= 3  # several subjects


def test_unknown_style_names_the_known_ones(tmp_path):
    with pytest.raises(OeuvreError, match="unknown synthetic style.*swirl, wash"):
        paint_artist(tmp_path, "cubist", 2, 0)
    assert set(STYLES) >= {"swirl", "wash"}


def test_synth_cli_then_curate_cli(tmp_path, run_cli):
    done = run_cli(
        "data", "synth", tmp_path / "art", "--style", "wash", "--n", "5", "--seed", "0", "--size", "64"
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "art").glob("wash-*.png"))) == 5
    done = run_cli(
        "data",
        "configs/demo.yaml",
        "artist=synthwash",
        f"data.sources=[{{folder: {tmp_path / 'art'}}}]",
        f"output_dir={tmp_path / 'out'}",
    )
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "out" / "dataset" / "train" / "metadata.jsonl").read_text().splitlines()
    assert len(rows) == 4  # five works, one held out
    bad = run_cli("data", "synth", tmp_path / "x", "--style", "nope")
    assert bad.returncode != 0 and bad.stderr.startswith("error: --style 'nope'")
