"""What the web app's buttons do, without the page: restyle, sweep, report, artist info.

Every handler takes plain values (an artist's name, upload paths from Gradio's upload folder, numbers) and
returns plain values; a user mistake raises InputError/OeuvreError with a message naming what was wrong.
Outputs are the PNGs the CLI writes (with the A1111 `parameters` chunk and the JSON sidecar).
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infer.app.pipelines import KeeperPool, PipelineKeeper
from infer.app.runs import NO_ARTISTS, ArtistRun, find_run, list_runs
from infer.restyle.control import control_images
from infer.restyle.records import describe, write_output
from infer.restyle.settings import Job, Settings, resolve_settings
from infer.restyle.sweep import grid_image, parse_sweep
from oeuvre.atomic import atomic_write_png
from oeuvre.config_schema import AppConfig
from oeuvre.inputs import InputError, open_image, output_stems, prepare

Progress = Callable[[float, str], None]  # (fraction done, what is running)


def default_limits() -> AppConfig:
    """The `app:` section of configs/base.yaml."""
    from oeuvre.config import PROJECT_CONFIGS, load_config

    return load_config(PROJECT_CONFIGS / "base.yaml").app


@dataclass
class AppState:
    """What the app serves from: the runs folder, where results go, limits, and the kept pipelines
    (one per worker: `limits.workers` renders run at once, each on its own base pipeline)."""

    runs_dir: Path
    out_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="oeuvre-app-")))
    limits: AppConfig = field(default_factory=default_limits)
    device: str | None = None  # None: the run's config (infer.device)
    keepers: KeeperPool | None = None

    def __post_init__(self) -> None:
        if self.keepers is None:
            self.keepers = KeeperPool(self.limits.workers)

    @property
    def keeper(self) -> PipelineKeeper:
        """The first worker's pipeline keeper (the only one with one worker)."""
        return self.keepers.keepers[0]


@dataclass(frozen=True)
class Knobs:
    """The page's sliders and text boxes; None means "the run's default" (what the CLI would use)."""

    strength: float | None = None
    scale: float | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    size: int | None = None
    prompt: str | None = None
    negative: str | None = None
    control: str | None = None  # none | canny | depth: a ControlNet keeping the photo's structure
    control_weight: float | None = None


def settings_for(state: AppState, run: ArtistRun, knobs: Knobs, sweep: Sequence[str] = ()) -> Settings:
    """The CLI's own settings resolution, as if `python -m infer restyle --lora RUN ...` had been typed,
    then held to the server's limits (the sliders are no limit: the API takes any number)."""
    if run.problem:
        raise InputError(f"artist {run.name}: {run.problem}")
    args = argparse.Namespace(
        lora=str(run.root),
        base=None,
        strength=knobs.strength,
        scale=knobs.scale,
        steps=None if knobs.steps is None else int(knobs.steps),
        guidance=knobs.guidance,
        seed=None if knobs.seed is None else int(knobs.seed),
        num=1,
        prompt=knobs.prompt or None,
        negative=knobs.negative or None,
        size=None if knobs.size is None else int(knobs.size),
        keep_size=False,
        batch_size=1,
        device=state.device,
        dtype=None,
        sweep=list(sweep) or None,
        out=state.out_dir,
        overwrite=True,
        control=_control_flag(knobs),
    )
    settings = resolve_settings(args)
    check_limits(state.limits, settings)
    return settings


def _control_flag(knobs: Knobs) -> list[str] | None:
    """The CLI's --control KIND[:WEIGHT] for the page's control choice and weight."""
    if not knobs.control or knobs.control == "none":
        return None
    weight = "" if knobs.control_weight is None else f":{float(knobs.control_weight):g}"
    return [f"{knobs.control}{weight}"]


def check_limits(limits: AppConfig, settings: Settings, images: int = 1) -> None:
    """One clear line for a request over a server limit, before anything loads or renders."""
    cells = len(settings.strengths) * len(settings.scales)
    for what, value, limit in (
        ("steps", settings.steps, limits.max_steps),
        ("size", settings.size_px, limits.max_size_px),
        ("photos in one request", images, limits.max_images),
        ("sweep cells (strengths x scales)", cells, limits.max_sweep_cells),
    ):
        if value > limit:
            raise InputError(f"{what} {value}: over this server's limit of {limit} (app.* in its config)")


