"""Device, dtype and CPU allocator choices."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from oeuvre.devices import choose_device, choose_dtype
from oeuvre.errors import OeuvreError


def test_auto_device_and_dtype_on_this_machine():
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    assert choose_device("auto") == expected  # CUDA, then MPS, then CPU
    assert choose_device("cpu") == "cpu"
    assert choose_dtype("cpu", "auto") is torch.float32  # CPUs compute in fp32 by default
    assert choose_dtype("cpu", "bf16") is torch.bfloat16


@pytest.mark.parametrize("call", [lambda: choose_device("tpu"), lambda: choose_dtype("cpu", "fp8")])
def test_unknown_device_or_dtype_is_a_clear_error(call):
    with pytest.raises(OeuvreError, match="expected one of"):
        call()


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_keep_freed_memory_stops_large_blocks_going_back_to_the_os():
    # In a fresh process: a 64 MiB block freed and allocated again costs page faults only when
    # glibc handed it back to the OS (the default for blocks that size).
    script = """
import resource, torch
from oeuvre.devices import keep_freed_memory
import sys
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(2**24).sum()  # warm up torch's own allocations
start = faults()
for _ in range(40):
    torch.ones(2**24).sum()  # 64 MiB, allocated, touched, freed
print(faults() - start)
"""
    counts = {}
    for mode in ("default", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True, check=True
        )
        counts[mode] = int(done.stdout.strip().splitlines()[-1])
    # Default: each of the 40 rounds faults its 16k pages back in; kept, only the first few do.
    assert counts["keep"] * 3 < counts["default"], counts


def _rss_file_kb() -> int:
    from pathlib import Path

    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssFile:")))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
def test_released_pages_of_a_mapped_weight_leave_memory_and_read_back_the_same(tmp_path):
    """A weight replaced by a copy hands its file pages back; every weight still reads right."""
    import torch
    from safetensors.torch import load_file, save_file

    from oeuvre.devices import release_pages

    tensors = {"a": torch.randn(16, 1024, 1024), "b": torch.randn(3, 5), "c": torch.arange(1000.0)}
    save_file(tensors, tmp_path / "w.safetensors")
    loaded = load_file(tmp_path / "w.safetensors")  # memory-mapped, as diffusers loads weights
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)  # pages every weight in
    before = _rss_file_kb()
    assert release_pages(loaded["a"])
    assert _rss_file_kb() < before - 32 * 1024  # most of a's 64 MB gone
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)  # and still reads back right
