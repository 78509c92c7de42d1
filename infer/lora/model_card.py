"""The Hub model card (README.md) for a run's lora/ folder: YAML header the Hub reads, then usage.

The header is written with huggingface_hub's own `ModelCardData`, so it parses back with
`ModelCard.load` / `metadata_load`; the body says how to load the files in diffusers, A1111 and
ComfyUI, what the run was trained on, and what it cannot do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from infer.lora.metadata import style_training
from oeuvre.atomic import atomic_write_text

TAGS = ["lora", "stable-diffusion", "diffusers", "text-to-image", "template:sd-lora", "oeuvre", "style"]
SDXL_TAGS = ["stable-diffusion-xl"]


def _is_local(base: str) -> bool:
    """A folder rather than a hub id (owner/name)."""
    return Path(base).is_dir() or Path(base).is_absolute() or base.count("/") != 1


def card_text(
    metadata: Mapping[str, str],
    *,
    diffusers_file: str,
    kohya_file: str | None,
    embedding_file: str | None,
    sample_images: Sequence[str],
) -> str:
    """README.md text; `sample_images` are paths relative to the card's folder."""
    from huggingface_hub import ModelCardData

    artist = metadata.get("oeuvre.artist") or metadata.get("ss_output_name") or "artist"
    trigger = metadata.get("oeuvre.trigger_token", "")
    arch = metadata.get("oeuvre.arch", "sd15")
    base = json.loads(metadata.get("oeuvre.config") or "{}").get("base_model") or metadata.get(
        "oeuvre.base_model", ""
    )
    caption = metadata.get("oeuvre.caption") or f"a painting in the style of {trigger}"
    data = ModelCardData(
        base_model=base or None,
        license=metadata.get("modelspec.license") or "other",
        tags=TAGS + (SDXL_TAGS if arch == "sdxl" else []),
        instance_prompt=trigger,
        widget=[{"text": caption, "output": {"url": image}} for image in sample_images],
        library_name="diffusers",
    )
    samples = "\n".join(f"![sample {i + 1}]({image})" for i, image in enumerate(sample_images))
    usage = _usage_section(arch, base, trigger, caption, artist, diffusers_file, kohya_file, embedding_file)
    body = f"""
# {artist} style LoRA

A LoRA that paints in the overall style of **{artist}**, trained with
oeuvre {metadata.get("oeuvre.version", "")}. Put the trigger **`{trigger}`**
in the prompt, e.g. `{caption}`.

{samples or "(no sample images were saved for this run)"}

## Files

| file | for |
|---|---|
| `{diffusers_file}` | diffusers `load_lora_weights` (peft keys, alpha kept in the adapter metadata) |
| `{kohya_file or "-"}` | AUTOMATIC1111, ComfyUI, SD.Next, Civitai (kohya keys, true alpha) |
| `{embedding_file or "-"}` | the trigger's token embedding (pivotal tuning), A1111/ComfyUI layout |

{usage}
{_recommended_section(metadata)}{_training_section(metadata, artist, arch, base, caption)}"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def _usage_section(
    arch: str,
    base: str,
    trigger: str,
    caption: str,
    artist: str,
    diffusers_file: str,
    kohya_file: str | None,
    embedding_file: str | None,
) -> str:
    """How to load the files in diffusers, oeuvre, A1111/Forge and ComfyUI."""
    pipeline = "StableDiffusionXLImg2ImgPipeline" if arch == "sdxl" else "StableDiffusionImg2ImgPipeline"
    embedding_lines = ""
    if embedding_file:
        if arch == "sdxl":
            embedding_lines = (
                "from safetensors.torch import load_file\n"
                f'emb = load_file("{embedding_file}")\n'
                f'pipe.load_textual_inversion(emb["clip_l"], token="{trigger}", '
                "text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)\n"
                f'pipe.load_textual_inversion(emb["clip_g"], token="{trigger}", '
                "text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)\n"
            )
        else:
            embedding_lines = f'pipe.load_textual_inversion("{embedding_file}", token="{trigger}")\n'
    # A1111 and ComfyUI call an embedding by its file name, not by the token it was trained as.
    embedding_name = Path(embedding_file).stem if embedding_file else ""
    other_tools_caption = caption.replace(trigger, embedding_name) if embedding_file and trigger else caption
    base_note = (
        f"\n`{base}` is a local folder: put the hub id of the base you trained on in its place.\n"
        if base and _is_local(base)
        else ""
    )
    a1111_embedding = f" and `{embedding_file}` into `embeddings/`" if embedding_file else ""
    comfy_embedding = f" and `{embedding_file}` into `models/embeddings/`" if embedding_file else ""
    kohya_name = Path(kohya_file).stem.removesuffix(".kohya") if kohya_file else artist
    return f"""## Use it

### diffusers

```python
import torch
from diffusers import {pipeline}
from diffusers.utils import load_image

pipe = {pipeline}.from_pretrained("{base}", torch_dtype=torch.float16).to("cuda")
pipe.load_lora_weights(".", weight_name="{diffusers_file}")
{embedding_lines}image = pipe("{caption}", image=load_image("photo.jpg"), strength=0.6).images[0]
```
{base_note}
Or with oeuvre: `python -m infer restyle photo.jpg --lora {diffusers_file}`.

