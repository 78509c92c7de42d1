"""The evaluation report: report.json, index.html (rows, table of means) and PNG plots (matplotlib)."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from infer.works.descriptors import WEIGHTS_FREE
from oeuvre.atomic import atomic_write_bytes, atomic_write_text, png_bytes

PLOTS = ("style_vs_strength.png", "content_vs_strength.png")
CHECKPOINT_PLOTS = ("style_vs_step.png", "content_vs_step.png")
CONTROL_PLOT = "style_vs_content.png"  # evaluate --control: with and without the ControlNet


def _png(image, side: int | None = None) -> bytes:
    if side:
        image = image.copy()
        image.thumbnail((side, side))
    return png_bytes(image)


def outline_region(work, copy: dict, side: int):
    """The work's thumbnail with the region the output matched outlined (red when flagged as a copy)."""
    from PIL import ImageDraw

    thumb = work.copy()
    thumb.thumbnail((side, side))
    if copy["inliers"] > 0:
        x0, y0, x1, y1 = copy["region"]
        w, h = thumb.size
        colour = (220, 0, 0) if copy["flagged"] else (240, 160, 0)
        box = (x0 * w, y0 * h, max(x0 * w, x1 * w - 1), max(y0 * h, y1 * h - 1))
        ImageDraw.Draw(thumb).rectangle(box, outline=colour, width=2)
    return thumb


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def strength_of(column: str) -> float | None:
    return float(column.split("@", 1)[1]) if "@" in column else None


def means(columns: list[str], cells: dict, descriptors: list[str]) -> dict[str, dict[str, Any]]:
    table = {}
    for column in columns:
        results = [r for (_, c), r in cells.items() if c == column]
        if not results:
            continue
        kept = [r["content_kept"]["content_kept"] for r in results if r["content_kept"]]
        table[column] = {
            "n": len(results),
            "style": {d: float(np.mean([r["style"][d] for r in results])) for d in descriptors},
            "content_kept": float(np.mean(kept)) if kept else None,
            "copies": int(sum(r["copy"]["flagged"] for r in results)),
        }
    return table


def verdict(table: dict[str, dict[str, Any]], descriptor: str) -> str:
    """One plain sentence answering "did the LoRA move the outputs towards the artist?", per strength."""
    pairs = [
        (strength_of(column), row["style"][descriptor] - base["style"][descriptor])
        for column, row in table.items()
        if column.startswith("oeuvre@") and (base := table.get(column.replace("oeuvre@", "base@", 1)))
    ]
    if not pairs:
        return ""
    higher = [s for s, delta in pairs if delta > 0]
    deltas = ", ".join(f"{s:g}: {delta:+.3f}" for s, delta in sorted(pairs))
    than = "more similar to the held-out works than the base model's"
    if len(higher) == len(pairs):
        lead = f"{than} at every strength"
    elif higher:
        lead = f"{than} at {len(higher)} of {len(pairs)} strengths"
    else:
        lead = f"not {than} at any strength"
    return f"Under {descriptor}, the LoRA's outputs are {lead} (LoRA minus base: {deltas})."


