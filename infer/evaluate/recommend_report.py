"""The evaluation report's "Recommended" section: the recommendation's grid as heat maps (held-out
style and content kept per strength x scale, one row per checkpoint, copies crossed out, the chosen
cell outlined), written whichever of `infer evaluate` and `infer recommend` runs last."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

from infer.evaluate.recommend import Recommendation, describe
from oeuvre.atomic import atomic_write_bytes, atomic_write_text

HEATMAP = "recommended_grid.png"
RECOMMENDATION_FILE = "recommendation.json"


def load_recommendation(report: Path) -> dict | None:
    file = report / RECOMMENDATION_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def write_heatmap(path: Path, data: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = Recommendation.from_json(data)
    steps = sorted({c.step for c in result.cells})
    strengths = sorted({c.strength for c in result.cells})
    scales = sorted({c.scale for c in result.cells})
    fig, axes = plt.subplots(len(steps), 2, figsize=(7, 2.4 * len(steps)), dpi=100, squeeze=False)
    for row, step in zip(axes, steps, strict=True):
        grid = {(c.strength, c.scale): c for c in result.cells if c.step == step}
        for ax, metric, title in zip(
            row, ("style", "content_kept"), ("held-out style", "content kept"), strict=True
        ):
            values = [
                [getattr(grid[s, k], metric) if (s, k) in grid else float("nan") for k in scales]
                for s in strengths
            ]
            image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
            fig.colorbar(image, ax=ax, fraction=0.046)
            for i, s in enumerate(strengths):
                for j, k in enumerate(scales):
                    cell = grid.get((s, k))
                    if cell is None:
                        continue
                    mark = "COPY" if cell.copies else f"{getattr(cell, metric):.3f}"
                    ax.text(
                        j,
                        i,
                        mark,
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if not cell.copies else "red",
                    )
                    if cell == result.choice:
                        ax.add_patch(
                            plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2)
                        )
            ax.set_xticks(range(len(scales)), [f"{k:g}" for k in scales])
            ax.set_yticks(range(len(strengths)), [f"{s:g}" for s in strengths])
            ax.set(xlabel="LoRA scale", ylabel="strength", title=f"{title}, step {step}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def section_html(data: dict) -> str:
    """The HTML section; the heat map must already be beside index.html."""
    result = Recommendation.from_json(data)
    esc = html.escape
    if result.choice is None:
        choice = "Nothing recommended: no setting kept the content above the floor without a copy."
    else:
        runner = describe(result.runner_up) if result.runner_up else "none eligible"
        choice = f"<b>Recommended</b>: {esc(describe(result.choice))}<br>Runner-up: {esc(runner)}"
    return (
        f"<h2>Recommended</h2><p>{choice}</p><p>Rule: {esc(data['rule'])}. Floor: content kept ≥ "
        f"{result.floor:.3f}; style under {esc(data.get('descriptor', '?'))}; "
        f"{data.get('seconds_per_cell', 0):.2f} s per cell. Outlined: the chosen cell; COPY: a setting "
        f'whose outputs copied a training work.</p><img class="plot" src="{HEATMAP}" alt="{HEATMAP}">'
    )


def add_to_report(report: Path) -> bool:
    """Heat map + section into an existing report (report.json, index.html); False when there is none."""
    from infer.evaluate.report import render_html

    data = load_recommendation(report)
    file = report / "report.json"
    if data is None or not file.is_file():
        return False
    write_heatmap(report / HEATMAP, data)
    report_data = json.loads(file.read_text())
    report_data["recommended"] = data
    atomic_write_text(file, json.dumps(report_data, indent=1) + "\n")
    atomic_write_text(report / "index.html", render_html(report_data))
    return True
