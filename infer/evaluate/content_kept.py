"""Content kept: how much of the content image's structure survives in an output (numpy SSIM).

SSIM (Wang et al. 2004, Gaussian window σ=1.5, K1=0.01, K2=0.03) on luminance and on Sobel edge
maps, at the output's size; `content_kept` is their mean. Edges matter because restyling should
repaint surfaces and colours but keep where things are.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIDE = 128


def _gaussian_kernel(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' convolution along both axes."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two same-shape 2-D float arrays."""
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    kernel = _gaussian_kernel()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _blur(a, kernel), _blur(b, kernel)
    var_a = _blur(a * a, kernel) - mu_a**2
    var_b = _blur(b * b, kernel) - mu_b**2
    cov = _blur(a * b, kernel) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def luminance(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    grey = image.convert("L").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float64) / 255.0


def edges(grey: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude, scaled to [0, 1] by its largest possible value."""
    padded = np.pad(grey, 1, mode="edge")
    gx = (padded[:-2, 2:] + 2 * padded[1:-1, 2:] + padded[2:, 2:]) - (
        padded[:-2, :-2] + 2 * padded[1:-1, :-2] + padded[2:, :-2]
    )
    gy = (padded[2:, :-2] + 2 * padded[2:, 1:-1] + padded[2:, 2:]) - (
        padded[:-2, :-2] + 2 * padded[:-2, 1:-1] + padded[:-2, 2:]
    )
    return np.clip(np.hypot(gx, gy) / 4.0, 0.0, 1.0)


def content_kept(content: Image.Image, output: Image.Image) -> dict[str, float]:
    """{'ssim_luma', 'ssim_edges', 'content_kept'} comparing the output with its content image."""
    scale = _SIDE / max(output.size)
    size = (max(16, round(output.width * scale)), max(16, round(output.height * scale)))
    a, b = luminance(content, size), luminance(output, size)
    luma, edge = ssim(a, b), ssim(edges(a), edges(b))
    return {"ssim_luma": luma, "ssim_edges": edge, "content_kept": (luma + edge) / 2}