def _plot(path: Path, title: str, ylabel: str, xlabel: str, lines: dict, flat: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    for label, (xs, ys) in lines.items():
        ax.plot(xs, ys, marker="o", label=label)
    for (label, value), style in zip(flat.items(), ("--", ":", "-."), strict=False):
        ax.axhline(value, linestyle=style, color="grey", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def series_names(table: dict) -> dict[str, str]:
    """{column prefix: legend}: oeuvre, base, and each oeuvre+CONTROL from evaluate --control."""
    names = {"oeuvre": "oeuvre (LoRA)", "base": "base model alone"}
    for column in table:
        prefix = column.split("@", 1)[0]
        if prefix.startswith("oeuvre+"):
            names[prefix] = f"oeuvre with {prefix.removeprefix('oeuvre+')} ControlNet"
    return names


def write_plots(report: Path, table: dict, checkpoints: list[dict], primary: str) -> list[str]:
    strengths = sorted({s for c in table if (s := strength_of(c)) is not None})
    written = []
    for metric, file, label in (
        ("style", PLOTS[0], f"held-out style similarity ({primary})"),
        ("content_kept", PLOTS[1], "content kept (SSIM luma + edges)"),
    ):

        def value(column: str, metric: str = metric) -> float:
            entry = table[column][metric]
            return entry[primary] if metric == "style" else entry

        lines = {
            name: (strengths, [value(f"{prefix}@{s:g}") for s in strengths])
            for prefix, name in series_names(table).items()
        }
        flat = {c: value(c) for c in ("baseline", "content") if c in table and value(c) is not None}
        _plot(report / file, label, label.split(" (")[0], "img2img strength", lines, flat)
        written.append(file)
    if len(series_names(table)) > 2:  # with --control: what each keeps of the content for its style
        trade_off = {
            name: (
                [table[f"{prefix}@{s:g}"]["content_kept"] for s in strengths],
                [table[f"{prefix}@{s:g}"]["style"][primary] for s in strengths],
            )
            for prefix, name in series_names(table).items()
        }
        title = f"style ({primary}) vs content kept, strengths {'/'.join(f'{s:g}' for s in strengths)}"
        _plot(report / CONTROL_PLOT, title, "held-out style similarity", "content kept", trade_off, {})
        written.append(CONTROL_PLOT)
    if checkpoints:
        steps = [row["step"] for row in checkpoints]
        _plot(
            report / CHECKPOINT_PLOTS[0],
            f"held-out style similarity ({primary}) by training step",
            "held-out style similarity",
            "training step",
            {"oeuvre": (steps, [row["style"][primary] for row in checkpoints])},
            {},
        )
        _plot(
            report / CHECKPOINT_PLOTS[1],
            "content kept by training step",
            "content kept",
            "training step",
            {"oeuvre": (steps, [row["content_kept"] for row in checkpoints])},
            {},
        )
        written += list(CHECKPOINT_PLOTS)
    return written


def write_pictures(report: Path, images: dict, cells: dict, judge) -> None:
    """The outputs, the nearest held-out works and each output's nearest training work with the matched
    region outlined, as the small PNGs the page shows."""
    from PIL import Image

    for (stem, column), image in images.items():
        atomic_write_bytes(report / "images" / f"{_name(stem)}__{_name(column)}.png", _png(image, 256))
    works = {w.id: w for w in judge.holdout + judge.train}
    for (stem, column), result in cells.items():
        near = result["nearest_holdout"]
        near["image"] = f"works/{_name(near['id'].rsplit('.', 1)[0])}.png"
        if not (report / near["image"]).exists():
            with Image.open(works[near["id"]].path) as opened:
                atomic_write_bytes(report / near["image"], _png(opened.convert("RGB"), 128))
        copy = result["copy"]
        copy["image"] = f"copies/{_name(stem)}__{_name(column)}.png"
        with Image.open(works[copy["id"]].path) as opened:
            outlined = outline_region(opened.convert("RGB"), copy, 160)
        atomic_write_bytes(report / copy["image"], png_bytes(outlined))


def write_report(
    report: Path,
    *,
    run_dir: Path,
    settings,
    columns: list[str],
    images: dict,
    cells: dict,
    judge,
    checkpoints: list[dict],
    baselines: dict[str, str],
    extra: dict | None = None,
) -> dict:
    """Write images/, the plots, report.json and index.html under `report`; returns the JSON data.
    `extra` adds sections to report.json (the palette figures); a `palette` section also gets its
    sentence beside the verdict."""
    descriptors = [d.name for d in judge.descriptors]
    write_pictures(report, images, cells, judge)
    table = means(columns, cells, descriptors)
    plots = write_plots(report, table, checkpoints, judge.primary)
    stems = list(dict.fromkeys(stem for stem, _ in images))
    data = {
        "run": str(run_dir),
        "descriptors": descriptors,
        "primary_descriptor": judge.primary,
        "notes": judge.notes,
        "settings": {
            "base_model": settings.base_model,
            "lora": str(settings.lora_file),
            "lora_scale": settings.scales[0],
            "prompt": settings.prompt,
            "steps": settings.steps,
            "size_px": settings.size_px,
            "seed": settings.seeds[0],
            "strengths": list(settings.strengths),
            "controls": [
                {"kind": c.kind, "model": c.model, "weight": c.weight}
                for c in getattr(settings, "controls", ())
            ],
            "top_k": judge.top_k,
            "holdout_works": len(judge.holdout),
            "train_works": len(judge.train),
        },
        "columns": columns,
        "baselines": baselines,
        "rows": [
            {
                "content": stem,
                "cells": {
                    column: {"image": f"images/{_name(stem)}__{_name(column)}.png", **cells[stem, column]}
                    for column in columns
                    if (stem, column) in cells
                },
            }
            for stem in stems
        ],
        "means": table,
        "verdict": verdict(table, judge.primary),
        "checkpoints": checkpoints,
        "plots": plots,
        **(extra or {}),
    }
    from infer.evaluate.recommend_report import HEATMAP, load_recommendation, write_heatmap

    recommendation = load_recommendation(report)  # `infer recommend` ran first
    if recommendation is not None:
        write_heatmap(report / HEATMAP, recommendation)
        data["recommended"] = recommendation
    if "palette" in data:
        from infer.evaluate.palette import palette_sentence

        data["palette_sentence"] = palette_sentence(data["palette"])
    atomic_write_text(report / "report.json", json.dumps(data, indent=1) + "\n")
    atomic_write_text(report / "index.html", render_html(data))
    return data


def _cell_html(cell: dict | None, descriptors: list[str]) -> str:
    if cell is None:
        return '<td class="missing">-</td>'
    style = "<br>".join(f"style[{html.escape(d)}] {cell['style'][d]:.3f}" for d in descriptors)
    kept = cell["content_kept"]
    kept_text = f"content kept {kept['content_kept']:.3f}" if kept else ""
    copy = cell["copy"]
    flag = '<b class="copy">COPY</b> ' if copy["flagged"] else ""
    near = cell["nearest_holdout"]
    return (
        f'<td><img class="out" src="{cell["image"]}"><div class="nums">{style}<br>{kept_text}</div>'
        f'<div class="pair"><figure><img src="{near["image"]}"><figcaption>nearest holdout<br>'
        f"{html.escape(near['id'])} {near['similarity']:.3f}</figcaption></figure>"
        f'<figure><img src="{copy["image"]}"><figcaption>{flag}nearest training<br>'
        f"{html.escape(copy['id'])}<br>copy score {copy['score']} (flag ≥ {copy['threshold']})"
        f"<br>{copy['work_coverage']:.0%} of the work{', mirrored' if copy['mirrored'] else ''}"
        "</figcaption></figure></div></td>"
    )


def render_html(data: dict) -> str:
    from infer.evaluate.recommend_report import section_html

    descriptors, columns = data["descriptors"], data["columns"]
    esc = html.escape
    s = data["settings"]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows = "".join(
        f"<tr><th>{esc(row['content'])}</th>"
        + "".join(_cell_html(row["cells"].get(c), descriptors) for c in columns)
        + "</tr>"
        for row in data["rows"]
    )
    mean_rows = "".join(
        f"<tr><th>{esc(c)}</th><td>{m['n']}</td>"
        + "".join(f"<td>{m['style'][d]:.3f}</td>" for d in descriptors)
        + f"<td>{'' if m['content_kept'] is None else format(m['content_kept'], '.3f')}</td>"
        f"<td>{m['copies']}</td></tr>"
        for c, m in data["means"].items()
    )
    checkpoint_rows = "".join(
        f"<tr><td>{r['step']}</td>"
        + "".join(f"<td>{r['style'][d]:.3f}</td>" for d in descriptors)
        + f"<td>{r['content_kept']:.3f}</td><td>{r['copies']}</td></tr>"
        for r in data["checkpoints"]
    )
    checkpoints = (
        f"<h2>By training step (strength {data['checkpoints'][0]['strength']:g})</h2><table><tr><th>step</th>"
        + "".join(f"<th>style [{esc(d)}]</th>" for d in descriptors)
        + f"<th>content kept</th><th>copies</th></tr>{checkpoint_rows}</table>"
        if data["checkpoints"]
        else ""
    )
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in data["notes"])
    learned = (
        "<p>Learned descriptors: none here (add <code>--descriptor clip[:MODEL]</code> or "
        "<code>--descriptor csd:FILE.safetensors</code> where their weights are available).</p>"
        if descriptors == [WEIGHTS_FREE]
        else ""
    )
    plots = "".join(f'<img class="plot" src="{p}" alt="{esc(p)}">' for p in data["plots"])
    recommended = section_html(data["recommended"]) if data.get("recommended") else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>oeuvre evaluation: {esc(data["run"])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; font-size: 12px; }}
