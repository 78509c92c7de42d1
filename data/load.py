"""Read a curated dataset back with `datasets`: both splits, whatever their names.

`load_dataset("imagefolder", data_dir=...)` infers splits from folder names it knows (train, test,
validation and aliases) and silently ignores `holdout/`; listing the files per split avoids that.
"""

from __future__ import annotations

from pathlib import Path


def load_curated(dataset_dir: str | Path, **kwargs):
    """A DatasetDict with `train` and (when not empty) `holdout`, images decoded as PIL."""
    import datasets

    root = Path(dataset_dir)
    data_files = {
        split: str(root / split / "*")
        for split in ("train", "holdout")
        if any(p.name != "metadata.jsonl" for p in (root / split).glob("*"))
    }
    return datasets.load_dataset("imagefolder", data_files=data_files, **kwargs)
