"""Image inputs for every command: gather files, folders and globs, open them upright, size them."""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from oeuvre.errors import OeuvreError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class InputError(OeuvreError):
    """A restyle input or setting the user gave is wrong; the message names it and what was expected."""

    exit_code = 2


def collect_inputs(specs: Sequence[str]) -> list[Path]:
    """Files as given, image files under folders (recursively, hidden ones skipped), glob matches.

    Sorted and de-duplicated, so every process of a distributed run sees the same list."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(_images_under(path))
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            for folder in (m for m in matches if m.is_dir()):
                files.extend(_images_under(folder))
            if not files:
                raise InputError(f"input {spec}: the pattern matches no image files")
            found.extend(files)
        else:
            raise InputError(f"input {spec}: no such file or folder (expected image files, folders or globs)")
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p.resolve()))
    if not unique:
        raise InputError(
            f"inputs {' '.join(specs)}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return unique


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct file-name stem per input: its own stem, prefixed by its folder when two share a stem."""
    counts = Counter(p.stem for p in paths)
    stems = {p: p.stem if counts[p.stem] == 1 else f"{p.parent.name}_{p.stem}" for p in paths}
    clashes = Counter(stems.values())
    for index, p in enumerate(paths):
        if clashes[stems[p]] > 1:
            stems[p] = f"{stems[p]}_{index}"
    return stems


def open_image(path: Path):
    """The image as RGB, upright per its EXIF orientation; InputError when it is not a readable image."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL only warns between its pixel cap and twice it; a bomb that size is refused too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            if upright.mode in ("RGBA", "LA", "P"):
                upright = upright.convert("RGBA")
                background = Image.new("RGBA", upright.size, (255, 255, 255, 255))
                upright = Image.alpha_composite(background, upright)
            return upright.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"input {path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    except Image.DecompressionBombWarning as exc:
        raise InputError(f"input {path}: refused as a decompression bomb ({exc})") from exc


def fit_size(width: int, height: int, size_px: int, multiple: int) -> tuple[int, int]:
    """Keep the aspect ratio, make the area about size_px², round each side to `multiple` (at least one)."""
    scale = (size_px * size_px / (width * height)) ** 0.5
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (width, height))


def prepare(image, size_px: int, multiple: int):
    """The image resized for the model (Lanczos), and its original size for --keep-size."""
    from PIL import Image

    target = fit_size(image.width, image.height, size_px, multiple)
    resized = image if image.size == target else image.resize(target, Image.Resampling.LANCZOS)
    return resized, image.size
