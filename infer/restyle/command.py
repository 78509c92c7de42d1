"""`python -m infer restyle`: content photos in, the artist's style out, via diffusers' own img2img pipelines.

Reads top to bottom: settings -> inputs (split across Accelerate processes) -> load the pipeline with the
LoRA (fused for one scale, unfused for a sweep) -> batches of same-size images -> PNGs with A1111
`parameters` and a JSON sidecar, plus a labelled grid for sweeps.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

from infer.restyle.control import control_filename, control_images
from infer.restyle.records import describe, write_output
from infer.restyle.restyler import Restyler, process_state
from infer.restyle.settings import (
    Job,
    Settings,
    add_arguments,
    grid_name,
    plan_jobs,
    refuse_overwrite,
    resolve_settings,
)
from infer.restyle.sweep import grid_image
from oeuvre.atomic import atomic_write_png
from oeuvre.inputs import InputError, collect_inputs, open_image, prepare

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    inputs = collect_inputs(args.inputs)
    jobs = plan_jobs(settings, inputs)  # names from the whole input list, so they match any split
    state, device = process_state(settings.device)
    with state.split_between_processes(inputs) as mine:
        my_inputs = list(mine)
    # Each process checks only its own outputs: another may already be writing its share.
    refuse_overwrite(settings, [job for job in jobs if job.input in set(my_inputs)])
    tag = f"[{state.process_index}/{state.num_processes}] " if state.num_processes > 1 else ""

    # Inputs are read before any model loads, so a bad one costs no load (and fails fast when none is good).
    opened, skipped = {}, []
    for path in my_inputs:
        try:
            opened[path] = open_image(path)
        except InputError as exc:
            skipped.append(path)
            print(f"{tag}skipped: {exc}", file=sys.stderr)
    if my_inputs and not opened:
        raise InputError(f"no readable images among the inputs ({', '.join(map(str, skipped))})")

    restyler = Restyler.load(settings, device)
    references = {}
    if settings.reference == "nearest":
        from infer.restyle.reference import nearest_references

        references = nearest_references(settings.run_dir, my_inputs, "weights-free")
        for path, ref in references.items():
            copy = f"COPY of it (score {ref.copy_score}) " if ref.copy_score is not None else ""
            print(f"{tag}{path}: nearest work {ref.work.id} {copy}({ref.similarity:.3f}) {ref.work.label}")
    multiple = restyler.pipe.vae_scale_factor
    pictures = {path: prepare(image, settings.size_px, multiple) for path, image in opened.items()}
    controls = make_controls(settings, pictures, jobs, device)

    my_jobs = [job for job in jobs if job.input in pictures]
    results = render_jobs(restyler, my_jobs, pictures, references, controls)
    if settings.sweep:
        write_sweep_grids(settings, results)
    written = len(results)
    print(f"{tag}restyled {len(pictures)} of {len(my_inputs)} inputs: {written} images in {settings.out}")
    if skipped:
        print(f"{tag}{len(skipped)} input(s) skipped as unreadable (see above)", file=sys.stderr)
        return 1
    return 0


def make_controls(settings: Settings, pictures: dict, jobs: list[Job], device: str) -> dict:
    """{input: [control image per --control]} at each picture's size; written beside the outputs as
    <stem>_<kind>.png with --save-control."""
    if not settings.controls:
        return {}
    stems = {job.input: job.stem for job in jobs}
    controls = {path: control_images(settings, picture, device) for path, (picture, _) in pictures.items()}
    if settings.save_control:
        for path, images in controls.items():
            for spec, image in zip(settings.controls, images, strict=True):
                atomic_write_png(Path(settings.out) / control_filename(stems[path], spec.kind), image)
    return controls


def render_jobs(
    restyler: Restyler, jobs: list[Job], pictures: dict, references: dict, controls: dict | None = None
) -> dict:
    """Every job's image, written as it is made; {job: image}. Scale is the outer loop, so an unfused
    LoRA changes its scale once per value, and same-size images share a batch (the order within a
    batch does not change any image). `controls`: each input's control images (make_controls)."""
    from infer.restyle.reference import reference_prompt

    settings = restyler.settings
    has_lora = settings.lora_file is not None
    batch_size = 1 if references else settings.batch_size  # with references each input has its own prompt
    results = {}
    controls = controls or {}
    for scale in settings.scales:
        restyler.set_scale(scale)
        for strength, control in itertools.product(settings.strengths, settings.control_weightings()):
            by_size = defaultdict(list)
            for job in (j for j in jobs if (j.scale, j.strength, j.control) == (scale, strength, control)):
                by_size[pictures[job.input][0].size].append(job)
            for size, group in by_size.items():
                for start in range(0, len(group), batch_size):
                    batch = group[start : start + batch_size]
                    ref = references.get(batch[0].input)
                    prompt = reference_prompt(settings.prompt, ref.work) if ref else None
                    images = restyler(
                        [pictures[j.input][0] for j in batch],
                        [j.seed for j in batch],
                        strength,
                        scale,
                        prompt,
                        ref.image() if ref and settings.ip_adapter else None,
                        [controls[j.input] for j in batch] if controls else None,
                        tuple(weight for _, weight in control),
                    )
                    for job, image in zip(batch, images, strict=True):
                        original = pictures[job.input][1]
                        if settings.keep_size and image.size != original:
                            from PIL import Image

                            image = image.resize(original, Image.Resampling.LANCZOS)
                        record = describe(restyler, job, size, image.size, prompt)
                        if ref:
                            record["reference"] = {"work": ref.work.id, "similarity": ref.similarity}
                        write_output(settings.out / job.filename(has_lora), image, record)
                        results[job] = image
    return results


def write_sweep_grids(settings: Settings, results: dict) -> None:
    """One labelled strength x scale grid per input and seed."""
    columns, names = sweep_columns(settings)
    for (stem, seed), group in itertools.groupby(
        sorted(results, key=lambda j: (j.stem, j.seed)), key=lambda j: (j.stem, j.seed)
    ):
        tiles = {(j.strength, (j.scale, j.control)): results[j] for j in group}
        title = f"{stem}  seed {seed}  {settings.prompt}"[:120]
        grid = grid_image(tiles, settings.strengths, columns, title=title, column_names=names)
        atomic_write_png(Path(settings.out) / grid_name(stem, seed), grid)


def sweep_columns(settings: Settings) -> tuple[list, list[str]]:
    """The grid's columns, (scale, control weights), and their labels: "scale 0.8", "canny 0.5"."""
    columns = list(itertools.product(settings.scales, settings.control_weightings()))
    names = []
    for scale, control in columns:
        parts = [f"scale {scale:g}"] if len(settings.scales) > 1 or not settings.control_sweep else []
        parts += [f"{kind} {weight:g}" for kind, weight in control] if settings.control_sweep else []
        names.append(" ".join(parts))
    return columns, names
