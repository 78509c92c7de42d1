"""`restyle --reference nearest`: each content image borrows its nearest work from the artist database.

The nearest work's title (or its caption's subject) joins the trigger prompt, and, when an IP-Adapter
is given (a local folder or a hub id), the work itself becomes the image prompt through diffusers'
`load_ip_adapter`, applied to the style layers only (InstantStyle: the up-block attention that carries
style, not the ones that carry layout), so the photo keeps its composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infer.works.retrieval import ArtistIndex, Work
from oeuvre.inputs import InputError, open_image

# InstantStyle's style-only IP-Adapter scales: SDXL's documented block, and the matching block of SD 1.5
# (whose first up block has no attention).
STYLE_BLOCKS = {
    "sdxl": {"up": {"block_0": [0.0, 1.0, 0.0]}},
    "sd15": {"up": {"block_1": [0.0, 1.0, 0.0]}},
}
DEFAULT_WEIGHTS = {
    "sd15": ("models", "ip-adapter_sd15.safetensors"),
    "sdxl": ("sdxl_models", "ip-adapter_sdxl.safetensors"),
}


@dataclass(frozen=True)
class Reference:
    work: Work
    similarity: float
    copy_score: int | None = None  # set when the input is an altered copy of this work

    def image(self):
        return open_image(self.work.path)


def nearest_references(
    run_dir: Path | None, inputs: list[Path], descriptor_spec: str
) -> dict[Path, Reference]:
    """The nearest kept work of the run's dataset for each input, under the named descriptor."""
    from infer.works.descriptors import load_descriptor

    if run_dir is None:
        raise InputError("--reference nearest: needs --lora RUN_DIR (a run with a curated dataset)")
    descriptor = load_descriptor(descriptor_spec)
    if descriptor.note:
        print(descriptor.note)
    from infer.works.copies import WorkCopies

    index = ArtistIndex(run_dir / "dataset", descriptor)
    images = [open_image(p) for p in inputs]
    found = index.nearest(descriptor.embed(images), k=1)
    copies = WorkCopies(run_dir / "dataset")
    references = {}
    for path, image, best in zip(inputs, images, found, strict=True):
        copied = copies.copy_of(image)  # a work the input copies comes first, whatever its style score
        references[path] = (
            Reference(copied[0], best[0][1], copied[1].score) if copied else Reference(*best[0])
        )
    return references


def reference_prompt(prompt: str, work: Work) -> str:
    """The trigger prompt plus the work's title, or its caption's subject (the caption minus the prompt)."""
    subject = work.title or (work.text or "").replace(prompt, "").strip(" ,")
    return f"{prompt}, {subject}" if subject and subject not in prompt else prompt


def load_style_ip_adapter(pipe, spec: str, arch: str, weight_name: str | None, scale: float) -> None:
    """diffusers' IP-Adapter from a folder or hub id, scaled onto the style layers only; a clear error when
    the weights are not there (nothing is downloaded under HF_HUB_OFFLINE)."""
    subfolder, default_weight = DEFAULT_WEIGHTS[arch]
    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / (weight_name or default_weight)).is_file():
        subfolder = ""  # the weights sit in the folder itself
    try:
        pipe.load_ip_adapter(
            str(folder) if folder.is_dir() else spec,
            subfolder=subfolder,
            weight_name=weight_name or default_weight,
        )
    except (OSError, ValueError) as exc:
        raise InputError(
            f"--ip-adapter {spec}: could not load {subfolder + '/' if subfolder else ''}"
            f"{weight_name or default_weight} and its image_encoder ({type(exc).__name__}: {exc}); expected "
            "a local h94/IP-Adapter-style folder or a cached hub id, with safetensors weights"
        ) from exc
    blocks = STYLE_BLOCKS[arch]
    pipe.set_ip_adapter_scale(
        {part: {b: [v * scale for v in vs] for b, vs in block.items()} for part, block in blocks.items()}
    )
