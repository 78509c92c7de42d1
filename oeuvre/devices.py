"""Choose the device and dtype: CUDA, then MPS, then CPU; half precision on GPUs, fp32 on CPU."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from oeuvre.errors import OeuvreError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("fp32", "fp16", "bf16")


def choose_device(preference: str = "auto") -> str:
    import torch

    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if preference == "auto":
        return next(name for name, ok in available.items() if ok)
    if preference not in available:
        raise OeuvreError(f"--device: expected one of auto, cuda, mps, cpu, got {preference!r}")
    if not available[preference]:
        raise OeuvreError(f"--device {preference}: no {preference.upper()} device is available here")
    return preference


def choose_dtype(device: str, preference: str = "auto") -> torch.dtype:
    import torch

    by_name = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if preference != "auto":
        if preference not in by_name:
            raise OeuvreError(f"--dtype: expected one of auto, {', '.join(DTYPE_NAMES)}, got {preference!r}")
        return by_name[preference]
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024


def keep_freed_memory() -> bool:
    """Let glibc keep freed large blocks instead of handing them back to the OS at once.

    By default every activation tensor over a few MB is a fresh mmap, so each CPU step page-faults
    its whole working set back in: a full-size SD 1.5 training step at 256 px spent about a quarter
    of its time in the kernel. Keeping the blocks is what PyTorch's CPU performance guide gets from
    preloading jemalloc or tcmalloc, here without preloading anything. Returns whether glibc took
    the settings; a no-op (False) on other C libraries. Call it only in processes that run models."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 2**30)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31))


_MADV_PAGEOUT = 21  # Linux 5.4+ (asm-generic/mman-common.h)


def release_pages(tensor: torch.Tensor) -> bool:
    """Ask Linux to reclaim the memory pages that lie wholly inside a CPU tensor no longer in use.

    Weights diffusers loads from safetensors are views of the file, mapped copy-on-write and paged in
    as they are read: a weight replaced by a copy (another memory format or dtype) leaves its pages
    resident until the whole file is unmapped, which is never while any weight of it lives. Reclaiming
    is always safe: a clean file page would be read again from the file, an anonymous one is only
    ever swapped out, never lost. Returns whether the kernel took the advice; a no-op elsewhere."""
    import ctypes
    import ctypes.util
    import mmap
    import sys

    if tensor.device.type != "cpu" or not sys.platform.startswith("linux") or not tensor.is_contiguous():
        return False
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE
    if last <= first:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return False
    return libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_PAGEOUT) == 0


def release_module_pages(module: torch.nn.Module) -> None:
    """release_pages for every CPU weight of a frozen module that is not needed for a while (the VAE
    once the latents are cached, the text encoders once the prompts are): the pages of weights mapped
    from the checkpoint leave memory and come back from the file if the module runs again."""
    for tensor in [*module.parameters(), *module.buffers()]:
        release_pages(tensor.detach())


def trim_freed_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc malloc_trim): keep_freed_memory keeps them for
    the training steps, which reuse them; work of another shape (sampling) would only add to them."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def freed_memory_returned():
    """For work of other shapes than the training steps (sampling, validation) in a process that keeps
    freed memory: glibc's thresholds back to their defaults and the heap trimmed, so that what the
    steps freed goes back to the OS and large blocks come and go with their tensors; on the way out,
    keep_freed_memory again for the steps."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
    trim_freed_memory()
    try:
        yield
    finally:
        trim_freed_memory()
        keep_freed_memory()
