"""Which work is a picture an altered copy of? The artist database's same-picture side.

The works' same-picture features (`oeuvre.same_picture`) are kept beside the style index, in
`dataset/index/same-picture.safetensors` plus `.ids.json`, built on first use and rebuilt when the works
or the matcher's recipe change. Used by the copy check (`infer evaluate`, training works only) and by
`infer nearest` / `restyle --reference nearest`, which list a work the query copies first.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from infer.works.copy_check import CopyMatch, copy_features, nearest_copy, work_features
from infer.works.retrieval import Work, load_works
from oeuvre.atomic import atomic_write_text
from oeuvre.inputs import open_image
from oeuvre.same_picture import VERSION, from_arrays, to_arrays
from oeuvre.same_picture_index import PictureIndex

NAME = "same-picture"


class WorkCopies:
    """Same-picture features of the dataset's works (all, or one split), and the pre-filter over them."""

    def __init__(self, dataset: Path, split: str | None = None):
        from safetensors.numpy import load_file, save_file

        all_works = load_works(Path(dataset))
        matrix_file = Path(dataset) / "index" / f"{NAME}.safetensors"
        ids_file = matrix_file.with_name(f"{NAME}.ids.json")
        ids = [w.id for w in all_works]
        saved = json.loads(ids_file.read_text()) if ids_file.is_file() and matrix_file.is_file() else None
        if saved and saved.get("ids") == ids and saved.get("version") == VERSION:
            arrays = load_file(str(matrix_file))
            features = [from_arrays(arrays, f"{i}.") for i in range(len(all_works))]
            self.built = False
        else:
            features = [work_features(open_image(w.path)) for w in all_works]
            arrays = {k: v for i, f in enumerate(features) for k, v in to_arrays(f, f"{i}.").items()}
            matrix_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = matrix_file.with_suffix(".tmp")
            save_file(arrays, str(tmp))
            tmp.replace(matrix_file)
            atomic_write_text(ids_file, json.dumps({"version": VERSION, "ids": ids}, indent=1) + "\n")
            self.built = True
        keep = [i for i, w in enumerate(all_works) if split is None or w.split == split]
        self.works: list[Work] = [all_works[i] for i in keep]
        self.index = PictureIndex([features[i] for i in keep])

    def nearest(self, image: Image.Image) -> tuple[Work, CopyMatch]:
        """The work the image matches best, and how (flagged when it is a copy of it)."""
        match = nearest_copy(copy_features(image), self.index)
        return self.works[match.index], match

    def copy_of(self, image: Image.Image) -> tuple[Work, CopyMatch] | None:
        """The work the image is an altered copy of, or None."""
        if not self.works:
            return None
        work, match = self.nearest(image)
        return (work, match) if match.flagged else None
