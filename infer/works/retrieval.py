"""The artist database: an embedding index of the artist's kept works, and their nearest neighbours.

The index lives beside the curated dataset, `dataset/index/<descriptor>.safetensors` (an [n, d] matrix,
L2-normalised rows) plus `<descriptor>.ids.json` (which work each row is), built on first use and
rebuilt when the dataset's works change. `python -m infer nearest IMAGE... --run RUN_DIR [-k 5]` prints
each image's k nearest works and draws them as a contact sheet.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from infer.works.descriptors import WEIGHTS_FREE, Descriptor, cosine_matrix, load_descriptor
from oeuvre.atomic import atomic_write_bytes, atomic_write_png, atomic_write_text
from oeuvre.inputs import InputError, collect_inputs, open_image

SPLITS = ("train", "holdout")


@dataclass(frozen=True)
class Work:
    """One curated work: `id` is split/file_name, unique in the dataset."""

    split: str
    path: Path
    title: str | None
    text: str | None
    phash: str | None

    @property
    def id(self) -> str:
        return f"{self.split}/{self.path.name}"

    @property
    def label(self) -> str:
        return self.title or self.path.stem


def load_works(dataset: Path) -> list[Work]:
    """The works listed in train/ and holdout/ metadata.jsonl (what `python -m data` wrote)."""
    works = []
    for split in SPLITS:
        metadata = dataset / split / "metadata.jsonl"
        if not metadata.is_file():
            continue
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path = dataset / split / row["file_name"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(
                    f"{metadata}:{number}: expected a JSON object with file_name ({exc})"
                ) from exc
            works.append(Work(split, path, row.get("title"), row.get("text"), row.get("phash")))
    return works


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


class ArtistIndex:
    """Descriptor vectors of every kept work, loaded from (or first written to) dataset/index/."""

    def __init__(self, dataset: Path, descriptor: Descriptor, rebuild: bool = False):
        from safetensors.numpy import load_file, save

        self.dataset, self.descriptor = Path(dataset), descriptor
        self.works = load_works(self.dataset)
        if not self.works:
            raise InputError(
                f"{self.dataset}: no curated works (expected train/ and holdout/ metadata.jsonl)"
            )
        matrix_file, ids_file = self.files
        ids = [w.id for w in self.works]
        saved = json.loads(ids_file.read_text()) if ids_file.is_file() and matrix_file.is_file() else None
        # The descriptor's version too: a changed recipe under the same name must not reuse old vectors.
        key = {"descriptor": descriptor.name, "version": getattr(descriptor, "version", "")}
        if saved and not rebuild and saved.get("ids") == ids and {k: saved.get(k) for k in key} == key:
            self.vectors = load_file(str(matrix_file))["embeddings"]
            self.built = False
        else:
            self.vectors = descriptor.embed([open_image(w.path) for w in self.works]).astype(np.float32)
            # The matrix first, then the ids that vouch for it; each under a unique temporary name.
            atomic_write_bytes(matrix_file, save({"embeddings": np.ascontiguousarray(self.vectors)}))
            atomic_write_text(
                ids_file,
                json.dumps({**key, "ids": ids}, indent=1) + "\n",
            )
            self.built = True

    @property
    def files(self) -> tuple[Path, Path]:
        stem = self.dataset / "index" / _slug(self.descriptor.name)
        return stem.with_suffix(".safetensors"), stem.with_name(stem.name + ".ids.json")

    def rows(self, split: str | None = None) -> list[int]:
        return [i for i, w in enumerate(self.works) if split is None or w.split == split]

    def nearest(
        self, vectors: np.ndarray, k: int = 5, split: str | None = None
    ) -> list[list[tuple[Work, float]]]:
        """For each query vector, the k most similar works (cosine similarity), best first."""
        rows = self.rows(split)
        sims = cosine_matrix(vectors, self.vectors[rows]) if rows else np.zeros((len(vectors), 0))
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return [[(self.works[rows[j]], float(sims[q, j])) for j in order[q]] for q in range(len(vectors))]


def contact_sheet(rows: list[tuple[Image.Image, str, list[tuple[Image.Image, str]]]], tile: int = 128):
    """One row per query: the query, then its neighbours, each captioned."""
    columns = 1 + max(len(r[2]) for r in rows)
    sheet = Image.new("RGB", (columns * (tile + 8) + 8, len(rows) * (tile + 30) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (query, label, neighbours) in enumerate(rows):
        for c, (image, caption) in enumerate([(query, label), *neighbours]):
            thumb = image.copy()
            thumb.thumbnail((tile, tile))
            x, y = 8 + c * (tile + 8), 8 + r * (tile + 30)
            sheet.paste(thumb, (x, y))
            draw.text((x, y + tile + 4), caption[:22], fill=(200, 0, 0) if c == 0 else "black")
    return sheet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="content images, folders or globs")
    parser.add_argument("--run", required=True, type=Path, help="the run folder (runs/<artist>)")
    parser.add_argument("-k", type=int, default=5, help="works per image")
    parser.add_argument(
        "--descriptor", default=WEIGHTS_FREE, help="weights-free (default), clip[:MODEL] or csd:FILE"
    )
    parser.add_argument("--out", type=Path, help="contact sheet PNG; default RUN_DIR/report/nearest.png")


def run(args: argparse.Namespace) -> int:

    if args.k < 1:
        raise InputError(f"-k {args.k}: expected at least 1")
    dataset = args.run / "dataset"
    descriptor = load_descriptor(args.descriptor)
    if descriptor.note:
        print(descriptor.note)
    index = ArtistIndex(dataset, descriptor)
    if index.built:
        print(f"built the index {index.files[0]} ({len(index.works)} works, {descriptor.name})")
    paths = collect_inputs([str(p) for p in args.inputs])
    images = [open_image(p) for p in paths]
    found = index.nearest(descriptor.embed(images), args.k)
    from infer.works.copies import WorkCopies

    copies = WorkCopies(dataset)
    rows = []
    for path, image, neighbours in zip(paths, images, found, strict=True):
        print(f"{path}  ({descriptor.name})")
        tiles = []
        copied = copies.copy_of(image)  # the work this image is an altered copy of, listed first
        if copied is not None:
            work, match = copied
            print(
                f"  COPY   {work.id}  {work.label}  "
                f"(copy score {match.score}, shows {match.match.work_coverage:.0%})"
            )
            tiles.append((open_image(work.path), f"COPY {match.score} {work.label}"))
            neighbours = [(w, s) for w, s in neighbours if w.id != work.id][: args.k - 1]
        for work, score in neighbours:
            print(f"  {score:.3f}  {work.id}  {work.label}")
        tiles += [(open_image(w.path), f"{s:.2f} {w.label}") for w, s in neighbours]
        rows.append((image, path.name, tiles))
    out = args.out or args.run / "report" / "nearest.png"
    atomic_write_png(out, contact_sheet(rows))
    print(f"contact sheet: {out}")
    return 0
