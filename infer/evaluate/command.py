"""`python -m infer evaluate RUN_DIR`: did the LoRA capture the artist without copying any one painting?

Reads top to bottom: the run's works (holdout for style, train for the copy check) -> content images
(built-in or --content) and baselines matched by file name -> restyle with the LoRA at a few strengths
and with the base alone (the restyle command's own Restyler) -> for every output: held-out style similarity
(mean of the top-k cosine similarities to the holdout works, per descriptor), the nearest training work
by the same-picture matcher (a copy score: inliers and the matched region; flagged above a threshold),
content kept (SSIM) -> optional checkpoints ->
runs/<artist>/report/ (index.html, report.json, plots), written by infer.evaluate.report.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from infer.evaluate.content_kept import content_kept
from infer.works.copies import WorkCopies
from infer.works.descriptors import WEIGHTS_FREE, load_descriptor
from infer.works.retrieval import ArtistIndex, load_works
from oeuvre.inputs import IMAGE_SUFFIXES, InputError, open_image, prepare

TOP_K = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run folder (runs/<artist>)")
    parser.add_argument("--content", type=Path, help="folder of content images; default: the built-in set")
    parser.add_argument(
        "--baseline", type=Path, help="single-image style-transfer results, matched to content by file name"
    )
    parser.add_argument(
        "--strengths", type=float, nargs="+", help="img2img strengths (default: 3 around the run's)"
    )
    parser.add_argument("--checkpoints", action="store_true", help="also evaluate each training checkpoint")
    parser.add_argument(
        "--descriptor",
        action="append",
        default=[],
        metavar="SPEC",
        help="a learned descriptor besides weights-free: clip[:MODEL] or csd:FILE.safetensors (repeatable)",
    )
    parser.add_argument("--top-k", type=int, default=TOP_K, help="holdout works averaged per style score")
    parser.add_argument("--seed", type=int, help="default: the run's seed")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    parser.add_argument("--out", type=Path, help="report folder; default RUN_DIR/report")
    parser.add_argument(
        "--control",
        action="append",
        metavar="KIND[:WEIGHT]",
        help="also restyle with the LoRA and this ControlNet (canny, depth): oeuvre+KIND columns",
    )
    parser.add_argument("--control-model", action="append", metavar="KIND=ID|DIR", help="as restyle's")
    parser.add_argument(
        "--versus",
        type=Path,
        metavar="RUN_DIR",
        help="another artist's run: also say how far the palette moved towards its held-out works "
        "(a LoRA that learned its own artist moves towards its own, not towards the other)",
    )


# -- inputs --------------------------------------------------------------------------------------


def content_images(content: Path | None, report: Path, size_px: int) -> list[Path]:
    if content is None:
        from infer.restyle.content import write_builtin_content

        return write_builtin_content(report / "content", size_px)
    if not content.is_dir():
        raise InputError(f"--content {content}: not a folder (expected a folder of content images)")
    found = [p for p in sorted(content.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not found:
        raise InputError(f"--content {content}: no image files in it ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def match_baselines(baseline: Path | None, contents: list[Path]) -> dict[Path, Path]:
    """{content: baseline}: same stem, or the baseline's stem starts with the content's stem and _ or -
    (tubingen_starry_night.jpg is the baseline for tubingen.png). Unmatched baseline files are an error."""
    if baseline is None:
        return {}
    if not baseline.is_dir():
        raise InputError(f"--baseline {baseline}: not a folder")
    files = [p for p in sorted(baseline.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise InputError(f"--baseline {baseline}: no image files in it")
    matched, unmatched = {}, []
    by_length = sorted(contents, key=lambda c: -len(c.stem))
    for file in files:
        owner = next(
            (
                c
                for c in by_length
                if file.stem == c.stem or file.stem.startswith((c.stem + "_", c.stem + "-"))
            ),
            None,
        )
        if owner is None or owner in matched:
            unmatched.append(file.name)
        else:
            matched[owner] = file
    if unmatched:
        raise InputError(
            f"--baseline {baseline}: {', '.join(unmatched)} match no content image "
            f"(content: {', '.join(c.name for c in contents)}); name each baseline after its content image"
        )
    return matched


def configured_strength(run_dir: Path) -> float:
    """The run's own infer.strength, not the recommended one: the report's columns stay the same from
    run to run (and before and after `infer recommend`), so reports compare."""
    from oeuvre.config import PROJECT_CONFIGS, load_config

    config_file = run_dir / "config.yaml"
    return load_config(config_file if config_file.is_file() else PROJECT_CONFIGS / "base.yaml").infer.strength


def default_strengths(strength: float) -> tuple[float, ...]:
    return tuple(sorted({round(max(0.1, strength - 0.2), 2), strength, round(min(1.0, strength + 0.2), 2)}))


# -- restyling -----------------------------------------------------------------------------------


def restyle_settings(args: argparse.Namespace, out: Path):
    """The restyle command's own settings for this run (trigger prompt, steps, size, scale from config)."""
    from infer.restyle import settings as restyle

    parser = argparse.ArgumentParser()
    restyle.add_arguments(parser)
    flags = ["unused", "--lora", str(args.run_dir), "--out", str(out)]
    flags += ["--device", args.device] if args.device else []
    flags += ["--seed", str(args.seed)] if args.seed is not None else []
    for flag, name in (("--control", "control"), ("--control-model", "control_model")):
        for value in getattr(args, name, None) or []:
            flags += [flag, value]
    settings = restyle.resolve_settings(parser.parse_args(flags))
    return dataclasses.replace(settings, seeds=settings.seeds[:1], sweep=False)


