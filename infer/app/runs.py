"""The artists the web app offers: run folders under --runs that hold a LoRA, read without loading a model.

The browser only ever sends an artist's name; this module maps it back to a folder under --runs, so no
path from the browser is opened as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from infer.lora.files import find_run_lora, read_lora_metadata
from oeuvre.errors import OeuvreError
from oeuvre.inputs import IMAGE_SUFFIXES, InputError
from oeuvre.paths import RunPaths

# Run folder names the app accepts back from the browser (the config's `artist` pattern, plus dots/case).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

NO_ARTISTS = (
    "No trained artist under {runs}: train one first, e.g. `make data ARTIST=demo && make train ARTIST=demo` "
    "(or `make demo`), then reload this page."
)


@dataclass(frozen=True)
class ArtistRun:
    """One run folder with a LoRA; `problem` says why it cannot be used (broken or missing LoRA file)."""

    name: str
    root: Path
    lora_file: Path | None
    embedding_file: Path | None
    trigger_token: str | None
    base_model: str | None
    problem: str | None

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.root)

    def label(self) -> str:
        if self.problem:
            return f"{self.name} (unusable: LoRA file broken)"
        return f"{self.name}  ·  {self.trigger_token or 'no trigger'}  ·  {_short(self.base_model)}"

    def sample_images(self) -> list[Path]:
        """Training validation sheets, newest last."""
        return images_in(self.paths.samples)

    def report_file(self) -> Path | None:
        index = self.paths.report / "index.html"
        return index if index.is_file() else None


def _short(base_model: str | None) -> str:
    if not base_model:
        return "base unknown"
    path = Path(base_model)
    return path.name if path.is_absolute() else base_model


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_run(root: Path) -> ArtistRun:
    """The run's LoRA and its metadata; any problem with the files goes into `problem`, never raised."""
    try:
        lora, embedding = find_run_lora(root)
        metadata = read_lora_metadata(lora)
        if embedding is not None:
            metadata = {**read_lora_metadata(embedding), **metadata}
    except (OeuvreError, OSError, ValueError) as exc:
        return ArtistRun(root.name, root, None, None, None, None, str(exc))
    return ArtistRun(
        name=root.name,
        root=root,
        lora_file=lora,
        embedding_file=embedding,
        trigger_token=metadata.get("oeuvre.trigger_token"),
        base_model=metadata.get("oeuvre.base_model"),
        problem=None,
    )


def list_runs(runs_dir: Path) -> list[ArtistRun]:
    """Every folder directly under runs_dir that has a lora/ folder, by name."""
    if not runs_dir.is_dir():
        return []
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and (p / "lora").is_dir())
    return [read_run(folder) for folder in folders if NAME.fullmatch(folder.name)]


def find_run(runs_dir: Path, name: str | None) -> ArtistRun:
    """The run called `name`, looked up among the listed runs (never joined onto a path as given)."""
    runs = list_runs(runs_dir)
    if not runs:
        raise InputError(NO_ARTISTS.format(runs=runs_dir))
    if not name:
        raise InputError("no artist chosen: pick one from the list")
    for run in runs:
        if run.name == name:
            return run
    raise InputError(f"artist {name!r}: no run folder with a LoRA of that name under {runs_dir}")
