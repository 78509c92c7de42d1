"""Checkpoints that appear whole or not at all, pruned to the last K, found again on resume.

Accelerate's save_state writes the optimiser, scheduler and RNG states; our hooks make it store only
the trainable weights (LoRA, new token rows) instead of the whole frozen UNet."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from oeuvre.atomic import atomic_write_text, replace_directory
from oeuvre.crash_points import crash_point
from oeuvre.errors import ConfigError
from oeuvre.paths import CHECKPOINT_STATE_FILE as STATE_FILE
from oeuvre.paths import CHECKPOINT_TRAINABLE_FILE as TRAINABLE_FILE
from oeuvre.paths import complete_checkpoints


def register_trainable_only_hooks(accelerator, modules: list[torch.nn.Module]) -> None:
    """Make save_state/load_state store just the trainable weights of `modules`, as safetensors."""

    def save_hook(models, weights, output_dir):
        weights.clear()  # the frozen base weights are not ours to save again
        if accelerator.is_main_process:
            save_file(trainable_state(modules), str(Path(output_dir) / TRAINABLE_FILE))

    def load_hook(models, input_dir):
        models.clear()
        state = load_file(str(Path(input_dir) / TRAINABLE_FILE))
        mismatch = shape_mismatch(state, trainable_state(modules))
        if mismatch:
            raise ConfigError(
                f"{input_dir}: its trainable weights do not fit this run ({mismatch}): it was trained "
                "with other LoRA settings (train.lora_rank, train.lora_target_modules, the text encoder, "
                "the trigger's tokens). Start over with train.resume=none, or remove "
                f"{Path(input_dir).parent}"
            )
        with torch.no_grad():
            for name, parameter in _trainable_items(modules):
                parameter.copy_(state[name])

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def shape_mismatch(saved: dict, expected: dict) -> str:
    """'' when `saved` has exactly `expected`'s names and shapes; else what differs first, in words."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        return (
            f"{len(missing)} weights missing, e.g. {missing[:1]}; "
            f"{len(extra)} not of this run, e.g. {extra[:1]}"
        )
    for name, tensor in expected.items():
        if saved[name].shape != tensor.shape:
            return f"{name} is {tuple(saved[name].shape)}, this run's {tuple(tensor.shape)}"
    return ""


def _trainable_items(modules):
    for index, module in enumerate(modules):
        for name, parameter in module.named_parameters():
            if parameter.requires_grad:
                yield f"{index}.{name}", parameter


def trainable_state(modules) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in _trainable_items(modules)}


def save_checkpoint(accelerator, folder: Path, step: int, keep: int) -> Path:
    final = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # The state file last: a folder without it never counts as a checkpoint (oeuvre/paths.py).
        atomic_write_text(tmp / STATE_FILE, json.dumps({"global_step": step}))
        crash_point("checkpoint:before_rename")
        replace_directory(tmp, final)  # an older step-N is renamed aside, not deleted, until this is in
        for old in complete_checkpoints(folder)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resume_point(folder: Path, resume: str) -> Path | None:
    """`auto`: the latest complete checkpoint, if any; `none`: start fresh; else a checkpoint folder."""
    if resume == "none":
        return None
    if resume == "auto":
        found = complete_checkpoints(folder)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"train.resume={resume}: not a complete checkpoint folder (no {STATE_FILE})")
    return path


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / STATE_FILE).read_text())["global_step"])


def all_finite(modules) -> bool:
    return all(torch.isfinite(p).all() for m in modules for p in m.parameters() if p.requires_grad)


def weights_digest(modules) -> str:
    """sha256 of the trainable weights, exact to the bit."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(modules).items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()


def check_ranks_agree(accelerator, modules) -> str:
    """Every process must end with the same trainable weights (a data-parallel run that did not
    average its gradients would not); raises if they differ. Returns the weights' digest."""
    from accelerate.utils import gather_object

    mine = weights_digest(modules)
    if accelerator.num_processes == 1:
        return mine
    digests = gather_object([mine])
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"the {accelerator.num_processes} processes ended with different LoRA weights ({digests}); "
            "gradients were not averaged across processes"
        )
    accelerator.print(f"trained weights identical on all {accelerator.num_processes} processes: {mine[:16]}")
    return mine