def restyle_all(
    settings, contents: dict[str, object], label, prompts: dict[str, str] | None = None
) -> dict[tuple[str, float], object]:
    """{(content stem, strength): image} from one Restyler (LoRA fused at its scale, or no LoRA); with
    `prompts` {name: prompt} also text-to-image pictures under ("t2i:<name>", seed) from the same one."""
    from infer.evaluate.palette import T2I_SEEDS, t2i_canvas
    from infer.restyle.control import control_images
    from infer.restyle.restyler import Restyler
    from oeuvre.devices import choose_device

    restyler = Restyler.load(settings, choose_device(settings.device))
    out = {}
    for strength in settings.strengths:
        for stem, image in contents.items():
            ready = prepare(image, settings.size_px, restyler.pipe.vae_scale_factor)[0]
            control = {}
            if settings.controls:
                weights = tuple(c.weight for c in settings.controls)
                control = {"controls": [control_images(settings, ready)], "control_weights": weights}
            out[stem, strength] = restyler(
                [ready], [settings.seeds[0]], strength, settings.scales[0], **control
            )[0]
        print(f"  {label} strength {strength:g}: {len(contents)} images", flush=True)
    canvas = t2i_canvas(settings.size_px)
    for name, prompt in (prompts or {}).items():
        for seed in T2I_SEEDS:
            out[f"t2i:{name}", seed] = restyler([canvas], [seed], 1.0, settings.scales[0], prompt)[0]
    return out


def palette(
    settings,
    judge,
    lora_out: dict,
    base_out: dict,
    contents: dict,
    cells: dict,
    versus: Path | None = None,
) -> dict:
    """The palette figures (infer/evaluate/palette.py) from the outputs already made, and for img2img
    from their scores in `cells` ((stem, column) -> judge.score's result); with `versus` (a run folder)
    the same moves measured towards that other artist's held-out works."""
    from infer.evaluate.palette import T2I_SEEDS, own_closer, palette_figures, palette_targets

    t2i = {
        name: [images[f"t2i:{key}", seed] for seed in T2I_SEEDS]
        for name, images, key in (
            ("with trigger", lora_out, "trigger"),
            ("without trigger", lora_out, "plain"),
            ("LoRA off", base_out, "plain"),
        )
    }
    img2img = {
        s: ([base_out[stem, s] for stem in contents], [lora_out[stem, s] for stem in contents])
        for s in settings.strengths
    }

    def style(images: list) -> float:
        return float(np.mean([r["style"][judge.primary] for r in judge.style(images)]))

    def column_mean(column: str, figure) -> float:  # over the content images, from their scores
        return float(np.mean([figure(cells[stem, column]) for stem in contents]))

    def primary_style(cell: dict) -> float:
        return cell["style"][judge.primary]

    def kept(cell: dict) -> float:
        return cell["content_kept"]["content_kept"]

    t2i_style = {name: style(images) for name, images in t2i.items()}
    img2img_style = {
        s: (column_mean(f"base@{s:g}", primary_style), column_mean(f"oeuvre@{s:g}", primary_style))
        for s in img2img
    }
    base_kept = {s: column_mean(f"base@{s:g}", kept) for s in settings.strengths}
    holdout = [open_image(w.path) for w in judge.holdout]
    figures = palette_figures(holdout, t2i, img2img, t2i_style, base_kept, img2img_style)
    if versus is not None:
        other = [open_image(w.path) for w in load_works(versus / "dataset") if w.split == "holdout"]
        if not other:
            raise InputError(f"--versus {versus}: no held-out works under {versus / 'dataset' / 'holdout'}")
        towards = palette_figures(other, t2i, img2img)
        figures["versus"] = {
            "run": str(versus),
            "artist_mean_lab": towards["artist_mean_lab"],
            "text_to_image_with_trigger_moved": towards["text_to_image"]["with trigger"]["moved"],
            "img2img_moved": {s: row["moved"] for s, row in towards["img2img"].items()},
            "closer": own_closer(towards),
        }
        figures["targets"] = palette_targets(figures)
    return figures


