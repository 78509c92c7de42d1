"""Named points where the reliability tests kill this process on purpose, to prove that a crash there
loses nothing: `OEUVRE_CRASH_AT=<name>` at the first time the point is reached, `<name>@N` at the Nth.
Unset, each point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

ENV = "OEUVRE_CRASH_AT"


_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted or not wanted.startswith(name):
        return
    _reached[name] = _reached.get(name, 0) + 1
    if wanted in (name, f"{name}@{_reached[name]}"):
        os.kill(os.getpid(), signal.SIGKILL)  # as abrupt as a power cut: no finally, no atexit
