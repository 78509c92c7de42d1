"""The A1111-style `parameters` PNG text chunk: written into every restyled image, and parsed back.

A1111 and ComfyUI show this text as "how it was made":
    <prompt> <lora:name:0.8>
    Negative prompt: <negative>
    Steps: 30, Sampler: Euler, CFG scale: 7.0, Seed: 0, Size: 512x512, Model hash: ..., Model: ..., ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oeuvre.atomic import png_bytes

# A1111's own pattern for `Key: value` pairs; values holding commas are JSON-quoted.
FIELD = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
LORA_TAG = re.compile(r"\s*<lora:([^:>]+):([^>]+)>")

# diffusers scheduler class -> the sampler name A1111 users know.
SAMPLER_NAMES = {
    "PNDMScheduler": "PLMS",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DDIMScheduler": "DDIM",
    "LMSDiscreteScheduler": "LMS",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "HeunDiscreteScheduler": "Heun",
    "UniPCMultistepScheduler": "UniPC",
}


def _quote(value: Any) -> str:
    text = str(value)
    if any(ch in text for ch in ',:"\n'):
        import json

        return json.dumps(text)
    return text


def format_parameters(
    prompt: str, negative_prompt: str, fields: Mapping[str, Any], lora: tuple | None
) -> str:
    """The text of the chunk. `fields` are the `Key: value` pairs in order; `lora` is (name, scale) or None,
    written as A1111's `<lora:name:scale>` prompt tag."""
    first = prompt + (f" <lora:{lora[0]}:{lora[1]:g}>" if lora else "")
    pairs = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value is not None)
    return f"{first}\nNegative prompt: {negative_prompt}\n{pairs}"


def parse_parameters(text: str) -> dict[str, Any]:
    """The chunk back as {"prompt", "negative_prompt", "loras": [(name, scale)], "Steps": "30", ...}."""
    import json

    *head, last = text.strip().split("\n")
    if len(FIELD.findall(last)) < 3:  # no settings line: everything is prompt
        head, last = [*head, last], ""
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in head:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    prompt = "\n".join(prompt_lines)
    loras = [(name, float(scale)) for name, scale in LORA_TAG.findall(prompt)]
    result: dict[str, Any] = {
        "prompt": LORA_TAG.sub("", prompt).strip(),
        "negative_prompt": "\n".join(negative_lines),
        "loras": loras,
    }
    for key, value in FIELD.findall(last):
        result[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
    return result


def png_with_parameters(image, parameters: str) -> bytes:
    """PNG bytes of `image` carrying `parameters` as a tEXt/iTXt chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    return png_bytes(image, pnginfo=info)


def read_parameters(path: str | Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.info["parameters"]
