"""The palette figures' arithmetic, and the tiny base's zero-terminal-SNR schedule the demo uses."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infer.evaluate.palette import mean_lab, moved, palette_figures


def flat(rgb, size=8):
    return Image.new("RGB", (size, size), rgb)


def test_mean_lab_matches_known_cielab_values():
    # sRGB white and mid-grey have a* = b* = 0; van Gogh blue (61, 90, 107) is dark and blue-green.
    assert mean_lab([flat((255, 255, 255))]) == pytest.approx([100, 0, 0], abs=1)
    assert mean_lab([flat((119, 119, 119))])[1:] == pytest.approx([0, 0], abs=1)
    lightness, a, b = mean_lab([flat((61, 90, 107))])
    assert 34 < lightness < 39 and a < -3 and b < -10


def test_moved_is_the_share_of_the_way_along_the_line():
    start, target = np.array([50.0, 0, 0]), np.array([30.0, -10, -20])
    assert moved(start, start, target) == 0
    assert moved(start, target, target) == pytest.approx(1)
    assert moved(start, (start + target) / 2, target) == pytest.approx(0.5)
    assert moved(start, start - (target - start), target) == pytest.approx(-1)


def test_palette_figures_tell_trigger_from_leak():
    artist = [flat((61, 90, 107))]
    grey = [flat((128, 128, 128))]
    halfway = [flat((95, 109, 117))]
    figures = palette_figures(
        artist, {"with trigger": artist, "without trigger": grey, "LoRA off": grey}, {0.5: (grey, halfway)}
    )
    assert figures["text_to_image"]["with trigger"]["moved"] == pytest.approx(1, abs=0.02)
    assert figures["text_to_image"]["without trigger"]["moved"] == pytest.approx(0, abs=0.02)
    assert 0.3 < figures["img2img"]["0.5"]["moved"] < 0.7


def test_zero_snr_tiny_base_trains_with_v_prediction_to_pure_noise(tmp_path):
    from infer.bases.tiny import write_tiny_base
    from train.models import load_components

    base = write_tiny_base(tmp_path / "base", "sd15", schedule="zero-snr")
    scheduler = load_components(str(base)).noise_scheduler  # what the trainer reads from the base
    assert scheduler.config.prediction_type == "v_prediction"
    assert float(scheduler.alphas_cumprod[-1]) == pytest.approx(0, abs=1e-9)  # no signal left at T