def defaults_for(state: AppState, name: str | None) -> Knobs:
    """The run's defaults for the sliders (its config.yaml, else configs/base.yaml)."""
    runs = list_runs(state.runs_dir)
    run = next((r for r in runs if r.name == name and not r.problem), None)
    if run is None:
        from oeuvre.config import PROJECT_CONFIGS, load_config

        config = load_config(PROJECT_CONFIGS / "base.yaml")
        infer = config.infer
        return Knobs(
            infer.strength, infer.lora_scale, infer.steps, infer.guidance, config.seed, infer.size_px, None
        )
    s = settings_for(state, run, Knobs())
    return Knobs(s.strengths[0], s.scales[0], s.steps, s.guidance, s.seeds[0], s.size_px, s.prompt)


def artist_choices(state: AppState) -> list[tuple[str, str]]:
    """(label, name) per run, usable ones first (the page preselects the first)."""
    runs = sorted(list_runs(state.runs_dir), key=lambda run: (run.problem is not None, run.name))
    return [(run.label(), run.name) for run in runs]


def artist_info(state: AppState, name: str | None) -> tuple[str, Path | None]:
    """Markdown about the artist (trigger, base, LoRA file) and its newest training sample, if any."""
    runs = list_runs(state.runs_dir)
    if not runs:
        return NO_ARTISTS.format(runs=state.runs_dir), None
    run = next((r for r in runs if r.name == name), None)
    if run is None:
        return "Choose an artist.", None
    if run.problem:
        return f"**{run.name}**: this run cannot be used: {run.problem}", None
    samples = run.sample_images()
    text = (
        f"**{run.name}**: trigger `{run.trigger_token or 'none'}`, base `{run.base_model or 'unknown'}`, "
        f"LoRA `{run.lora_file.name}`" + ("" if samples else " (no training samples yet)")
    )
    return text, samples[-1] if samples else None


def _checked_upload(path: str | Path, limits: AppConfig):
    """The upload as RGB, once its size and header show an image within the caps (checked before decoding)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    name, max_pixels = path.name, limits.max_upload_pixels
    megabytes = path.stat().st_size / 1e6 if path.is_file() else 0.0
    if megabytes > limits.max_upload_mb:
        raise InputError(f"upload {name}: {megabytes:.1f} MB, over the cap of {limits.max_upload_mb:g} MB")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"upload {name}: not an image (expected PNG, JPEG, WebP, ...)") from exc
    if width * height > max_pixels:
        raise InputError(
            f"upload {name}: {width}x{height} is {width * height:,} pixels, over the cap of "
            f"{max_pixels:,}; downscale it first"
        )
    try:
        return open_image(path)
    except InputError as exc:
        raise InputError(f"upload {name}: not a readable image") from exc


def checked_uploads(
    files: Sequence[str | Path] | str | Path | None, limits: AppConfig
) -> list[tuple[Path, Any]]:
    if not files:
        raise InputError("no photo uploaded: add one or more images first")
    if isinstance(files, (str, Path)):
        files = [files]
    if len(files) > limits.max_images:
        raise InputError(
            f"photos in one request {len(files)}: over this server's limit of {limits.max_images} "
            "(app.* in its config)"
        )
    return [(Path(f), _checked_upload(f, limits)) for f in files]


def denoising_steps(steps: int, strength: float) -> int:
    """How many steps img2img really runs (diffusers skips the first steps x (1 - strength))."""
    return min(int(steps * strength), steps)


def _check_steps(settings: Settings) -> None:
    for strength in settings.strengths:
        if denoising_steps(settings.steps, strength) < 1:
            raise InputError(
                f"steps {settings.steps} x strength {strength:g} is under one denoising step; "
                "raise steps or strength"
            )


def _request_dir(state: AppState) -> Path:
    """A fresh folder per request, so two users' results never overwrite each other; folders older
    than the retention are deleted first, so a long-running server does not fill its disk."""
    import shutil
    import time

    state.out_dir.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - state.limits.output_retention_minutes * 60
    for old in state.out_dir.glob("req-*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another worker's prune got there first
            continue
    return Path(tempfile.mkdtemp(prefix="req-", dir=state.out_dir))


def restyle(
    state: AppState,
    name: str | None,
    files: Sequence[str | Path] | None,
    knobs: Knobs,
    progress: Progress | None = None,
) -> list[Path]:
    """Each upload restyled with the artist; returns the PNGs written (with `parameters` and sidecar)."""
    run = find_run(state.runs_dir, name)
    settings = settings_for(state, run, knobs)
    _check_steps(settings)
    uploads = checked_uploads(files, state.limits)
    return _render(state, settings, uploads, progress)[0]


def sweep(
    state: AppState,
    name: str | None,
    file: str | Path | None,
    strengths: str,
    scales: str,
    knobs: Knobs,
    progress: Progress | None = None,
) -> tuple[Path, list[Path]]:
    """One upload over strengths x scales: the labelled grid the CLI's --sweep writes, and each tile."""
    run = find_run(state.runs_dir, name)
    specs = [f"strength={strengths}", f"scale={scales}"]
    parse_sweep(specs)  # the CLI's own message for a malformed list, before anything loads
    settings = settings_for(state, run, knobs, sweep=specs)
    _check_steps(settings)
    uploads = checked_uploads(file, state.limits)[:1]
    paths, tiles = _render(state, settings, uploads, progress)
    stem = output_stems([uploads[0][0]])[uploads[0][0]]
    title = f"{stem}  seed {settings.seeds[0]}  {settings.prompt}"[:120]
    grid = grid_image(tiles, settings.strengths, settings.scales, title=title)
    grid_path = paths[0].parent / f"{stem}_seed{settings.seeds[0]}_grid.png"
    atomic_write_png(grid_path, grid)
    return grid_path, paths