def trigger_free(prompt: str, token: str | None) -> str:
    """The prompt without its trigger token (what "without trigger" and "LoRA off" are asked)."""
    if not token:
        return prompt
    return " ".join(prompt.replace(token, " ").replace(" ,", ",").split()).strip(" ,")


# -- measuring -----------------------------------------------------------------------------------


class Judge:
    """Scores outputs against the run's works: style per descriptor (holdout), copy (train), content."""

    def __init__(self, dataset: Path, descriptor_specs: list[str], top_k: int):
        works = load_works(dataset)
        self.holdout = [w for w in works if w.split == "holdout"]
        self.train = [w for w in works if w.split == "train"]
        if not self.holdout:
            raise InputError(
                f"{dataset / 'holdout'}: no held-out works; the style score needs works kept out of "
                "training (set data.holdout_fraction > 0 and curate the dataset again)"
            )
        if not self.train:
            raise InputError(f"{dataset / 'train'}: no training works to check for copies")
        self.notes: list[str] = []
        self.descriptors = [load_descriptor(WEIGHTS_FREE)]
        for spec in descriptor_specs:
            descriptor = load_descriptor(spec, allow_download=True)
            if descriptor.note:
                self.notes.append(descriptor.note)
                print(descriptor.note, file=sys.stderr)
            elif descriptor.name not in {d.name for d in self.descriptors}:
                self.descriptors.append(descriptor)
        self.indexes = {d.name: ArtistIndex(dataset, d) for d in self.descriptors}
        self.top_k = max(1, min(top_k, len(self.holdout)))
        self.copies = WorkCopies(dataset, split="train")

    @property
    def primary(self) -> str:
        return self.descriptors[0].name

    def style(self, images: list) -> list[dict]:
        """Per image: {descriptor: score} and the nearest holdout work (under the primary descriptor)."""
        results = [{"style": {}, "nearest_holdout": None} for _ in images]
        for descriptor in self.descriptors:
            found = self.indexes[descriptor.name].nearest(descriptor.embed(images), self.top_k, "holdout")
            for result, neighbours in zip(results, found, strict=True):
                result["style"][descriptor.name] = float(np.mean([s for _, s in neighbours]))
                if result["nearest_holdout"] is None:
                    work, score = neighbours[0]
                    result["nearest_holdout"] = {"id": work.id, "path": str(work.path), "similarity": score}
        return results

    def copy(self, image) -> dict:
        work, match = self.copies.nearest(image)
        return {"id": work.id, "path": str(work.path), **match.to_json()}

    def score(self, images: list, content) -> list[dict]:
        results = self.style(images)
        for result, image in zip(results, images, strict=True):
            result["copy"] = self.copy(image)
            result["content_kept"] = content_kept(content, image) if content is not None else None
        return results


