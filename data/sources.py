"""Where an artist's works come from: local folders, Hugging Face datasets, and URL lists.

Each source yields `Candidate`s lazily (bytes are read only when curation asks), with provenance, a
sidecar caption and any known title/year/genre/style. A source that cannot be read at all (a missing
folder, a dataset not cached offline, a bad filter) raises `SourceError`; a single bad item does not.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data import download
from data.decode import Rejected
from data.masks import is_sidecar_mask
from oeuvre.config_schema import DataConfig, FolderSource, HubSource, Source, UrlListSource
from oeuvre.errors import OeuvreError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# Files that sit beside images and are not inputs: captions and notes, never reported as rejects.
COMPANION_EXTENSIONS = {".txt", ".json", ".jsonl", ".csv", ".tsv", ".md", ".yaml", ".yml"}
META_COLUMNS = ("title", "year", "date", "genre", "style")


class SourceError(OeuvreError):
    """A whole source cannot be read; the message names it and what was expected."""


@dataclass
class Candidate:
    source: str  # provenance: a file path, a URL, or "<dataset>[<split>]#<row>"
    kind: str  # folder | hf | urls
    read: Callable[[], bytes]  # the raw bytes; may raise Rejected (a failed download, say)
    caption: str | None = None  # sidecar text
    meta: dict[str, Any] = field(default_factory=dict)  # title, year, genre, style when known
    rejected: Rejected | None = None  # known bad before reading (an unsupported file type)


def describe_source(source: Source) -> str:
    if isinstance(source, FolderSource):
        return f"folder {source.folder}"
    if isinstance(source, HubSource):
        return f"hf {source.hf} [{source.split}]"
    return f"urls {source.urls}"


def iter_source(
    source: Source,
    config: DataConfig,
    cache: Path,
    skip: Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Iterator[Candidate]:
    """`cache` is the run's data cache (downloads, hub scans); `skip` is a folder never read (the run's
    own output, when it lies inside a source folder); `seed` fixes which works `max_works` keeps."""
    if isinstance(source, FolderSource):
        return iter_folder(source, skip)
    if isinstance(source, HubSource):
        if is_streamed(source):
            from data.hub_stream import iter_streamed

            return iter_streamed(source, config, seed, cache / "hub", progress)
        return iter_hub(source)
    return iter_urls(source, config, cache / "urls")


def estimate_source(source: Source, config: DataConfig, cache: Path, seed: int) -> str:
    """One line on what reading `source` will cost, reading only what is cheap (and writing nothing)."""
    name = describe_source(source)
    if isinstance(source, HubSource) and is_streamed(source):
        from data.hub_http import Net
        from data.hub_plan import make_plan

        net = Net(config.download_timeout_s, config.download_retries)
        return make_plan(source, net, cache / "hub", config.max_works, seed, readonly=True).describe()
    if isinstance(source, FolderSource):
        root = Path(source.folder).expanduser()
        files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS] if root.is_dir() else []
        return f"{name}: {len(files)} image files"
    if isinstance(source, UrlListSource):
        path = Path(source.urls).expanduser()
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        urls = [u for u in lines if u.strip() and not u.lstrip().startswith("#")]
        return f"{name}: {len(urls)} URLs (downloads cached by URL)"
    return f"{name}: read whole through `datasets` (a local folder, or its cache under HF_HUB_OFFLINE=1)"


def is_streamed(source: HubSource) -> bool:
    """A hub id read over HTTP. Local folders go through `datasets`, and so does everything offline
    (HF_HUB_OFFLINE=1), where only what `datasets` cached before can be read."""
    return not Path(source.hf).expanduser().exists() and not _offline()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


# -- folders -------------------------------------------------------------------------------------


def iter_folder(source: FolderSource, skip: Path | None = None) -> Iterator[Candidate]:
    root = Path(source.folder).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise SourceError(f"data.sources folder {source.folder!r} {what} (expected a folder of images)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SourceError(f"data.sources folder {source.folder!r} cannot be read (permission denied)")
    return _walk(root, skip.resolve() if skip else None)


def _walk(root: Path, skip: Path | None) -> Iterator[Candidate]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).resolve() != skip
        )
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            suffix = path.suffix.lower()
            if suffix in COMPANION_EXTENSIONS or is_sidecar_mask(path):
                continue
            if suffix not in IMAGE_EXTENSIONS:
                yield Candidate(
                    source=str(path),
                    kind="folder",
                    read=path.read_bytes,
                    rejected=Rejected(
                        "unsupported_type",
                        f"not an image file name (extension {suffix or 'none'!r}; expected one of "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))})",
                    ),
                )
                continue
            yield Candidate(source=str(path), kind="folder", read=path.read_bytes, caption=_sidecar(path))


def _sidecar(image: Path) -> str | None:
    for candidate in (image.with_suffix(".txt"), image.with_suffix(image.suffix + ".txt")):
        if candidate.is_file():
            try:
                text = " ".join(candidate.read_text(encoding="utf-8", errors="replace").split())
            except OSError:
                return None
            return text or None
    return None


# -- Hugging Face datasets -----------------------------------------------------------------------


def iter_hub(source: HubSource) -> Iterator[Candidate]:
    import datasets

    name = f"data.sources hf {source.hf!r}"
    table = _load_split(source)
    features = table.features
    if source.image_column not in features:
        raise SourceError(
            f"{name}: no image column {source.image_column!r} (columns: {', '.join(features)}); "
            f"set image_column"
        )
    rows = _filter_rows(table, source)
    meta_columns = [c for c in META_COLUMNS if c in features]
    table = table.cast_column(source.image_column, datasets.Image(decode=False))

    def items() -> Iterator[Candidate]:
        for start in range(0, len(rows), 256):
            batch_rows = rows[start : start + 256]
            batch = table.select(batch_rows)[:]
            for k, row in enumerate(batch_rows):
                meta = {c: _label(features[c], batch[c][k]) for c in meta_columns}
                yield hub_candidate(source, row, batch[source.image_column][k], meta)

    return items()


def hub_candidate(source: HubSource, row: int, cell: Any, meta: dict[str, Any]) -> Candidate:
    origin = f"{source.hf}[{source.split}]#{row}"
    payload = cell or {}

    def read() -> bytes:
        if payload.get("bytes"):
            return payload["bytes"]
        if payload.get("path") and Path(payload["path"]).is_file():
            return Path(payload["path"]).read_bytes()
        raise Rejected("unreadable", "the dataset row has no image bytes or readable path")

    if "date" in meta and "year" not in meta:
        meta["year"] = meta.pop("date")
    meta.pop("date", None)
    return Candidate(
        source=origin, kind="hf", read=read, meta={k: v for k, v in meta.items() if v is not None}
    )


def _label(feature: Any, value: Any) -> Any:
    import datasets

    if isinstance(feature, datasets.ClassLabel) and isinstance(value, int) and value >= 0:
        return feature.int2str(value)
    return value


def _load_split(source: HubSource):
    import datasets

    name = f"data.sources hf {source.hf!r}"
    local = Path(source.hf).expanduser()
    # A `save_to_disk` folder is read with load_from_disk; anything else (a hub id, a parquet or
    # imagefolder folder) goes through load_dataset.
    saved = (local / "state.json").is_file() or (local / "dataset_dict.json").is_file()
    try:
        if saved:
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise SourceError(
                        f"{name}: no split {source.split!r} (splits: {', '.join(loaded)}); set split"
                    )
                loaded = loaded[source.split]
            return loaded
        return datasets.load_dataset(source.hf, source.config_name, split=source.split)
    except OeuvreError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = (
            "; it is not in the local cache and HF_HUB_OFFLINE=1 (download it once online, or point hf at "
            "a local copy)"
            if _offline() and not local.exists()
            else ""
        )
        raise SourceError(f"{name}: cannot load split {source.split!r}: {first}{hint}") from None


def _filter_rows(table, source: HubSource) -> list[int]:
    import datasets

    name = f"data.sources hf {source.hf!r}"
    keep: set[int] | None = None
    for column, wanted in source.filter.items():
        if column not in table.features:
            raise SourceError(
                f"{name}: filter column {column!r} does not exist (columns: {', '.join(table.features)})"
            )
        feature = table.features[column]
        wanted_values = wanted if isinstance(wanted, list) else [wanted]
        values = table.select_columns([column])[:][column]
        if isinstance(feature, datasets.ClassLabel):
            ids = []
            for value in wanted_values:
                if isinstance(value, int):
                    ids.append(value)
                elif value in feature.names:
                    ids.append(feature.str2int(value))
                else:
                    raise SourceError(
                        f"{name}: filter {column}={value!r} matches no label; closest: "
                        f"{closest(str(value), feature.names)}"
                    )
            targets = set(ids)
        else:
            targets = set(wanted_values)
        rows = {i for i, v in enumerate(values) if v in targets}
        if not rows:
            distinct = sorted({str(v) for v in values if v is not None})
            shown = ", ".join(repr(w) for w in wanted_values)
            raise SourceError(
                f"{name}: filter {column}={shown} matches no row; closest values: "
                f"{closest(str(wanted_values[0]), distinct)}"
            )
        keep = rows if keep is None else keep & rows
    if keep is None:
        return list(range(len(table)))
    if not keep:
        raise SourceError(f"{name}: the filters {source.filter} match no row together")
    return sorted(keep)


def closest(value: str, names: list[str]) -> str:
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()

    by_norm = {norm(n): n for n in names}
    close = difflib.get_close_matches(norm(value), list(by_norm), n=3, cutoff=0.3)
    return ", ".join(repr(by_norm[c]) for c in close) if close else "(none similar)"


# -- URL lists -----------------------------------------------------------------------------------


def iter_urls(source: UrlListSource, config: DataConfig, cache_dir: Path) -> Iterator[Candidate]:
    path = Path(source.urls).expanduser()
    if not path.is_file():
        raise SourceError(f"data.sources urls {source.urls!r}: file not found (expected one URL a line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"data.sources urls {source.urls!r}: cannot read: {exc}") from None
    urls = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

    def items() -> Iterator[Candidate]:
        for url in urls:

            def read(url: str = url) -> bytes:
                return download.fetch(
                    url,
                    cache_dir,
                    config.download_timeout_s,
                    config.download_retries,
                    config.download_max_bytes,
                )

            yield Candidate(source=url, kind="urls", read=read)

    return items()
