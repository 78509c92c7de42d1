"""The run's recommended settings as they travel with the LoRA: `oeuvre.recommended.*` metadata in both
formats, the plot the model card shows, and (when an earlier checkpoint won) its weights as the shared
files, the final step's files kept in `checkpoints/final-step-N/`.

The recommendation itself is made by `python -m infer recommend` (infer/evaluate); this module only
reads and writes what it decided."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infer.lora.files import find_run_lora, read_lora_metadata
from oeuvre.atomic import atomic_write_bytes

PREFIX = "oeuvre.recommended."
KEYS = tuple(PREFIX + name for name in ("checkpoint", "strength", "scale", "evidence"))
PLOT = "recommended.png"


def recommended_settings(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """{checkpoint, strength, scale, evidence} from a file's metadata, or None when it carries none."""
    if not all(key in metadata for key in KEYS):
        return None
    return {
        "checkpoint": metadata[PREFIX + "checkpoint"],
        "strength": float(metadata[PREFIX + "strength"]),
        "scale": float(metadata[PREFIX + "scale"]),
        "evidence": json.loads(metadata[PREFIX + "evidence"]),
    }


def final_files(run_dir: Path) -> tuple[Path, Path | None]:
    """The final step's LoRA (and embedding): the kept copy when an earlier checkpoint was shipped."""
    lora, emb = find_run_lora(run_dir)
    kept = sorted((run_dir / "checkpoints").glob("final-step-*"))
    if kept:
        kept_lora = kept[-1] / lora.name
        kept_emb = kept[-1] / f"{lora.stem}_emb.safetensors"
        return kept_lora, kept_emb if kept_emb.is_file() else None
    return lora, emb


def keep_final(run_dir: Path, final_step: int) -> Path:
    """Copy lora/*.safetensors to checkpoints/final-step-N/ once, before they are replaced."""
    folder = run_dir / "checkpoints" / f"final-step-{final_step}"
    if folder.is_dir():
        return folder
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file in (run_dir / "lora").glob("*.safetensors"):
        shutil.copyfile(file, tmp / file.name)
    tmp.rename(folder)
    return folder


def ship_recommendation(
    run_dir: Path,
    *,
    step: int,
    final_step: int,
    strength: float,
    scale: float,
    evidence: dict,
    points: Sequence[tuple[float, float, bool]],
    chosen: tuple[float, float],
    weights: tuple[Path, Path | None] | None,
) -> Path:
    """Rewrite lora/<artist>.safetensors and .kohya.safetensors (atomically) with the recommendation;
    `weights` (LoRA, embedding) become the shared files: an earlier checkpoint's (the final step's files
    kept first), or the final step's back from their kept copy. Returns the LoRA."""
    from infer.lora.tools import load_lora, save_lora

    lora_file, emb_file = find_run_lora(run_dir)
    if weights is not None and weights[0].resolve() == lora_file.resolve():
        weights = None  # the shared files already hold these weights
    if weights is not None and step != final_step:
        keep_final(run_dir, final_step)
    lora = load_lora(weights[0] if weights is not None else lora_file)
    metadata = {k: v for k, v in lora.metadata.items() if not k.startswith(PREFIX)}
    metadata |= {
        "oeuvre.checkpoint": f"step-{step}",
        PREFIX + "checkpoint": f"step-{step}" + (" (final)" if step == final_step else ""),
        PREFIX + "strength": f"{strength:g}",
        PREFIX + "scale": f"{scale:g}",
        PREFIX + "evidence": json.dumps(evidence, sort_keys=True),
    }
    lora = dataclasses.replace(lora, metadata=metadata)
    save_lora(lora, lora_file, "diffusers")
    save_lora(lora, lora_file.with_name(f"{lora_file.stem}.kohya.safetensors"), "kohya")
    if weights is not None and weights[1] is not None and emb_file is not None:
        _copy_embedding(weights[1], emb_file)
    write_plot(lora_file.parent / PLOT, points, chosen, evidence.get("floor"))
    from infer.lora.model_card import rewrite_model_card

    rewrite_model_card(lora_file.parent, read_lora_metadata(lora_file))
    return lora_file


def _copy_embedding(source: Path, target: Path) -> None:
    """The checkpoint's token embedding under the final one's metadata (same tokens, same layout)."""
    import safetensors.torch

    tensors = safetensors.torch.load_file(source)
    metadata = read_lora_metadata(target)
    atomic_write_bytes(target, safetensors.torch.save(tensors, metadata=metadata))


def write_plot(path: Path, points, chosen: tuple[float, float], floor: float | None) -> Path:
    """Style vs content kept for every setting tried, the floor dashed and the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=100)
    for eligible, colour, label in (
        (True, "tab:blue", "eligible"),
        (False, "lightgrey", "below floor / copy"),
    ):
        xs = [p[0] for p in points if p[2] == eligible]
        ys = [p[1] for p in points if p[2] == eligible]
        if xs:
            ax.scatter(xs, ys, s=18, color=colour, label=label)
    if floor is not None:
        ax.axvline(floor, linestyle="--", color="grey", label=f"floor {floor:.2f}")
    ax.scatter([chosen[0]], [chosen[1]], s=120, marker="*", color="tab:red", label="recommended", zorder=3)
    ax.set(xlabel="content kept", ylabel="held-out style similarity", title="settings tried")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
