"""`make bench QUICK=1` machinery: one quick repeat writes results that parse and hold every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_quick_bench_writes_parseable_results(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "oeuvre.bench", "--quick", "--repeats", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "bench/results.json").read_text())
    assert results["train"]["tiny_sd15_64px"]["speedup"]["median"] > 0
    assert results["restyle"]["tiny_sd15_64px"]["ratio"]["median"] > 0
    assert results["curation"]["curation_images_per_s"]["median"] > 0
    assert set(results["curation"]["near_duplicate_search_s"]) == {"1000", "10000", "100000"}
    assert results["machine"]["versions"]["torch"]
    table = (tmp_path / "bench/RESULTS.md").read_text()
    assert "train step, tiny_sd15_64px" in table and "restyle, tiny_sd15_64px" in table
