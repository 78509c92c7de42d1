"""Fetch one image URL: timeout, retries with back-off, a size cap, a content-type check, and a cache.

The cache is keyed by the URL, so a re-run downloads nothing twice. Failures are not cached: the next
run tries again.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from data.decode import Rejected
from oeuvre.atomic import atomic_write_bytes, atomic_write_text

USER_AGENT = "oeuvre/0.1 (artist dataset curation; +https://github.com/)"
# Servers often label images generically; the decoder still checks the bytes.
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "")


class _Retryable(Exception):
    pass


def cached_path(cache_dir: Path, url: str) -> Path:
    return cache_dir / (hashlib.sha256(url.encode("utf-8")).hexdigest() + ".bin")


def fetch(url: str, cache_dir: Path, timeout_s: float, retries: int, max_bytes: int) -> bytes:
    """The body of `url` (from the cache when present) or `Rejected` with the reason it failed."""
    if not url.lower().startswith(("http://", "https://")):
        raise Rejected("download_failed", f"unsupported URL (expected http:// or https://): {url}")
    path = cached_path(cache_dir, url)
    if path.is_file():
        return path.read_bytes()
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
        try:
            body, content_type = _get(url, timeout_s, max_bytes)
        except _Retryable as exc:
            last = str(exc)
            continue
        atomic_write_bytes(path, body)
        atomic_write_text(path.with_suffix(".json"), json.dumps({"url": url, "content_type": content_type}))
        return body
    tries = f"{retries + 1} {'try' if retries == 0 else 'tries'}"
    raise Rejected("download_failed", f"download failed after {tries}: {last}")


def _get(url: str, timeout_s: float, max_bytes: int) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if not (content_type.startswith("image/") or content_type in _GENERIC_TYPES):
                raise Rejected(
                    "download_failed", f"content-type {content_type!r}, expected image/* (URL {url})"
                )
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise Rejected(
                    "download_failed", f"{int(length)} bytes > download_max_bytes {max_bytes} (URL {url})"
                )
            chunks, size = [], 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise Rejected(
                        "download_failed", f"more than download_max_bytes {max_bytes} bytes (URL {url})"
                    )
                chunks.append(chunk)
            return b"".join(chunks), content_type
    except urllib.error.HTTPError as exc:
        message = f"HTTP {exc.code} {exc.reason} (URL {url})"
        if exc.code == 429 or exc.code >= 500:
            raise _Retryable(message) from None
        raise Rejected("download_failed", message) from None
    except TimeoutError:
        raise _Retryable(f"timed out after {timeout_s:g} s (URL {url})") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _Retryable(f"timed out after {timeout_s:g} s (URL {url})") from None
        raise _Retryable(f"cannot connect: {reason} (URL {url})") from None
    except OSError as exc:
        raise _Retryable(f"connection failed: {exc} (URL {url})") from None
