"""The web app's Nearest works tab: the artist's k works nearest an uploaded photo, through the evaluation's
artist index (infer/works/retrieval.py, weights-free descriptor), with their titles and similarity scores."""

from __future__ import annotations

from pathlib import Path

from infer.app.handlers import AppState, checked_uploads
from infer.app.runs import find_run
from oeuvre.inputs import InputError, open_image

NOT_AVAILABLE = "retrieval not available for this run: {why}"


def nearest_works(state: AppState, name: str | None, file: str | Path | None, k: int = 5) -> list[tuple]:
    """[(work image, "0.93 title"), ...] best first; InputError saying why when the run has no index."""
    from infer.works.descriptors import WEIGHTS_FREE, load_descriptor
    from infer.works.retrieval import ArtistIndex, load_works

    run = find_run(state.runs_dir, name)
    k = int(k)
    if k < 1:
        raise InputError(f"k {k}: expected at least 1 work")
    dataset = run.paths.dataset
    if not load_works(dataset):
        raise InputError(
            NOT_AVAILABLE.format(why=f"no curated dataset in {dataset} (run `python -m data` for it first)")
        )
    _, photo = checked_uploads(file, state.limits)[0]
    descriptor = load_descriptor(WEIGHTS_FREE)
    # The index is built on first use and kept in dataset/index/, as `python -m infer nearest` does.
    index = ArtistIndex(dataset, descriptor)
    found = index.nearest(descriptor.embed([photo]), k)[0]
    return [(open_image(work.path), f"{score:.2f}  {work.label}") for work, score in found]
