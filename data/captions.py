"""Captions: the config's template filled per image, with the trigger token always present.

Template fields: {token} (required), {title}, {artist}, {year}, {genre}, {style}, and {caption} (the
sidecar .txt, or the auto-caption). Unknown values become empty and the leftover punctuation is tidied.
A sidecar caption the template does not place is put in front: "<sidecar>, <template>".
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oeuvre.errors import OeuvreError

FIELDS = ("token", "title", "artist", "year", "genre", "style", "caption")


class CaptionError(OeuvreError):
    exit_code = 2


def check_template(template: str) -> None:
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in FIELDS:
            raise CaptionError(
                f"data.caption_template: unknown field {{{name}}} in {template!r} "
                f"(expected fields: {', '.join('{' + f + '}' for f in FIELDS)})"
            )


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def render_caption(template: str, values: Mapping[str, Any]) -> str:
    """Fill `template`; missing values are blank and the dangling separators they leave are removed."""
    filled = {k: ("" if v is None else str(v).strip()) for k, v in values.items()}
    text = string.Formatter().vformat(template, (), _Blank(filled))
    sidecar = filled.get("caption", "")
    if sidecar and "{caption}" not in template:
        text = f"{sidecar}, {text}"
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = re.sub(r"([,;:])(\s*[,;:])+", r"\1", text)
    text = re.sub(r"\(\s*\)|\[\s*\]|\"\s*\"", "", text)
    text = re.sub(r"\s+", " ", text).strip(" ,;:")
    token = filled.get("token", "")
    if token and token not in text:  # a template without {token} is refused by the config; belt and braces
        text = f"{text}, {token}" if text else token
    return text


class AutoCaptioner:
    """A BLIP-style image-to-text model through transformers, by hub id or local folder.

    Loaded on first use; with HF_HUB_OFFLINE=1 an uncached id fails at once with a clear message.
    """

    def __init__(self, model: str, device: str | None = None, max_new_tokens: int = 30):
        self.model_id = model
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._model = None
        self._processor = None

    def _load(self) -> None:
        import torch
        from transformers import AutoProcessor, BlipForConditionalGeneration

        try:
            self._processor = AutoProcessor.from_pretrained(self.model_id)
            # safetensors only: a captioner published as a pickle (.bin) is refused, never unpickled.
            self._model = BlipForConditionalGeneration.from_pretrained(self.model_id, use_safetensors=True)
        except Exception as exc:  # noqa: BLE001
            local = " (a local folder)" if Path(self.model_id).exists() else ""
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CaptionError(
                f"data.auto_caption_model {self.model_id!r}{local}: cannot load a BLIP captioning model: "
                f"{first}"
            ) from None
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model.to(self.device).eval()

    def caption(self, images: list) -> list[str]:
        import torch

        if self._model is None:
            self._load()
        inputs = self._processor(images=images, return_tensors="pt").to(self.device)
        with torch.no_grad():
            output = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return [t.strip() for t in self._processor.batch_decode(output, skip_special_tokens=True)]