### AUTOMATIC1111 / Forge

Copy `{kohya_file or diffusers_file}` into `models/Lora/`{a1111_embedding},
then prompt: `{other_tools_caption} <lora:{kohya_name}:0.8>`.

### ComfyUI

Copy `{kohya_file or diffusers_file}` into `models/loras/`{comfy_embedding},
add a **LoraLoader** node between the checkpoint loader and the sampler, and prompt
`{other_tools_caption.replace(embedding_name, "embedding:" + embedding_name) if embedding_file else caption}`.
"""


def _recommended_section(metadata: Mapping[str, str]) -> str:
    """Strength, scale and checkpoint chosen on held-out works by `python -m infer recommend`."""
    from infer.lora.recommended import PLOT, recommended_settings

    found = recommended_settings(metadata)
    if found is None:
        return ""
    evidence = found["evidence"]
    checkpoint = found["checkpoint"]
    earlier = (
        f" These files hold the weights of training {checkpoint}, which beat the final step; the final "
        "step's files are kept in the run's `checkpoints/final-step-*/`."
        if "final" not in checkpoint
        else ""
    )
    return (
        "## Recommended settings\n\n"
        f"img2img strength **{found['strength']:g}**, LoRA scale **{found['scale']:g}** ({checkpoint}): "
        f"the highest held-out style similarity ({evidence.get('style', 0):.3f} under "
        f"{evidence.get('descriptor', '?')}) among the settings tried ({evidence.get('grid', '?')}) "
        f"that keep content at least {evidence.get('floor', 0):.3f} "
        f"(kept: {evidence.get('content_kept', 0):.3f}) and copy no training work. "
        "`python -m infer restyle` and the app use them unless told otherwise."
        f"{earlier}\n\n![style vs content kept, the recommended setting marked]({PLOT})\n\n"
    )


def _holdout_note(metadata: Mapping[str, str]) -> str:
    if metadata.get("oeuvre.holdout_works") != "0":
        return ""
    return (
        "\nNo works were held out (`data.holdout_fraction=0`): training ran without a holdout validation "
        "loss, and nothing here was measured against works the LoRA did not see."
    )


def _training_section(metadata: Mapping[str, str], artist: str, arch: str, base: str, caption: str) -> str:
    """The training settings, the dataset and the limitations."""
    resolution = metadata.get("modelspec.resolution", "?")
    style = style_training(metadata)
    return f"""## Training

| setting | value |
|---|---|
| base model | `{base}` ({arch}) |
| rank / alpha | {metadata.get("ss_network_dim", "?")} / {metadata.get("ss_network_alpha", "?")} |
| resolution | {resolution} |
| steps | {metadata.get("ss_max_train_steps", "?")} |
| learning rate | {metadata.get("ss_learning_rate", "?")} |
| text-encoder LoRA | {metadata.get("ss_train_text_encoder", "?")} |
| pivotal tuning | {metadata.get("oeuvre.pivotal_tuning", "?")} |
| output preservation | {style["output_preservation"]} |
| LoRA blocks | {style["lora_blocks"]} |
| masked loss | {style["masked_loss"]} |
| seed | {metadata.get("ss_seed", "?")} |

The full configuration is in each file's `oeuvre.config` metadata.

## Dataset

{metadata.get("ss_num_train_images", "?")} training images of {artist}'s work, captioned
`{caption}`; dataset sha256 `{metadata.get("oeuvre.dataset_sha256", "?")}`.{_holdout_note(metadata)}

## Limitations

- A model trained on a tiny random demo base (`make demo`) proves the machinery only: its images are
  noise-like. Real results need a real base model and a real dataset.
- The LoRA imitates a style from a small set of works; it can reproduce motifs of the training works
  and carries the base model's biases.
- Respect the artist's rights: check the licence of every work in the dataset before sharing, and do not
  pass outputs off as the artist's own work. Licence field: `{metadata.get("modelspec.license", "other")}`.
"""


def write_model_card(folder: str | Path, metadata: Mapping[str, str], **files) -> Path:
    """Write `folder/README.md` atomically; keyword arguments as for `card_text`."""
    path = Path(folder) / "README.md"
    return atomic_write_text(path, card_text(metadata, **files))


def rewrite_model_card(folder: str | Path, metadata: Mapping[str, str]) -> Path:
    """The card again from the files in `folder` (after their metadata changed)."""
    folder = Path(folder)
    kohya = next(folder.glob("*.kohya.safetensors"), None)
    artist = kohya.name.removesuffix(".kohya.safetensors") if kohya else None
    if artist is None:
        artist = next(p.stem for p in folder.glob("*.safetensors") if not p.stem.endswith("_emb"))
    embedding = folder / f"{artist}_emb.safetensors"
    return write_model_card(
        folder,
        metadata,
        diffusers_file=f"{artist}.safetensors",
        kohya_file=kohya.name if kohya else None,
        embedding_file=embedding.name if embedding.is_file() else None,
        sample_images=[p.relative_to(folder).as_posix() for p in sorted((folder / "samples").glob("*.png"))],
    )
