"""`python -m infer app`: the Gradio web app. Pick a trained artist, upload photos, restyle them.

Tabs: Restyle (gallery of the CLI's PNGs), Sweep (the labelled strength x scale grid), Nearest works,
Report (the run's evaluation report and training samples). One base pipeline stays in memory and artist
LoRAs are swapped on it (infer/app/pipelines.py); Gradio's queue runs one request at a time by default.
The page layout lives here; what the buttons do lives in infer/app/handlers.py.
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

from infer.app.handlers import (
    AppState,
    Knobs,
    artist_choices,
    artist_info,
    defaults_for,
    report_html,
    restyle,
    sweep,
)
from infer.app.nearest import nearest_works
from infer.app.runs import NO_ARTISTS, find_run
from oeuvre.errors import OeuvreError
from oeuvre.inputs import open_image

log = logging.getLogger("oeuvre.app")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--config", type=Path, help="YAML whose app: section sets the limits (default: base.yaml)"
    )
    parser.add_argument(
        "--workers", type=int, help="renders at once, each with its own pipeline (app.workers)"
    )
    parser.add_argument("--max-pixels", type=int, help="largest upload, pixels (app.max_upload_pixels)")
    parser.add_argument("--max-file-size", type=float, help="largest upload file, MB (app.max_upload_mb)")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], help="default: the run's config")
    parser.add_argument("--out", type=Path, help="where results are written; default: a temporary folder")


def _page_errors(handler):
    """A user mistake or a failed request becomes a message in the page (gr.Error), never a traceback;
    the server log keeps the traceback of anything unexpected."""
    import gradio as gr

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except OeuvreError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("request failed")
            raise gr.Error(
                f"the request failed: {type(exc).__name__}: {exc}", print_exception=False
            ) from None

    return wrapper


def _progress_reporter(progress):
    def report(fraction: float, text: str) -> None:
        progress(fraction, desc=f"denoising, {text}")

    return report


def _handlers(state: AppState) -> SimpleNamespace:
    """What the page's events call: plain functions over `state`, errors shown as Gradio errors."""
    import gradio as gr

    def knob_values(name):
        k = defaults_for(state, name)
        return k.strength, k.scale, k.steps, k.guidance, k.seed, k.size, k.prompt or ""

    @_page_errors
    def on_artist(name):
        text, sample = artist_info(state, name)
        picture = open_image(sample) if sample else None
        samples = []
        if name in {value for _, value in artist_choices(state)}:
            run = find_run(state.runs_dir, name)
            samples = [open_image(p) for p in run.sample_images()[-8:]]
        return (text, picture, *knob_values(name), report_html(state, name), samples)

    @_page_errors
    def on_refresh(current):
        fresh = artist_choices(state)
        values = [value for _, value in fresh]
        chosen = current if current in values else (values[0] if values else None)
        notice = NO_ARTISTS.format(runs=state.runs_dir) if not fresh else ""
        return gr.Dropdown(choices=fresh, value=chosen), notice

    @_page_errors
    def on_restyle(
        name,
        files,
        strength,
        scale,
        steps,
        guidance,
        seed,
        size,
        prompt,
        negative,
        control="none",
        control_weight=1.0,
        progress=gr.Progress(),  # noqa: B008 (Gradio's way)
    ):
        knobs = Knobs(strength, scale, steps, guidance, seed, size, prompt, negative, control, control_weight)
        paths = restyle(state, name, files, knobs, _progress_reporter(progress))
        return [(str(p), p.stem) for p in paths], f"{len(paths)} image(s) restyled with {name}."

    @_page_errors
    def on_sweep(
        name,
        file,
        strengths,
        scales,
        steps,
        guidance,
        seed,
        size,
        prompt,
        negative,
        progress=gr.Progress(),  # noqa: B008 (Gradio's way)
    ):
        knobs = Knobs(None, None, steps, guidance, seed, size, prompt, negative)
        grid, tiles = sweep(state, name, file, strengths, scales, knobs, _progress_reporter(progress))
        return str(grid), [(str(p), p.stem) for p in tiles]

    @_page_errors
    def on_nearest(name, file, k):
        return nearest_works(state, name, file, k)

    return SimpleNamespace(
        on_artist=on_artist,
        on_refresh=on_refresh,
        on_restyle=on_restyle,
        on_sweep=on_sweep,
        on_nearest=on_nearest,
    )


