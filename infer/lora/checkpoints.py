"""A training checkpoint (`checkpoints/step-N/trainable.safetensors`) as a LoRA file the restyler loads.

The checkpoint holds the trainable tensors under `<module index>.<peft name>`, the modules being the
UNet (0), then the text encoders that train (1, 2). The run's final LoRA file is the template: each of
its tensors (LoRA down/up, DoRA magnitude, in any of diffusers' spellings, text-encoder paths with or
without the `text_model.` level) is looked up in the checkpoint by component, module path and kind,
and the pivotal-tuning rows are the last rows of that encoder's token-embedding matrix."""

from __future__ import annotations

from pathlib import Path

from infer.lora.files import read_lora_metadata
from oeuvre.errors import OeuvreError
from oeuvre.paths import CHECKPOINT_TRAINABLE_FILE, complete_checkpoints

COMPONENT_OF_INDEX = ("unet", "text_encoder", "text_encoder_2")
EMBEDDING_INDEX = {"emb_params": 1, "clip_l": 1, "clip_g": 2}
# Key endings -> kind, in the checkpoint (peft, adapter "default") and in the layouts diffusers writes.
_CHECKPOINT_KINDS = {
    ".lora_A.default.weight": "down",
    ".lora_B.default.weight": "up",
    ".lora_magnitude_vector.default.weight": "magnitude",
}
_FILE_KINDS = {
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
    ".lora_linear_layer.down.weight": "down",
    ".lora_linear_layer.up.weight": "up",
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora_magnitude_vector.weight": "magnitude",
    ".lora_magnitude_vector": "magnitude",
}


def checkpoint_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint, oldest first."""
    return [(int(folder.name[5:]), folder) for folder in complete_checkpoints(run_dir / "checkpoints")]


def _split(key: str, kinds: dict[str, str]) -> tuple[str, str] | None:
    """(module path without `text_model.`, kind) of a LoRA key, or None for another tensor."""
    for ending, kind in kinds.items():
        if key.endswith(ending):
            return key[: -len(ending)].removeprefix("text_model."), kind
    return None


def checkpoint_tensors(state: dict) -> dict[tuple[str, str, str], object]:
    """(component, module path, kind) -> tensor for every LoRA tensor of a checkpoint."""
    found = {}
    for key, tensor in state.items():
        index, _, name = key.partition(".")
        split = _split(name, _CHECKPOINT_KINDS)
        if split is not None:
            found[(COMPONENT_OF_INDEX[int(index)], *split)] = tensor
    return found


def checkpoint_as_lora(
    checkpoint: Path, lora_file: Path, embedding_file: Path | None, out_dir: Path
) -> tuple[Path, Path | None]:
    """Write out_dir/lora.safetensors (+ lora_emb.safetensors) from a checkpoint, shaped like the final."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(checkpoint / CHECKPOINT_TRAINABLE_FILE))
    found = checkpoint_tensors(state)
    tensors = {}
    for key, reference in load_file(str(lora_file)).items():
        component, _, rest = key.partition(".")
        split = _split(rest, _FILE_KINDS)
        tensor = found.get((component, *split)) if split else None
        if tensor is None or tensor.shape != reference.shape:
            raise OeuvreError(f"{checkpoint}: no tensor for {key} {tuple(reference.shape)} in the checkpoint")
        tensors[key] = tensor.contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = read_lora_metadata(lora_file)
    lora_out = out_dir / "lora.safetensors"
    save_file(tensors, str(lora_out), metadata={**metadata, "oeuvre.checkpoint": checkpoint.name})
    if embedding_file is None:
        return lora_out, None
    rows = {}
    for key, reference in load_file(str(embedding_file)).items():
        table = [
            t
            for k, t in state.items()
            if k.endswith("token_embedding.weight") and k.startswith(f"{EMBEDDING_INDEX.get(key)}.")
        ]
        if len(table) != 1 or table[0].shape[1] != reference.shape[1]:
            raise OeuvreError(f"{checkpoint}: no token-embedding table for {key}")
        rows[key] = table[0][-reference.shape[0] :].contiguous()
    emb_out = out_dir / "lora_emb.safetensors"
    save_file(rows, str(emb_out), metadata=read_lora_metadata(embedding_file))
    return lora_out, emb_out
