"""Named points where the reliability tests kill this process on purpose (`OEUVRE_CRASH_AT=<name>`),
to prove that a crash there loses nothing. Unset, each point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

ENV = "OEUVRE_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)  # as abrupt as a power cut: no finally, no atexit
