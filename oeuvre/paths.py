"""Where a run keeps what it writes: everything under runs/<artist>/ (git-ignored)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MASKS_FOLDER = "masks"  # <dataset>/masks/<sha256>.png: a work's loss mask (data/ and train/masks.py)


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def lora(self) -> Path:
        return self.root / "lora"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def restyled(self) -> Path:
        return self.root / "restyled"

    @property
    def report(self) -> Path:
        return self.root / "report"


# A checkpoint folder `checkpoints/step-N/` is complete once training has written its state file last;
# training (resume, pruning) and evaluation (`infer evaluate --checkpoints`) both go by this one rule.
CHECKPOINT_STATE_FILE = "trainer_state.json"
CHECKPOINT_TRAINABLE_FILE = "trainable.safetensors"


def complete_checkpoints(folder: Path) -> list[Path]:
    """step-N folders whose state file and trainable weights are both there, oldest first; half-written
    temporary folders (`.tmp-step-N`) never count."""
    found = [
        p
        for p in folder.glob("step-*")
        if p.name[5:].isdigit()
        and (p / CHECKPOINT_STATE_FILE).is_file()
        and (p / CHECKPOINT_TRAINABLE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))