def build_app(state: AppState):
    """The gr.Blocks page over `state` (not yet launched). One function on purpose: a Gradio layout reads
    top to bottom in the order the page shows it."""
    import gradio as gr

    choices = artist_choices(state)
    first = next((value for _, value in choices), None)
    knobs = defaults_for(state, first)

    on = _handlers(state)

    with gr.Blocks(title="oeuvre: restyle in an artist's style") as app:
        gr.Markdown("# oeuvre\nRestyle photos in a trained artist's style (img2img with the artist's LoRA).")
        notice = gr.Markdown(NO_ARTISTS.format(runs=state.runs_dir) if not choices else "", elem_id="notice")
        with gr.Row():
            artist = gr.Dropdown(choices, value=first, label="Artist", elem_id="artist", scale=4)
            refresh = gr.Button("Refresh list", scale=1)
        with gr.Row():
            info = gr.Markdown(elem_id="artist-info")
            sample = gr.Image(label="Newest training sample", interactive=False, height=160, type="pil")

        with gr.Tab("Restyle"):
            photos = gr.File(file_count="multiple", file_types=["image"], label="Photos", elem_id="photos")
            with gr.Row():
                strength = gr.Slider(0.05, 1.0, knobs.strength, step=0.05, label="Strength")
                scale = gr.Slider(0.0, 2.0, knobs.scale, step=0.05, label="LoRA scale")
            with gr.Row():
                steps = gr.Slider(1, 100, knobs.steps, step=1, label="Steps")
                guidance = gr.Slider(0.0, 20.0, knobs.guidance, step=0.5, label="Guidance")
                seed = gr.Number(knobs.seed, precision=0, minimum=0, label="Seed")
            with gr.Accordion("Size and prompt", open=False):
                size = gr.Slider(64, 1536, knobs.size, step=64, label="Size (about size x size pixels)")
                prompt = gr.Textbox(knobs.prompt or "", label="Prompt (empty: the artist's trigger caption)")
                negative = gr.Textbox(None, label="Negative prompt (empty: the run's default)")
            with gr.Accordion("Keep the photo's structure (ControlNet)", open=False), gr.Row():
                control = gr.Dropdown(
                    ["none", "canny", "depth"], value="none", label="Control", elem_id="control"
                )
                control_weight = gr.Slider(0.0, 2.0, 1.0, step=0.05, label="Control weight")
            go = gr.Button("Restyle", variant="primary", elem_id="restyle-button")
            status = gr.Markdown(elem_id="restyle-status")
            gallery = gr.Gallery(
                label="Results (download: the PNG with its parameters)",
                elem_id="results",
                columns=4,
                height=360,
                object_fit="contain",
                preview=False,
                fit_columns=False,  # one small result stays a thumbnail, not a page-wide blow-up
            )

        with gr.Tab("Sweep"):
            gr.Markdown(
                "One photo over strengths x LoRA scales; steps, guidance, seed, size: the Restyle tab's."
            )
            sweep_photo = gr.File(file_count="single", file_types=["image"], label="Photo")
            with gr.Row():
                strengths = gr.Textbox("0.3,0.5,0.7", label="Strengths (comma-separated)")
                scales = gr.Textbox("0.5,1.0", label="LoRA scales (comma-separated)")
            sweep_go = gr.Button("Sweep", variant="primary")
            grid = gr.Image(label="Grid", type="filepath", interactive=False)
            tiles = gr.Gallery(label="Tiles", columns=6, height=300, object_fit="contain", fit_columns=False)

        with gr.Tab("Nearest works"):
            gr.Markdown("The artist's works most like a photo (the evaluation's weights-free index).")
            with gr.Row():
                near_photo = gr.File(file_count="single", file_types=["image"], label="Photo")
                near_k = gr.Slider(1, 12, 5, step=1, label="Works")
            near_go = gr.Button("Find nearest works", variant="primary")
            near_works = gr.Gallery(label="Nearest works (similarity, title)", columns=5, elem_id="nearest")

        with gr.Tab("Report"):
            report = gr.HTML(elem_id="report")
            samples = gr.Gallery(label="Training samples", columns=2)

        knob_outputs = [strength, scale, steps, guidance, seed, size, prompt]
        artist_outputs = [info, sample, *knob_outputs, report, samples]
        artist.change(on.on_artist, artist, artist_outputs, api_name="artist")
        app.load(on.on_artist, artist, artist_outputs, api_name=False)
        refresh.click(on.on_refresh, artist, [artist, notice], api_name="refresh")
        settings = [steps, guidance, seed, size, prompt, negative]
        go.click(
            on.on_restyle,
            [artist, photos, strength, scale, *settings, control, control_weight],
            [gallery, status],
            api_name="restyle",
        )
        sweep_go.click(
            on.on_sweep, [artist, sweep_photo, strengths, scales, *settings], [grid, tiles], api_name="sweep"
        )
        near_go.click(on.on_nearest, [artist, near_photo, near_k], near_works, api_name="nearest")
    return app


def launch(state: AppState, host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Queue (`limits.workers` requests at once, `limits.queue_size` waiting) and serve; returns the
    gr.Blocks (`.local_url`, `.close()`)."""
    app = build_app(state)
    limits = state.limits
    app.queue(default_concurrency_limit=limits.workers, max_size=limits.queue_size)
    app.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(state.out_dir)],  # results only; runs/ files are read by the server, not served
        show_error=False,
        max_file_size=f"{limits.max_upload_mb:g}mb",
        **kwargs,
    )
    return app


def limits_from(args: argparse.Namespace):
    """The `app:` section of --config (else configs/base.yaml), with the flags given on top."""
    from dataclasses import replace

    from oeuvre.config import PROJECT_CONFIGS, load_config

    limits = load_config(args.config or PROJECT_CONFIGS / "base.yaml").app
    flags = {"workers": args.workers, "max_upload_pixels": args.max_pixels}
    flags["max_upload_mb"] = args.max_file_size
    for key, value in flags.items():
        if value is not None and value < 1:
            raise OeuvreError(f"--{key.replace('_', '-')} {value}: expected at least 1")
    return replace(limits, **{key: value for key, value in flags.items() if value is not None})


def run(args: argparse.Namespace) -> int:
    limits = limits_from(args)
    out = args.out or Path(tempfile.mkdtemp(prefix="oeuvre-app-"))
    state = AppState(runs_dir=args.runs, out_dir=out, limits=limits, device=args.device)
    if not artist_choices(state):
        print(NO_ARTISTS.format(runs=args.runs).replace("this page", "the page once the app is up"))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this address can use the app")
    print(f"oeuvre app: artists from {args.runs}, results in {out}")
    print(f"limits: {limits.workers} worker(s), queue {limits.queue_size}, steps <= {limits.max_steps}")
    launch(state, args.host, args.port)
    return 0
