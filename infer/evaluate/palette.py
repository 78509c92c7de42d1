"""Does the artist's palette show where the trigger asks for it, and not elsewhere? Plain colour
statistics, no model: the mean colour of a set of pictures in CIELAB (through PIL's own colour
management), and how far a change of setting moves it towards the artist's held-out works.

"Moved" is the share of the way from a reference mean (the same picture made without the LoRA) to
the artist's mean, along that line: 0 is no move, 1 is all the way, negative is away."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Text-to-image through the img2img pipeline: strength 1 on a flat canvas, so nothing of it survives.
T2I_CANVAS_GREY = 128
T2I_SEEDS = (0, 1, 2, 3)
# What "the LoRA learned the palette, behind its trigger" means in numbers (issue: a demo you can see
# working): (what, figure's path in the palette section, comparison, goal). Checked on every report.
TARGETS = (
    ("text-to-image with the trigger moves", ("text_to_image", "with trigger", "moved"), ">=", 0.70),
    (
        "text-to-image without the trigger moves (style leak)",
        ("text_to_image", "without trigger", "moved"),
        "<",
        0.15,
    ),
    ("img2img at 0.55 moves", ("img2img", "0.55", "moved"), ">=", 0.40),
    ("img2img at 0.75 moves", ("img2img", "0.75", "moved"), ">=", 0.60),
    ("the base alone at 0.35 keeps the content", ("base_content_kept", "0.35"), ">=", 0.70),
)


def mean_lab(images: Sequence) -> np.ndarray:
    """Mean (L*, a*, b*) over all pixels of `images` (PIL RGB), via an sRGB -> CIELAB transform."""
    from PIL import ImageCms

    transform = ImageCms.buildTransformFromOpenProfiles(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    means = []
    for image in images:
        lab = np.asarray(ImageCms.applyTransform(image.convert("RGB"), transform), np.float64)
        # PIL's LAB mode stores L* scaled to 0..255 and a*, b* as signed bytes read unsigned.
        lightness = lab[..., 0] * 100.0 / 255.0
        a, b = ((lab[..., i] + 128) % 256 - 128 for i in (1, 2))
        means.append([lightness.mean(), a.mean(), b.mean()])
    return np.mean(means, axis=0)


def moved(reference: np.ndarray, changed: np.ndarray, target: np.ndarray) -> float:
    """Share of the way from `reference` to `target` that `changed` went (projection on that line)."""
    line = target - reference
    length = float(line @ line)
    return float((changed - reference) @ line / length) if length > 0 else 0.0


def closer(reference: np.ndarray, changed: np.ndarray, target: np.ndarray) -> float:
    """How much nearer `target` the change went, in CIELAB units (delta E 1976); negative: farther.
    Unlike `moved`, a step sideways counts against it: the control check uses it, since two artists'
    lines from one reference can share a component (both less magenta, say) that `moved` credits to both."""
    return float(np.linalg.norm(reference - target) - np.linalg.norm(changed - target))


def t2i_canvas(size_px: int):
    from PIL import Image

    return Image.new("RGB", (size_px, size_px), (T2I_CANVAS_GREY,) * 3)


def palette_figures(
    holdout: Sequence,
    t2i: dict[str, list],
    img2img: dict[float, tuple[list, list]],
    t2i_style: dict[str, float] | None = None,
    base_content_kept: dict[float, float] | None = None,
    img2img_style: dict[float, tuple[float, float]] | None = None,
) -> dict:
    """`t2i`: {"with trigger" | "without trigger" | "LoRA off": images}; `img2img`: {strength: (base
    outputs, LoRA outputs)} over the same content. Everything in CIELAB, rounded for report.json.
    `t2i_style`: each t2i set's held-out style similarity; `base_content_kept`: {strength: the base's
    mean content kept}; `img2img_style`: {strength: (the base's, the LoRA's held-out style similarity)}.
    All optional; with them the figures hold what TARGETS and the style checks answer."""
    artist = mean_lab(holdout)
    figures: dict = {"artist_mean_lab": _round(artist)}
    if t2i:
        off = mean_lab(t2i["LoRA off"])
        figures["text_to_image"] = {
            name: {
                "mean_lab": _round(mean_lab(images)),
                "moved": round(moved(off, mean_lab(images), artist), 3),
                "closer": round(closer(off, mean_lab(images), artist), 2),
                **({"style": round(t2i_style[name], 4)} if t2i_style else {}),
            }
            for name, images in t2i.items()
        }
    figures["img2img"] = {
        f"{strength:g}": {
            "base_mean_lab": _round(mean_lab(base)),
            "lora_mean_lab": _round(mean_lab(lora)),
            "moved": round(moved(mean_lab(base), mean_lab(lora), artist), 3),
            "closer": round(closer(mean_lab(base), mean_lab(lora), artist), 2),
        }
        for strength, (base, lora) in sorted(img2img.items())
    }
    for strength, (base_style, lora_style) in (img2img_style or {}).items():
        row = figures["img2img"][f"{strength:g}"]
        row.update(base_style=round(base_style, 4), style=round(lora_style, 4))
    if base_content_kept:
        figures["base_content_kept"] = {f"{s:g}": round(v, 3) for s, v in sorted(base_content_kept.items())}
    figures["targets"] = palette_targets(figures)
    return figures


def palette_targets(figures: dict) -> list[dict]:
    """Each TARGETS line the figures can answer: {what, value, goal, met}. Also: with the trigger the
    text-to-image pictures are closer in style to the held-out works than with the LoRA off."""
    checks = []
    for what, path, comparison, goal in TARGETS:
        value = figures
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            met = value >= goal if comparison == ">=" else value < goal
            checks.append({"what": what, "value": value, "goal": f"{comparison} {goal:g}", "met": bool(met)})
    t2i = figures.get("text_to_image", {})
    if "style" in t2i.get("with trigger", {}) and "style" in t2i.get("LoRA off", {}):
        value, off = t2i["with trigger"]["style"], t2i["LoRA off"]["style"]
        checks.append(
            {
                "what": "text-to-image with the trigger: held-out style similarity above the LoRA off's",
                "value": value,
                "goal": f"> {off:g}",
                "met": bool(value > off),
            }
        )
    rows = figures.get("img2img", {})
    if rows and all("style" in row for row in rows.values()):
        # The palette may not come at the cost of the strokes: at every strength the LoRA's outputs stay
        # closer in style to the held-out works than the base's.
        margin = min(row["style"] - row["base_style"] for row in rows.values())
        checks.append(
            {
                "what": "img2img: held-out style similarity above the base's at every strength",
                "value": round(margin, 4),
                "goal": "> 0",
                "met": bool(margin > 0),
            }
        )
    versus = figures.get("versus")
    if versus and "closer" in versus:
        # The control: each LoRA picture came nearer its own artist's mean colour than the other's.
        margins = [own - versus["closer"][case] for case, own in own_closer(figures).items()]
        checks.append(
            {
                "what": f"nearer its own works than {versus['run']}'s (CIELAB distance, every case)",
                "value": round(min(margins), 2),
                "goal": "> 0",
                "met": bool(min(margins) > 0),
            }
        )
    return checks


def own_closer(figures: dict) -> dict[str, float]:
    """{case: closer} for text-to-image with the trigger and each img2img strength."""
    cases = {}
    if "text_to_image" in figures:
        cases["text-to-image"] = figures["text_to_image"]["with trigger"]["closer"]
    cases.update({f"img2img {s}": row["closer"] for s, row in figures["img2img"].items()})
    return cases


def palette_sentence(figures: dict) -> str:
    """One line for the demo and the report: how far the palette moved, and the style leak."""
    parts = []
    t2i = figures.get("text_to_image")
    if t2i:
        parts.append(
            f"text-to-image with the trigger {t2i['with trigger']['moved']:.0%} of the way, "
            f"without it {t2i['without trigger']['moved']:.0%} (style leak)"
        )
    moves = ", ".join(f"{s}: {row['moved']:.0%}" for s, row in figures["img2img"].items())
    parts.append(f"img2img over the base's output {moves}")
    sentence = "Palette towards the artist's held-out works (CIELAB mean): " + "; ".join(parts) + "."
    versus = figures.get("versus")
    if versus:
        moves = ", ".join(f"{s}: {m:.0%}" for s, m in versus["img2img_moved"].items())
        sentence += (
            f" Towards {versus['run']}'s works instead: text-to-image with the trigger "
            f"{versus['text_to_image_with_trigger_moved']:.0%}, img2img {moves}."
        )
    targets = figures.get("targets") or []
    missed = [t["what"] for t in targets if not t["met"]]
    if targets:
        sentence += f" Targets met: {len(targets) - len(missed)} of {len(targets)}"
        sentence += f" (missed: {'; '.join(missed)})." if missed else "."
    return sentence


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in values]
