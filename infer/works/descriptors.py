"""Style descriptors: an image in, an L2-normalised vector out, so cosine similarity compares styles.

- `weights-free` always works, offline, with no model: colour statistics, gradient-orientation and
  texture statistics, and Gram matrices of fixed random convolutions (the Gatys recipe without a
  trained network; random filters already capture texture well, Ulyanov et al. 2017).
- `clip:<folder or hub id>`: CLIP image embeddings through transformers, when the weights are there.
- `csd:<file>`: CSD (arXiv 2404.01292) style embeddings: a CLIP ViT backbone plus CSD's style head,
  read only from safetensors or a checkpoint converted once with `torch.load(weights_only=True)`.

`load_descriptor(spec)` falls back to the weights-free descriptor when weights are missing and says
so (the fallback's `note`); every number in a report names the descriptor that produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

WEIGHTS_FREE = "weights-free"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
_SIDE = 256  # images are compared at about this size (short side): brushwork shows, detail does not
_ORIENTATION_BINS = 12
_RANDOM_FILTERS = 16


class Descriptor(Protocol):
    name: str
    note: str

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


# -- weights-free --------------------------------------------------------------------------------


def _resized(image: Image.Image) -> np.ndarray:
    scale = _SIDE / max(1, min(image.size))
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    rgb = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def _colour_statistics(rgb: np.ndarray) -> np.ndarray:
    hsv = np.asarray(Image.fromarray((rgb * 255).astype(np.uint8)).convert("HSV"), dtype=np.float32) / 255
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    # Hue as a saturation-weighted circular histogram: grey pixels have no meaningful hue.
    hue_hist = np.bincount(
        (hue.ravel() * 12).astype(int) % 12, weights=saturation.ravel(), minlength=12
    ) / max(1.0, saturation.size)
    sat_hist = np.histogram(saturation, bins=8, range=(0, 1))[0] / saturation.size
    val_hist = np.histogram(value, bins=8, range=(0, 1))[0] / value.size
    moments = np.concatenate([rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1))])
    return np.concatenate([hue_hist * 4, sat_hist, val_hist, moments])


def _gradients(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.gradient(grey)
    return np.hypot(gx, gy), np.arctan2(gy, gx) % np.pi


def _texture_statistics(rgb: np.ndarray) -> np.ndarray:
    """Magnitude-weighted orientation histograms and gradient-energy statistics at two scales."""
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    parts = []
    for _level in range(2):
        magnitude, angle = _gradients(grey)
        bins = (angle / np.pi * _ORIENTATION_BINS).astype(int) % _ORIENTATION_BINS
        hist = np.bincount(bins.ravel(), weights=magnitude.ravel(), minlength=_ORIENTATION_BINS)
        hist = hist / max(1e-6, hist.sum())
        energy = np.histogram(np.log1p(magnitude * 50), bins=8, range=(0, 4))[0] / magnitude.size
        # Sorted orientation histogram: stroke anisotropy without caring which way the strokes run.
        parts += [hist, np.sort(hist), energy, [magnitude.mean() * 10, magnitude.std() * 10]]
        h, w = grey.shape
        grey = grey[: h - h % 2, : w - w % 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in parts])


def _box_blur(a: np.ndarray, radius: int = 2) -> np.ndarray:
    """Mean over a (2r+1)² window (edge-padded), twice: close enough to a Gaussian, and fast."""
    for _ in range(2):
        for axis in (0, 1):
            padded = np.pad(a, [(radius + 1, radius) if i == axis else (0, 0) for i in range(2)], mode="edge")
            sums = np.cumsum(padded, axis=axis)
            size = 2 * radius + 1
            a = (
                np.take(sums, range(size, sums.shape[axis]), axis=axis)
                - np.take(sums, range(0, sums.shape[axis] - size), axis=axis)
            ) / size
    return a


def _stroke_statistics(rgb: np.ndarray) -> np.ndarray:
    """Energy-weighted histograms of structure-tensor coherence at three scales: long coherent brush
    strokes (near 1) versus blotches and flat washes (near 0), whatever the subject or palette."""
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    parts = []
    for _level in range(3):
        gy, gx = np.gradient(grey)
        jxx, jyy, jxy = _box_blur(gx * gx), _box_blur(gy * gy), _box_blur(gx * gy)
        energy = jxx + jyy
        coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (energy + 1e-4)
        hist = np.histogram(coherence, bins=8, range=(0, 1), weights=energy)[0]
        parts.append(hist / max(1e-9, float(energy.sum())))
        h, w = grey.shape
        grey = grey[: h - h % 2, : w - w % 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return np.concatenate(parts).astype(np.float32)


_FILTERS: dict[int, np.ndarray] = {}


def _random_filters(size: int) -> np.ndarray:
    """Fixed zero-mean random filters (seeded): the same descriptor on every machine and run."""
    if size not in _FILTERS:
        rng = np.random.default_rng(1234 + size)
        filters = rng.standard_normal((_RANDOM_FILTERS, 3, size, size)).astype(np.float32)
        filters -= filters.mean(axis=(1, 2, 3), keepdims=True)
        _FILTERS[size] = (
            filters / np.linalg.norm(filters.reshape(_RANDOM_FILTERS, -1), axis=1)[:, None, None, None]
        )
    return _FILTERS[size]


def _gram_statistics(rgb: np.ndarray) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    x = x - x.mean(dim=(2, 3), keepdim=True)  # texture, not overall colour (colour has its own block)
    half = torch.nn.functional.avg_pool2d(x, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: thread hand-off costs more than it saves on busy CPUs
    try:
        grams = _grams(x) + _grams(half)  # two scales: fine texture and stroke-sized texture
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(grams)


def _grams(x) -> list[np.ndarray]:
    import torch

    grams = []
    with torch.no_grad():
        for size in (3, 7):
            response = torch.relu(torch.nn.functional.conv2d(x, torch.from_numpy(_random_filters(size))))
            flat = response.reshape(_RANDOM_FILTERS, -1)
            gram = (flat @ flat.T) / flat.shape[1]
            upper = torch.triu_indices(_RANDOM_FILTERS, _RANDOM_FILTERS)
            grams.append(torch.sqrt(gram[upper[0], upper[1]].clamp_min(0)).numpy())
    return grams


@dataclass
class WeightsFree:
    """Colour, gradient texture, stroke coherence and random-filter Gram blocks, each centred and
    L2-normalised, then weighted (colour lightly: an artist's palette varies from work to work more than
    their brushwork does; measured on the van Gogh fixtures), then the whole L2-normalised."""

    note: str = ""
    name: str = WEIGHTS_FREE
    version: str = "2"  # bump when the recipe changes: saved indexes of older vectors are rebuilt
    weights: tuple[float, float, float, float] = (0.3, 1.0, 1.0, 1.0)

    def embed_one(self, image: Image.Image) -> np.ndarray:
        rgb = _resized(image)
        blocks = (
            _colour_statistics(rgb),
            _texture_statistics(rgb),
            _stroke_statistics(rgb),
            _gram_statistics(rgb),
        )
        # Centre each block on a neutral value so cosine similarity is not dominated by shared offsets.
        parts = [w * l2_normalise(b - b.mean()) for w, b in zip(self.weights, blocks, strict=True)]
        return l2_normalise(np.concatenate(parts))

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.embed_one(image) for image in images]) if images else np.zeros((0, 1))


# -- learned -------------------------------------------------------------------------------------


class DescriptorUnavailable(Exception):
    """The weights for a learned descriptor are not here (and cannot be fetched)."""


def _local_or_hub(spec: str, allow_download: bool) -> str:
    """A folder as is; a hub id only when it is cached (or downloads are allowed and we are online)."""
    import os

    if Path(spec).expanduser().is_dir():
        return str(Path(spec).expanduser())
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return snapshot_download(spec, local_files_only=True)
    except Exception as cached_exc:
        if not allow_download or offline:
            raise DescriptorUnavailable(f"{spec}: not a folder and not in the hub cache") from cached_exc
        try:
            return snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.txt"])
        except Exception as exc:  # network, auth, missing repo: all mean 'not available'
            raise DescriptorUnavailable(f"{spec}: could not be downloaded ({type(exc).__name__})") from exc


@dataclass
class Clip:
    """CLIP image embeddings (the projected image features) from transformers."""

    source: str
    allow_download: bool = False
    note: str = ""
    name: str = field(init=False)

    def __post_init__(self) -> None:
        import transformers
        from transformers import CLIPVisionModelWithProjection

        # The PIL processor needs no torchvision (which would pull another torch).
        processor_class = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)

        folder = _local_or_hub(self.source, self.allow_download)
        if not any(Path(folder).glob("*.safetensors")):
            raise DescriptorUnavailable(f"{self.source}: no safetensors weights (pickles are never loaded)")
        try:
            self.processor = processor_class.from_pretrained(folder)
            self.model = CLIPVisionModelWithProjection.from_pretrained(folder, use_safetensors=True).eval()
        except (OSError, ValueError) as exc:
            raise DescriptorUnavailable(f"{self.source}: not a CLIP vision model ({exc})") from exc
        self.name = f"clip:{self.source}"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        with torch.no_grad():
            return l2_normalise(self.model(**inputs).image_embeds.numpy())


def convert_csd_checkpoint(pth: str | Path, out: str | Path) -> Path:
    """CSD's released `checkpoint.pth`, read with weights_only=True (no code runs), saved as safetensors."""
    import torch
    from safetensors.torch import save

    from oeuvre.atomic import atomic_write_bytes

    state = torch.load(str(pth), map_location="cpu", weights_only=True)
    state = state.get("model_state_dict", state)
    tensors = {k.removeprefix("module."): v.contiguous() for k, v in state.items() if torch.is_tensor(v)}
    return atomic_write_bytes(out, save(tensors))