def _render(state: AppState, settings: Settings, uploads, progress: Progress | None):
    """Restyle every upload at every (strength, scale) of the settings, one image per pipeline call."""
    out = _request_dir(state)
    stems = output_stems([path for path, _ in uploads])
    seed = settings.seeds[0]
    (control,) = settings.control_weightings()  # the page has no control sweep
    jobs = [
        Job(path, stems[path], seed, strength, scale, control)
        for scale in settings.scales
        for strength in settings.strengths
        for path, _ in uploads
    ]
    done = 0  # images finished

    def on_step(step: int, steps: int) -> None:
        if progress is not None:
            progress((done + step / steps) / len(jobs), f"image {done + 1}/{len(jobs)}: step {step}/{steps}")

    images = dict(uploads)
    written, tiles = [], {}
    with state.keepers.borrow() as keeper:
        restyler = keeper.restyler(settings, on_step)
        for job in jobs:
            restyler.set_scale(job.scale)
            picture, _ = prepare(images[job.input], settings.size_px, restyler.pipe.vae_scale_factor)
            controls = [control_images(settings, picture, restyler.device)] if control else None
            weights = tuple(weight for _, weight in control)
            image = restyler([picture], [job.seed], job.strength, job.scale, None, None, controls, weights)[0]
            done += 1
            # The sidecar names the upload, not Gradio's upload folder.
            shown = dataclasses.replace(job, input=Path(job.input.name))
            record = describe(restyler, shown, picture.size, image.size)
            path = out / job.filename(has_lora=True)
            write_output(path, image, record)
            written.append(path)
            tiles[(job.strength, job.scale)] = image
    return written, tiles


def report_html(state: AppState, name: str | None) -> str:
    """The run's evaluation report in a sandboxed frame (images inlined), or a line saying there is none."""
    run = next((r for r in list_runs(state.runs_dir) if r.name == name), None)
    if run is None:
        return "<p>Choose an artist.</p>"
    index = run.report_file()
    if index is None:
        return (
            f"<p>No evaluation report for <b>{html.escape(run.name)}</b> yet: run "
            f"<code>python -m infer evaluate {html.escape(str(run.root))}</code> (or "
            f"<code>make eval ARTIST={html.escape(run.name)}</code>).</p>"
        )
    document = inline_images(index.read_text(encoding="utf-8", errors="replace"), index.parent)
    # sandbox="": no scripts, no navigation; the report cannot touch the app page.
    return (
        f'<iframe sandbox="" title="evaluation report" style="width:100%;height:900px;border:0" '
        f'srcdoc="{html.escape(document, quote=True)}"></iframe>'
    )


def inline_images(document: str, folder: Path) -> str:
    """Relative <img src> inside `folder` become data: URIs; anything pointing outside it is left dead."""
    import base64
    import mimetypes
    import re

    root = folder.resolve()

    def replace(match: re.Match) -> str:
        src = match.group(2)
        target = (root / src).resolve()
        if "://" in src or src.startswith("data:") or not target.is_relative_to(root) or not target.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        data = base64.b64encode(target.read_bytes()).decode()
        return f"{match.group(1)}data:{mime};base64,{data}{match.group(3)}"

    return re.sub(r'(<img\b[^>]*?\bsrc=["\'])([^"\']+)(["\'])', replace, document, flags=re.IGNORECASE)
