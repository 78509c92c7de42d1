"""A training checkpoint (`checkpoints/step-N/trainable.safetensors`) as a LoRA file the restyler loads.

The checkpoint holds the trainable tensors under `<module index>.<peft name>`; the run's final LoRA
file is the template: each of its tensors is looked up in the checkpoint by module path and shape,
and the pivotal-tuning rows are the last rows of the checkpoint's token-embedding matrix."""

from __future__ import annotations

import re
from pathlib import Path

from infer.lora.files import read_lora_metadata
from oeuvre.errors import OeuvreError
from oeuvre.paths import CHECKPOINT_TRAINABLE_FILE, complete_checkpoints

_LORA_KEY = re.compile(r"^(?:unet|text_encoder|text_encoder_2)\.(.+)\.lora\.(down|up)\.weight$")


def checkpoint_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint, oldest first."""
    return [(int(folder.name[5:]), folder) for folder in complete_checkpoints(run_dir / "checkpoints")]


def checkpoint_as_lora(
    checkpoint: Path, lora_file: Path, embedding_file: Path | None, out_dir: Path
) -> tuple[Path, Path | None]:
    """Write out_dir/lora.safetensors (+ lora_emb.safetensors) from a checkpoint, shaped like the final."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(checkpoint / CHECKPOINT_TRAINABLE_FILE))
    by_path = {}
    for key, tensor in state.items():
        name = key.split(".", 1)[1].replace(".default.weight", ".weight")
        name = name.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up.")
        by_path.setdefault(name, []).append(tensor)
    template = load_file(str(lora_file))
    tensors = {}
    for key, reference in template.items():
        match = _LORA_KEY.match(key)
        candidates = by_path.get(f"{match[1]}.lora.{match[2]}.weight", []) if match else []
        fitting = [t for t in candidates if t.shape == reference.shape]
        if len(fitting) != 1:
            raise OeuvreError(f"{checkpoint}: no single tensor for {key} {tuple(reference.shape)}")
        tensors[key] = fitting[0].contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = read_lora_metadata(lora_file)
    lora_out = out_dir / "lora.safetensors"
    save_file(tensors, str(lora_out), metadata={**metadata, "oeuvre.checkpoint": checkpoint.name})
    if embedding_file is None:
        return lora_out, None
    tables = [t for k, t in state.items() if k.endswith("token_embedding.weight")]
    rows = {}
    for key, reference in load_file(str(embedding_file)).items():
        fitting = [t for t in tables if t.shape[1] == reference.shape[1]]
        if len(fitting) != 1:
            raise OeuvreError(f"{checkpoint}: no single token-embedding table for {key}")
        rows[key] = fitting[0][-reference.shape[0] :].contiguous()
    emb_out = out_dir / "lora_emb.safetensors"
    save_file(rows, str(emb_out), metadata=read_lora_metadata(embedding_file))
    return lora_out, emb_out