img.out {{ width: 160px; display: block; }}
.pair {{ display: flex; gap: 4px; }} .pair figure {{ margin: 0; width: 96px; }}
.pair img {{ width: 96px; }} figcaption {{ font-size: 10px; word-break: break-all; }}
.copy {{ color: #c00; }} .note {{ color: #a60; }} img.plot {{ margin-right: 1em; }}
.nums {{ font-family: monospace; }}
</style></head><body>
<h1>Evaluation of {esc(data["run"])}</h1>
<p>Held-out style similarity: mean of the top-{s["top_k"]} cosine similarities of an output's style
descriptor to the artist's <b>holdout</b> works ({s["holdout_works"]}; training works are never used for it),
under each descriptor named in brackets ({", ".join(map(esc, descriptors))}).
Copy check: nearest of the {s["train_works"]} <b>training</b> works by the same-picture matcher
(local features verified by one geometric transform, so crops, rescales, recolouring, re-encoding and
mirroring are still caught); the copy score is the number of keypoints that agree, the outline marks the
region of the work the output shows, and COPY marks a flagged pair. Content kept: SSIM on luminance and
edges against the content image. Base {esc(s["base_model"])}, LoRA scale {s["lora_scale"]:g},
{s["steps"]} steps, {s["size_px"]} px, seed {s["seed"]}, prompt “{esc(s["prompt"])}”.</p>
{notes}
{learned}
<h2>Means</h2>
<table><tr><th>column</th><th>n</th>{"".join(f"<th>style [{esc(d)}]</th>" for d in descriptors)}
<th>content kept</th><th>copies</th></tr>{mean_rows}</table>
<p><b>{esc(data["verdict"])}</b></p>
<p>{esc(data.get("palette_sentence", ""))}</p>
<h2>Plots</h2><div>{plots}</div>
{checkpoints}
{recommended}
<h2>Per content image</h2>
<table><tr><th></th>{head}</tr>{rows}</table>
</body></html>
"""
