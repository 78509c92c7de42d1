"""HTTP for hub sources: the Hub and dataset-viewer endpoints, GETs with retries, ranged parquet reads.

Plain urllib on purpose: huggingface_hub refuses every request under HF_HUB_OFFLINE=1, and we need each
byte counted (the estimate, the bench) and each failure turned into one line naming the shard. The
base URLs come from HF_ENDPOINT (which huggingface_hub honours too) and OEUVRE_VIEWER_ENDPOINT, so a
mirror, or the tests' loopback server, can stand in for the hub.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from data.download import USER_AGENT
from data.sources import SourceError


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def viewer_endpoint() -> str:
    return os.environ.get("OEUVRE_VIEWER_ENDPOINT", "https://datasets-server.huggingface.co").rstrip("/")


@dataclass
class Traffic:
    """Bytes and requests this process took from hub endpoints (bodies only), for estimates and the bench."""

    bytes: int = 0
    requests: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            self.requests += 1


TRAFFIC = Traffic()


class HttpStatus(SourceError):
    """A definite answer (404, 401, 400...) that retrying will not change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Net:
    """How patient to be with the network, from data.download_timeout_s and data.download_retries."""

    timeout_s: float = 20.0
    retries: int = 3


def get(url: str, net: Net, what: str, byte_range: str | None = None) -> tuple[bytes, Any]:
    """The body and headers of `url`; transient failures retry with back-off, then one line naming `what`."""
    headers = {"User-Agent": USER_AGENT}
    if byte_range:
        headers["Range"] = f"bytes={byte_range}"
    last = ""
    for attempt in range(net.retries + 1):
        if attempt:
            time.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=net.timeout_s) as response:  # noqa: S310 - http(s)
                body = response.read()
                TRAFFIC.add(len(body))
                return body, response.headers
        except urllib.error.HTTPError as exc:
            if exc.code != 429 and exc.code < 500:
                raise HttpStatus(exc.code, f"{what}: HTTP {exc.code} {exc.reason}") from None
            last = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:  # timeouts, resets, refused connections
            last = str(getattr(exc, "reason", exc)) or type(exc).__name__
    tries = f"{net.retries + 1} {'try' if net.retries == 0 else 'tries'}"
    raise SourceError(f"{what}: network error after {tries}: {last}")


def get_json(url: str, net: Net, what: str, **params: Any) -> Any:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    body, _ = get(f"{url}?{query}" if query else url, net, what)
    try:
        return json.loads(body)
    except ValueError:
        raise SourceError(f"{what}: the answer is not JSON (is the endpoint right?)") from None


class RangeFile(io.RawIOBase):
    """A remote file read by HTTP range requests: one request per read, so pyarrow fetches exactly the
    byte ranges it asks for (the footer, then single column chunks) and nothing else."""

    def __init__(self, url: str, net: Net, what: str, size: int | None = None):
        super().__init__()
        self.url, self.net, self.what = url, net, what
        self.pos = self.bytes_read = 0
        self.tail = b""
        if size is not None:  # known from an earlier scan: no request needed
            self.size = size
            return
        tail, headers = self._range("-8")  # the footer length and magic; also tells the file size
        match = re.search(r"/(\d+)\s*$", headers.get("Content-Range") or "")
        if match is None:
            raise SourceError(f"{what}: the server does not answer range requests (no Content-Range)")
        self.size = int(match.group(1))
        self.tail = tail

    def _range(self, spec: str) -> tuple[bytes, Any]:
        body, headers = get(self.url, self.net, self.what, byte_range=spec)
        self.bytes_read += len(body)
        return body, headers

    def footer(self) -> bytes:
        """The parquet footer as a tiny file pyarrow can parse, or SourceError if this is not parquet."""
        if len(self.tail) != 8 or self.tail[4:] != b"PAR1":
            raise SourceError(f"{self.what}: not a parquet file (no PAR1 footer)")
        length = int.from_bytes(self.tail[:4], "little")
        if length + 12 > self.size:
            raise SourceError(f"{self.what}: not a parquet file (footer length {length} > file size)")
        body, _ = self._range(f"{self.size - 8 - length}-{self.size - 9}")
        return b"PAR1" + body + self.tail

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        end = min(self.pos + len(buffer), self.size)
        if end <= self.pos:
            return 0
        body, _ = self._range(f"{self.pos}-{end - 1}")
        n = len(body)
        buffer[:n] = body
        self.pos += n
        return n
