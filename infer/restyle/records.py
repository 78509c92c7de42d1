"""What each restyled image carries: the A1111 `parameters` text in the PNG and a JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infer.restyle.control import a1111_control_fields
from infer.restyle.png_info import format_parameters, png_with_parameters
from infer.restyle.restyler import Restyler
from infer.restyle.settings import Job
from oeuvre.atomic import atomic_write_bytes, atomic_write_text


def write_output(path: Path, image, record: dict[str, Any]) -> None:
    """The PNG (with its `parameters` chunk) and its JSON sidecar, each written atomically."""
    atomic_write_bytes(path, png_with_parameters(image, record["parameters"]))
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")


def describe(
    restyler: Restyler, job: Job, size: tuple[int, int], out_size: tuple[int, int], prompt=None
) -> dict[str, Any]:
    s = restyler.settings
    if prompt is not None:  # --reference nearest: this input's own prompt
        from dataclasses import replace

        s = replace(s, prompt=prompt)
    lora_name = s.lora_file.stem if s.lora_file else None
    fields = {
        "Steps": s.steps,
        "Sampler": restyler.sampler,
        "CFG scale": f"{s.guidance:g}",
        "CFG cutoff": f"{s.guidance_cutoff:g}" if s.guidance_cutoff < 1 else None,
        "Seed": job.seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model hash": restyler.base_hash,
        "Model": Path(s.base_model).name if Path(s.base_model).exists() else s.base_model,
        "Denoising strength": f"{job.strength:g}",
        "Lora hashes": f"{lora_name}: {restyler.lora_hash}" if lora_name else None,
        **a1111_control_fields(s, job.control),
        "Version": "oeuvre",
    }
    lora = (lora_name, job.scale) if lora_name else None
    return {
        "parameters": format_parameters(s.prompt, s.negative_prompt, fields, lora),
        "prompt": s.prompt,
        "negative_prompt": s.negative_prompt,
        "steps": s.steps,
        "sampler": restyler.sampler,
        "guidance": s.guidance,
        "guidance_cutoff": s.guidance_cutoff,
        "seed": job.seed,
        "strength": job.strength,
        "width": size[0],
        "height": size[1],
        "output_width": out_size[0],
        "output_height": out_size[1],
        "base_model": s.base_model,
        "base_hash": restyler.base_hash,
        "lora": None
        if lora_name is None
        else {"file": str(s.lora_file), "name": lora_name, "hash": restyler.lora_hash, "scale": job.scale},
        "embedding": str(s.embedding_file) if s.embedding_file else None,
        "trigger_token": s.trigger_token,
        "controls": [
            {
                "kind": c.kind,
                "model": c.model,
                "weight": weight,
                "start": s.control_start,
                "end": s.control_end,
            }
            for c, (_, weight) in zip(s.controls, job.control, strict=True)
        ],
        "input": str(job.input),
        "device": restyler.device,
        "dtype": str(restyler.dtype).removeprefix("torch."),
    }
