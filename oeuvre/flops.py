"""Model FLOPs utilisation (MFU) of a training step: FLOPs counted by torch, per second, over the peak.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` running one real step (forward and
backward), so they are what the step executes (matmuls, convolutions, attention), not an estimate
from parameter counts. The peak is the device's dense tensor-core figure for the dtype from its data
sheet; for a device not in the table pass `--peak-tflops`, or MFU is left out (None) and says why.
On a CPU the peak is measured instead (`measured_peak_tflops`): a shared VM's cores have no data
sheet figure one can trust, and its best dense matmul or convolution rate is about the ceiling the
counted FLOPs can reach.
"""

from __future__ import annotations

from collections.abc import Callable

# Dense (no sparsity) tensor-core TFLOPS from NVIDIA's data sheets, bf16 = fp16; fp32 runs as TF32.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0},
    "H100": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},  # SXM; after "H100 PCIe" on purpose
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0},
    "L40S": {"bf16": 362.1, "fp16": 362.1, "fp32": 183.0},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 60.0},
    "A10G": {"bf16": 70.0, "fp16": 70.0, "fp32": 35.0},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6},
    "RTX 3090": {"bf16": 71.0, "fp16": 71.0, "fp32": 35.6},
}


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of everything `run` executes (call backward inside it to count the backward pass too)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return int(counter.get_total_flops())


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The table's peak for a device name as torch reports it ("NVIDIA H100 80GB HBM3"), or None."""
    for key, peaks in PEAK_TFLOPS.items():  # first match wins: the table lists specific names first
        if key.lower() in device_name.lower():
            return peaks.get(dtype)
    return None


def measured_peak_tflops(repeats: int = 3) -> float:
    """This CPU's dense fp32 rate at the current thread count (TFLOPS): the best of a 4096-square
    matmul and a 320-channel 3x3 convolution on 64x64 (the kinds of work the counted FLOPs are), each
    the best of `repeats` runs. A model's counted FLOPs over it are about the fastest any exact fp32
    computation of that model can run here: on the 2-core VM oneDNN's convolutions reached up to 1.09x
    the matmul's rate, hence both."""
    import time

    import torch

    left, right = torch.randn(4096, 4096), torch.randn(4096, 4096)
    conv, pixels = torch.nn.Conv2d(320, 320, 3, padding=1), torch.randn(1, 320, 64, 64)
    work = [(lambda: left @ right, 2 * 4096**3), (lambda: conv(pixels), 2 * 320 * 320 * 9 * 64 * 64)]
    best_rate = 0.0
    with torch.inference_mode():
        for run, flops in work:
            run()  # the first call picks the kernel and touches the memory
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                best_rate = max(best_rate, flops / (time.perf_counter() - start))
    return best_rate / 1e12


def fastest_exact_s(flops: int, peak_tflops: float) -> float:
    """The roofline: the least time `flops` (matmuls, convolutions, attention, as counted) can take at
    the peak rate. The memory-bound rest (norms, activations, copies) only adds to it, so a side's
    time over it is the most any exact change could speed that side up, on that device."""
    return flops / (peak_tflops * 1e12)


def mfu(flops_per_step: int, seconds_per_step: float, peak: float | None) -> float | None:
    """Achieved FLOP/s as a fraction of the peak (TFLOPS); None when the peak is unknown."""
    if peak is None or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / (peak * 1e12)
