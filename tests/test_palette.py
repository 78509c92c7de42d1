"""The palette figures' arithmetic, and the tiny base's zero-terminal-SNR schedule the demo uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from infer.evaluate.palette import closer, mean_lab, moved, palette_figures, palette_sentence


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


def test_targets_say_which_goal_each_figure_meets():
    artist, grey = [flat((61, 90, 107))], [flat((128, 128, 128))]
    leaky = [flat((80, 98, 110))]  # most of the way: the LoRA shows without its trigger too
    figures = palette_figures(
        artist,
        {"with trigger": artist, "without trigger": leaky, "LoRA off": grey},
        {0.55: (grey, artist), 0.75: (grey, grey)},
        t2i_style={"with trigger": 0.6, "without trigger": 0.5, "LoRA off": 0.4},
        base_content_kept={0.35: 0.65},
        img2img_style={0.55: (0.3, 0.5), 0.75: (0.3, 0.25)},  # a palette bought with the strokes at 0.75
    )
    met = {t["what"]: t["met"] for t in figures["targets"]}
    assert met == {
        "text-to-image with the trigger moves": True,
        "text-to-image without the trigger moves (style leak)": False,
        "img2img at 0.55 moves": True,
        "img2img at 0.75 moves": False,
        "the base alone at 0.35 keeps the content": False,
        "text-to-image with the trigger: held-out style similarity above the LoRA off's": True,
        "img2img: held-out style similarity above the base's at every strength": False,
    }
    assert figures["img2img"]["0.75"]["style"] < figures["img2img"]["0.75"]["base_style"]
    sentence = palette_sentence(figures)
    assert "Targets met: 3 of 7" in sentence and "img2img at 0.75 moves" in sentence


def test_closer_counts_a_sideways_step_against_the_move():
    start, target = np.array([50.0, 0, 0]), np.array([30.0, 0, 0])
    assert closer(start, np.array([40.0, 0, 0]), target) == pytest.approx(10)
    sideways = np.array([40.0, 40, 0])  # half way along the line, but far off it
    assert moved(start, sideways, target) == pytest.approx(0.5)
    assert closer(start, sideways, target) < 0


def test_the_control_check_fails_a_lora_that_moves_towards_the_other_artist():
    """Two artists whose lines from the LoRA-off colour share a component: `moved` credits both; the
    control (nearer its own mean than the other's, in every case) does not."""
    from infer.evaluate.palette import own_closer, palette_targets

    own, other, off = [flat((61, 90, 107))], [flat((200, 205, 190))], [flat((150, 80, 160))]

    def figures_for(made):
        figures = palette_figures(
            own, {"with trigger": made, "without trigger": off, "LoRA off": off}, {0.55: (off, made)}
        )
        towards = palette_figures(
            other, {"with trigger": made, "without trigger": off, "LoRA off": off}, {0.55: (off, made)}
        )
        figures["versus"] = {"run": "runs/other", "closer": own_closer(towards)}
        control = palette_targets(figures)[-1]
        assert control["what"].startswith("nearer its own works than runs/other's")
        return control["met"]

    assert figures_for(own) is True
    assert figures_for(other) is False
    # Green: past the swirl-like artist's mean along its line (`moved` 1.86 against 1.09 towards the
    # other), yet 5.5 units farther from it and 1.0 nearer the other: the control must say no.
    assert figures_for([flat((0, 80, 0))]) is False


def test_tiny_unets_keep_several_channels_per_norm_group():
    # One channel per group: every GroupNorm removes each channel's mean, so the UNet cannot output a
    # mean colour and no LoRA can move the palette (what kept the demo grey).
    from infer.bases.tiny import build_pipeline

    for arch in ("sd15", "sdxl"):
        unet = build_pipeline(arch, "tiny", norm_groups=8).unet
        norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert norms and all(m.num_channels // m.num_groups >= 2 for m in norms), arch


def test_tiny_unet_output_mean_follows_a_shift_of_its_input():
    # The property the groups buy: a constant added to the input moves the output's mean with 8 groups
    # (0.15 measured), hardly at all with one channel per group (32 groups: 0.017).
    from infer.bases.tiny import build_pipeline

    text = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(1))
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    moves = {}
    for groups in (8, 32):
        torch.manual_seed(0)
        unet = build_pipeline("sd15", "tiny", norm_groups=groups).unet.eval()
        with torch.no_grad():
            means = [unet(x + shift, 500, text).sample.mean((2, 3)) for shift in (0.0, 1.0)]
        moves[groups] = float((means[1] - means[0]).abs().max())
    assert moves[8] > 0.05 > moves[32], moves