# -- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from infer.evaluate.report import write_report

    start = time.perf_counter()
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder (expected runs/<artist>)")
    if args.top_k < 1:
        raise InputError(f"--top-k {args.top_k}: expected at least 1")
    report = args.out or run_dir / "report"
    judge = Judge(run_dir / "dataset", args.descriptor, args.top_k)  # fails early on a run without holdout
    settings = restyle_settings(args, report / "images")
    strengths = tuple(args.strengths) if args.strengths else default_strengths(configured_strength(run_dir))
    for strength in strengths:
        if not 0 < strength <= 1:
            raise InputError(f"--strengths {strength:g}: expected values in (0, 1]")
    settings = dataclasses.replace(settings, strengths=strengths)
    content_paths = content_images(args.content, report, settings.size_px)
    baselines = match_baselines(args.baseline, content_paths)
    contents = {p.stem: open_image(p) for p in content_paths}
    print(f"evaluating {run_dir}: {len(contents)} content images, strengths {', '.join(map(str, strengths))}")

    images: dict[tuple[str, str], object] = {}  # (content stem, column) -> image
    controlled = settings
    settings = dataclasses.replace(settings, controls=())
    plain = trigger_free(settings.prompt, settings.trigger_token)
    lora_out = restyle_all(settings, contents, "oeuvre", {"trigger": settings.prompt, "plain": plain})
    base_settings = dataclasses.replace(settings, lora_file=None, embedding_file=None, scales=(0.0,))
    base_out = restyle_all(base_settings, contents, "base model", {"plain": plain})
    columns = ["content", *(["baseline"] if baselines else [])]
    columns += [f"base@{s:g}" for s in strengths] + [f"oeuvre@{s:g}" for s in strengths]
    if controlled.controls:  # the same LoRA, keeping the photo's structure with the ControlNet(s)
        control_name = "oeuvre+" + "+".join(c.kind for c in controlled.controls)
        control_out = restyle_all(controlled, contents, control_name)
        columns += [f"{control_name}@{s:g}" for s in strengths]
        for (stem, s), image in control_out.items():
            images[stem, f"{control_name}@{s:g}"] = image
    for stem, image in contents.items():
        images[stem, "content"] = image
        if baselines:
            match = next((b for c, b in baselines.items() if c.stem == stem), None)
            if match is not None:
                images[stem, "baseline"] = open_image(match)
        for s in strengths:
            images[stem, f"base@{s:g}"] = base_out[stem, s]
            images[stem, f"oeuvre@{s:g}"] = lora_out[stem, s]

    cells = {}
    for stem in contents:
        keys = [c for c in columns if (stem, c) in images]
        scored = judge.score([images[stem, c] for c in keys], contents[stem])
        cells.update({(stem, c): result for c, result in zip(keys, scored, strict=True)})
    colours = palette(settings, judge, lora_out, base_out, contents, cells, args.versus)

    checkpoint_rows = (
        evaluate_checkpoints(args, settings, contents, judge, report) if args.checkpoints else []
    )
    write_report(
        report,
        run_dir=run_dir,
        settings=controlled,
        columns=columns,
        images=images,
        cells=cells,
        judge=judge,
        checkpoints=checkpoint_rows,
        baselines={c.stem: str(b) for c, b in baselines.items()},
        extra={"palette": colours},
    )
    print(f"report: {report / 'index.html'} ({time.perf_counter() - start:.1f} s)")
    return 0


def evaluate_checkpoints(args, settings, contents: dict, judge: Judge, report: Path) -> list[dict]:
    """Style and content kept at the run's middle strength for each checkpoint, then the final LoRA."""
    from infer.lora.checkpoints import checkpoint_as_lora, checkpoint_steps
    from infer.lora.files import read_lora_metadata

    strength = settings.strengths[len(settings.strengths) // 2]
    one = dataclasses.replace(settings, strengths=(strength,))
    steps = checkpoint_steps(args.run_dir)
    if not steps:
        print(f"--checkpoints: {args.run_dir / 'checkpoints'} has none; only the final LoRA is plotted")
    final_step = int(read_lora_metadata(settings.lora_file).get("oeuvre.max_train_steps", 0) or 0)
    loras = [(step, folder) for step, folder in steps if step != final_step] + [(final_step, None)]
    rows = []
    for step, folder in loras:
        if folder is None:
            lora_settings = one
        else:
            lora, emb = checkpoint_as_lora(
                folder, settings.lora_file, settings.embedding_file, report / "checkpoints" / folder.name
            )
            lora_settings = dataclasses.replace(one, lora_file=lora, embedding_file=emb)
        outputs = restyle_all(lora_settings, contents, f"step {step}")
        scored = [judge.score([outputs[stem, strength]], contents[stem])[0] for stem in contents]
        rows.append(
            {
                "step": step,
                "strength": strength,
                "style": {
                    d.name: float(np.mean([r["style"][d.name] for r in scored])) for d in judge.descriptors
                },
                "content_kept": float(np.mean([r["content_kept"]["content_kept"] for r in scored])),
                "copies": sum(r["copy"]["flagged"] for r in scored),
            }
        )
    return rows
