"""`python -m infer recommend RUN_DIR`: the run picks its own checkpoint, strength and LoRA scale.

Reads top to bottom: the run's works (holdout for style, train for the copy check) -> content images
(built-in or --content) -> the base model alone at each grid strength, whose mean content kept sets the
default floor -> for each checkpoint (the kept ones, then the final LoRA): one pipeline with the LoRA
unfused, `set_scale` per scale, every strength -> one Cell per (checkpoint, strength, scale) with mean
held-out style, content kept and copies -> the rule (infer/evaluate/recommend.py) -> recommendation.json
in the report folder, and (unless --dry-run) the choice in both LoRA files' metadata and the model card.

The grid is bounded: at most MAX_STRENGTHS x MAX_SCALES settings on at most MAX_CHECKPOINTS + 1 LoRAs,
so at most 4 x 3 x 3 = 36 cells of one image per content image (3 built-in), plus the base's 3 strengths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from infer.evaluate.command import Judge, content_images, restyle_all, restyle_settings
from infer.evaluate.recommend import Cell, Recommendation, default_floor, describe, recommend
from infer.evaluate.recommend_report import RECOMMENDATION_FILE as FILE
from infer.evaluate.recommend_report import add_to_report
from infer.lora.recommended import final_files
from oeuvre.atomic import atomic_write_text
from oeuvre.inputs import InputError, open_image, prepare

STRENGTHS = (0.35, 0.55, 0.75)
SCALES = (0.6, 0.8, 1.0)
MAX_STRENGTHS = MAX_SCALES = 3
MAX_CHECKPOINTS = 3  # the newest kept checkpoints besides the final LoRA (train.checkpoints_keep is 3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run folder (runs/<artist>)")
    parser.add_argument("--content", type=Path, help="folder of content images; default: the built-in set")
    parser.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS), help="at most 3")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES), help="at most 3")
    parser.add_argument(
        "--floor", type=float, help="least content kept; default infer.recommend_content_floor"
    )
    parser.add_argument("--no-checkpoints", action="store_true", help="only the final LoRA")
    parser.add_argument("--dry-run", action="store_true", help="print and write the JSON; leave lora/ alone")
    parser.add_argument(
        "--after-training",
        action="store_true",
        help="skip quietly when train.recommend is false or the dataset has no held-out works (make train)",
    )
    parser.add_argument("--seed", type=int, help="default: the run's seed")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    parser.add_argument("--out", type=Path, help="report folder; default RUN_DIR/report")


def run_config(run_dir: Path):
    from oeuvre.config import PROJECT_CONFIGS, load_config

    file = run_dir / "config.yaml"
    return load_config(file if file.is_file() else PROJECT_CONFIGS / "base.yaml")


def check_grid(args: argparse.Namespace) -> None:
    for name, values, most in (
        ("--strengths", args.strengths, MAX_STRENGTHS),
        ("--scales", args.scales, MAX_SCALES),
    ):
        if not 1 <= len(values) <= most:
            raise InputError(f"{name}: {len(values)} values; the grid takes 1 to {most}")
    for strength in args.strengths:
        if not 0 < strength <= 1:
            raise InputError(f"--strengths {strength:g}: expected values in (0, 1]")
    for scale in args.scales:
        if scale < 0:
            raise InputError(f"--scales {scale:g}: expected LoRA scales >= 0")
    if args.floor is not None and not 0 <= args.floor <= 1:
        raise InputError(f"--floor {args.floor:g}: expected a content-kept value in [0, 1]")


def loras(run_dir: Path, settings, report: Path, with_checkpoints: bool) -> list[tuple[int, object]]:
    """(step, settings with that LoRA) for the newest kept checkpoints, then the final LoRA."""
    from infer.lora.checkpoints import checkpoint_as_lora, checkpoint_steps
    from infer.lora.files import read_lora_metadata

    final_step = int(read_lora_metadata(settings.lora_file).get("oeuvre.max_train_steps", 0) or 0)
    steps = [(s, f) for s, f in checkpoint_steps(run_dir) if s != final_step] if with_checkpoints else []
    out = []
    for step, folder in steps[-MAX_CHECKPOINTS:]:
        lora, emb = checkpoint_as_lora(
            folder, settings.lora_file, settings.embedding_file, report / "checkpoints" / folder.name
        )
        out.append((step, dataclasses.replace(settings, lora_file=lora, embedding_file=emb)))
    return out + [(final_step, settings)]


def grid_outputs(settings, contents: dict, label: str) -> dict[tuple[float, float, str], object]:
    """{(strength, scale, stem): image} from one pipeline: the LoRA unfused, its scale set per column."""
    from infer.restyle.restyler import Restyler
    from oeuvre.devices import choose_device

    restyler = Restyler.load(settings, choose_device(settings.device))  # >1 scale: stays unfused
    ready = {
        stem: prepare(image, settings.size_px, restyler.pipe.vae_scale_factor)[0]
        for stem, image in contents.items()
    }
    out = {}
    for scale in settings.scales:
        restyler.set_scale(scale)
        for strength in settings.strengths:
            for stem, image in ready.items():
                out[strength, scale, stem] = restyler([image], [settings.seeds[0]], strength, scale)[0]
    print(f"  {label}: {len(out)} images", flush=True)
    return out


def measure(judge: Judge, contents: dict, outputs: dict, step: int) -> list[Cell]:
    cells = {}
    for (strength, scale, stem), image in outputs.items():
        result = judge.score([image], contents[stem])[0]
        cells.setdefault((strength, scale), []).append(result)
    primary = judge.primary
    return [
        Cell(
            step=step,
            strength=strength,
            scale=scale,
            style=float(np.mean([r["style"][primary] for r in results])),
            content_kept=float(np.mean([r["content_kept"]["content_kept"] for r in results])),
            copies=int(sum(r["copy"]["flagged"] for r in results)),
        )
        for (strength, scale), results in cells.items()
    ]


def base_content_kept(settings, contents: dict) -> dict[float, float]:
    """{strength: mean content kept} of the base model alone: the curve the default floor comes from."""
    from infer.evaluate.content_kept import content_kept

    base = dataclasses.replace(settings, lora_file=None, embedding_file=None, scales=(0.0,))
    outputs = restyle_all(base, contents, "base model")
    return {
        s: float(
            np.mean([content_kept(contents[stem], outputs[stem, s])["content_kept"] for stem in contents])
        )
        for s in settings.strengths
    }


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder (expected runs/<artist>)")
    config = run_config(run_dir)
    if args.after_training and not (
        config.train.recommend and any((run_dir / "dataset" / "holdout").glob("*"))
    ):
        print("recommend: skipped (train.recommend is false or the dataset has no held-out works)")
        return 0
    check_grid(args)
    report = args.out or run_dir / "report"
    judge = Judge(run_dir / "dataset", [], top_k=3)  # fails early on a run without holdout
    settings = restyle_settings(args, report / "images")
    lora_file, embedding_file = final_files(run_dir)  # the final step's, also after a checkpoint shipped
    settings = dataclasses.replace(
        settings,
        lora_file=lora_file,
        embedding_file=embedding_file,
        strengths=tuple(args.strengths),
        scales=tuple(args.scales),
    )
    contents = {p.stem: open_image(p) for p in content_images(args.content, report, settings.size_px)}
    candidates = loras(run_dir, settings, report, not args.no_checkpoints)
    n_cells = len(candidates) * len(args.strengths) * len(args.scales)
    print(f"recommending for {run_dir}: {n_cells} cells x {len(contents)} content images")

    base_curve = base_content_kept(settings, contents)
    floor = args.floor if args.floor is not None else config.infer.recommend_content_floor
    if floor is None:
        floor = default_floor(base_curve[args.strengths[len(args.strengths) // 2]])
    grid_start = time.perf_counter()
    cells = []
    for step, lora_settings in candidates:
        cells += measure(judge, contents, grid_outputs(lora_settings, contents, f"step {step}"), step)
    seconds_per_cell = (time.perf_counter() - grid_start) / n_cells
    result = recommend(cells, floor)
    data = {
        **result.to_json(),
        "descriptor": judge.primary,
        "base_content_kept": {f"{s:g}": v for s, v in base_curve.items()},
        "content": sorted(contents),
        "final_step": candidates[-1][0],
        "seconds_per_cell": seconds_per_cell,
    }
    atomic_write_text(report / FILE, json.dumps(data, indent=1) + "\n")
    if add_to_report(report):
        print(f"added the Recommended section to {report / 'index.html'}")
    print_result(result, judge.primary)
    if result.choice is not None and not args.dry_run:
        ship(run_dir, settings, result, data, candidates)
    print(f"{report / FILE} ({time.perf_counter() - start:.1f} s, {seconds_per_cell:.2f} s per cell)")
    return 0


def print_result(result: Recommendation, descriptor: str) -> None:
    print(f"floor: content kept >= {result.floor:.3f}; style under {descriptor}")
    if result.choice is None:
        print("no setting keeps the content above the floor without a copy: nothing recommended")
        return
    print(f"recommended: {describe(result.choice)}")
    print(f"runner-up:   {describe(result.runner_up) if result.runner_up else 'none eligible'}")


def ship(run_dir: Path, settings, result: Recommendation, data: dict, candidates) -> None:
    """The choice into lora/: metadata in both formats, the card; an earlier checkpoint's weights."""
    from infer.lora.recommended import ship_recommendation

    choice = result.choice
    winner = next(s for step, s in candidates if step == choice.step)
    evidence = {
        "descriptor": data["descriptor"],
        "style": choice.style,
        "content_kept": choice.content_kept,
        "copies": choice.copies,
        "floor": result.floor,
        "runner_up": result.runner_up.to_json() if result.runner_up else None,
        "grid": f"{len(candidates)} checkpoints x {len(settings.strengths)} strengths x "
        f"{len(settings.scales)} scales",
        "content": data["content"],
    }
    points = [(c.content_kept, c.style, c.eligible(result.floor)) for c in result.cells]
    ship_recommendation(
        run_dir,
        step=choice.step,
        final_step=data["final_step"],
        strength=choice.strength,
        scale=choice.scale,
        evidence=evidence,
        points=points,
        chosen=(choice.content_kept, choice.style),
        weights=(winner.lora_file, winner.embedding_file),
    )
