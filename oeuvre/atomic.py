"""Write files and folders so a crash never leaves a half-written one under the final name, and a
replaced one is never removed before its successor is in place.

Temporary names are unique (mkstemp/mkdtemp), so two writers of the same file never share one; the
finished file gets the permissions a plain `open(path, "w")` would give (0666 less the umask), not
mkstemp's private 0600, so a group sharing a models folder can read it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oeuvre.crash_points import crash_point


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_current_umask())
            os.fsync(handle.fileno())
        crash_point("atomic_write:before_replace")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def aside_name(path: Path) -> Path:
    """Where a replaced folder waits while its successor is renamed in."""
    return path.with_name(f".{path.name}.old")


def restore_aside(path: str | Path) -> None:
    """Finish a replacement a crash interrupted: the old folder back when the new one never arrived,
    the old one dropped when it did."""
    path = Path(path)
    aside = aside_name(path)
    if aside.exists():
        if path.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, path)


def replace_directory(new: Path, path: Path) -> None:
    """Put folder `new` at `path`: the old one is renamed aside, the new one renamed in, and only then
    is the old one deleted, so at every instant one complete folder exists (restore_aside finds it)."""
    restore_aside(path)
    aside = aside_name(path)
    if path.exists():
        os.replace(path, aside)
    crash_point("replace_directory:aside")
    os.replace(new, path)
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; it becomes `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    restore_aside(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(path)
        os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp's folders are private (0700)
        replace_directory(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def png_bytes(image, pnginfo=None) -> bytes:
    """A PIL image as PNG file bytes (with `pnginfo` text chunks when given)."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def atomic_write_png(path: str | Path, image) -> Path:
    return atomic_write_bytes(path, png_bytes(image))
