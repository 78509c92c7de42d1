"""Where a training run's time and memory go: wall time and resident memory per phase (setup, latent
cache, training steps, the final validation, writing the files), into report/train_phases.json.

`peak_rss_mb` is the process's peak so far (it only grows), so the phase where it grows is the one
that set the run's peak; `rss_mb` is what the process holds when the phase ends."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from oeuvre.atomic import atomic_write_text


def current_rss_mb() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # not Linux
        return 0
    return round(pages * resource.getpagesize() / 2**20)


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux


class PhaseClock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.rows: list[dict] = []

    def mark(self, phase: str) -> None:
        """End `phase` now."""
        now = time.perf_counter()
        row = {"phase": phase, "s": round(now - self.last, 2), "rss_mb": current_rss_mb()}
        self.rows.append({**row, "peak_rss_mb": peak_rss_mb()})
        self.last = now

    def summary(self) -> dict:
        return {
            "phases": self.rows,
            "wall_s": round(self.last - self.start, 2),
            "peak_rss_mb": peak_rss_mb(),
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.summary(), indent=2) + "\n")

    def line(self) -> str:
        parts = ", ".join(f"{row['phase']} {row['s']:.1f} s" for row in self.rows)
        return f"phases: {parts}; peak RSS {peak_rss_mb()} MB"