@dataclass
class Csd:
    """CSD: OpenAI-layout CLIP ViT backbone (`backbone.*`) + `last_layer_style` projection, safetensors.

    The backbone's keys are mapped onto transformers' CLIPVisionModel; a checkpoint in any other
    layout is refused by name rather than loaded half-way."""

    path: str
    note: str = ""
    name: str = field(init=False)

    def __post_init__(self) -> None:
        from safetensors.torch import load_file

        path = Path(self.path).expanduser()
        if path.suffix != ".safetensors":
            raise DescriptorUnavailable(
                f"{path}: CSD weights must be .safetensors; convert a .pth once with "
                "infer.works.descriptors.convert_csd_checkpoint (torch.load weights_only=True)"
            )
        if not path.is_file():
            raise DescriptorUnavailable(f"{path}: no such CSD weights file")
        state = load_file(str(path))
        if "last_layer_style" not in state or "backbone.proj" not in state:
            raise DescriptorUnavailable(f"{path}: expected CSD keys backbone.* and last_layer_style")
        self.model, self.proj, self.style = (
            _csd_model(state),
            state["backbone.proj"],
            state["last_layer_style"],
        )
        self.name = f"csd:{path.name}"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        side = self.model.config.image_size  # 224 for CSD's ViT-L/14
        pixels = torch.stack([_clip_pixels(image, side) for image in images])
        with torch.no_grad():
            pooled = self.model(pixel_values=pixels).pooler_output
            features = pooled @ self.proj
            return l2_normalise((features @ self.style).numpy())


_CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
_CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def _clip_pixels(image: Image.Image, side: int = 224):
    import torch

    scale = side / min(image.size)
    resized = image.convert("RGB").resize(
        (max(side, round(image.width * scale)), max(side, round(image.height * scale))),
        Image.Resampling.BICUBIC,
    )
    left, top = (resized.width - side) // 2, (resized.height - side) // 2
    array = np.asarray(resized.crop((left, top, left + side, top + side)), dtype=np.float32) / 255
    return torch.from_numpy(((array - _CLIP_MEAN) / _CLIP_STD).transpose(2, 0, 1).copy())


def _csd_model(state: dict):
    """transformers' CLIPVisionModel filled from an OpenAI-layout ViT state dict (`backbone.*`)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    width = state["backbone.conv1.weight"].shape[0]
    patch = state["backbone.conv1.weight"].shape[-1]
    grid = round((state["backbone.positional_embedding"].shape[0] - 1) ** 0.5)
    layers = len({k.split(".")[3] for k in state if k.startswith("backbone.transformer.resblocks.")})
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        image_size=grid * patch,
        patch_size=patch,
        projection_dim=state["backbone.proj"].shape[1],
        hidden_act="quick_gelu",
    )
    mapped = {
        "embeddings.patch_embedding.weight": state["backbone.conv1.weight"],
        "embeddings.class_embedding": state["backbone.class_embedding"],
        "embeddings.position_embedding.weight": state["backbone.positional_embedding"],
        "pre_layrnorm.weight": state["backbone.ln_pre.weight"],
        "pre_layrnorm.bias": state["backbone.ln_pre.bias"],
        "post_layernorm.weight": state["backbone.ln_post.weight"],
        "post_layernorm.bias": state["backbone.ln_post.bias"],
    }
    for i in range(layers):
        src, dst = f"backbone.transformer.resblocks.{i}.", f"encoder.layers.{i}."
        qkv_w, qkv_b = state[src + "attn.in_proj_weight"], state[src + "attn.in_proj_bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            mapped[dst + f"self_attn.{name}.weight"] = qkv_w[j * width : (j + 1) * width]
            mapped[dst + f"self_attn.{name}.bias"] = qkv_b[j * width : (j + 1) * width]
        pairs = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for a, b in pairs.items():
            mapped[dst + b + ".weight"] = state[src + a + ".weight"]
            mapped[dst + b + ".bias"] = state[src + a + ".bias"]
    model = CLIPVisionModel(config).eval()
    model = getattr(model, "vision_model", model)  # transformers 5 flattened the wrapper
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise DescriptorUnavailable(f"CSD backbone does not fit CLIP ViT: missing {missing[:3]}")
    return model


# -- choosing ------------------------------------------------------------------------------------


def load_descriptor(spec: str = WEIGHTS_FREE, allow_download: bool = False) -> Descriptor:
    """`weights-free`, `clip[:ID or folder]` or `csd:FILE`; a learned one whose weights are missing
    gives the weights-free descriptor with a `note` saying what was asked for and why it fell back."""
    kind, _, source = spec.partition(":")
    try:
        if kind == WEIGHTS_FREE:
            return WeightsFree()
        if kind == "clip":
            return Clip(source or DEFAULT_CLIP, allow_download)
        if kind == "csd":
            return Csd(source)
    except DescriptorUnavailable as exc:
        return WeightsFree(note=f"descriptor {spec} unavailable ({exc}); fell back to {WEIGHTS_FREE}")
    raise ValueError(f"descriptor {spec!r}: expected weights-free, clip[:MODEL] or csd:FILE.safetensors")


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities between the rows of a and the rows of b (rows already L2-normalised)."""
    return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T
