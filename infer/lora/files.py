"""LoRA and token-embedding files: write them the way diffusers and A1111/ComfyUI read them, read them back.

Safetensors only: a `.ckpt`, `.pt` or `.bin` is refused by its name and never unpickled. The LoRA is
written by diffusers' own `save_lora_weights` (with the peft config as adapter metadata, so
`lora_alpha` survives the round trip), then our `oeuvre.*` keys are added to the same header.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer.bases.resolve import pipeline_arch
from oeuvre.atomic import atomic_write_bytes
from oeuvre.errors import OeuvreError

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
# Key suffixes of a LoRA "down" matrix in the layouts diffusers writes or loads.
DOWN_SUFFIXES = (
    ".lora_A.weight",
    ".lora.down.weight",
    ".lora_linear_layer.down.weight",
    ".lora_A.default.weight",
)
EMBEDDING_KEYS = {"sd15": ("emb_params",), "sdxl": ("clip_l", "clip_g")}


class LoraFileError(OeuvreError):
    """A LoRA or embedding file is missing, not safetensors, damaged, or made for another base."""

    exit_code = 2


def _pipeline_class(arch: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if arch == "sd15":
        return StableDiffusionPipeline
    if arch == "sdxl":
        return StableDiffusionXLPipeline
    raise ValueError(f"arch: expected sd15 or sdxl, got {arch!r}")


def _adapter_metadata(config: Any) -> dict | None:
    """A peft LoraConfig (or its dict) as the adapter metadata diffusers stores; None when absent."""
    if config is None:
        return None
    data = dict(config) if isinstance(config, Mapping) else config.to_dict()
    # JSON cannot hold sets (peft keeps target_modules as one); sorted lists keep the file reproducible.
    return {key: sorted(value) if isinstance(value, set) else value for key, value in data.items()}


def _to_diffusers_layout(
    layers: Mapping[str, torch.Tensor] | None, text_encoder: bool = False
) -> dict | None:
    """peft state dicts (lora_A/lora_B) in the layout diffusers' own training scripts save.

    Text-encoder paths get the `text_model.` level: transformers 5 builds CLIP without it, but hub
    files, transformers 4 and ComfyUI's key map have it (diffusers loads either)."""
    if not layers:
        return None
    from diffusers.utils import convert_state_dict_to_diffusers

    # Conv LoRA weights trained in channels_last are strided views; safetensors wants them packed.
    packed = {canonical_text_key(key) if text_encoder else key: t.contiguous() for key, t in layers.items()}
    converted = convert_state_dict_to_diffusers(packed)
    if any(".lora_A." in key or ".lora_B." in key for key in converted):
        # diffusers renames only attention and text-encoder projections: with convolutions (LoCon) the
        # file would mix two spellings, and diffusers' loader, reading it as peft's, silently drops
        # every attention weight. peft's own spelling throughout loads everywhere.
        return packed
    return converted


def canonical_text_key(key: str) -> str:
    """`encoder.layers.0...` (transformers 5) -> `text_model.encoder.layers.0...` (the portable layout)."""
    return key if key.startswith("text_model.") else f"text_model.{key}"


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    bad = [key for key, value in metadata.items() if not isinstance(key, str) or not isinstance(value, str)]
    if bad:
        raise TypeError(f"metadata must map str to str; not so for {bad}")
    return dict(metadata)


def _require_safetensors_name(path: Path, what: str) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoraFileError(
            f"{path}: {path.suffix} files are pickles that can run code when loaded, so they are refused; "
            f"expected a {what} saved as .safetensors"
        )
    if path.suffix.lower() != ".safetensors":
        raise LoraFileError(
            f"{path}: expected a {what} saved as .safetensors, got {path.suffix or 'no suffix'}"
        )


def save_lora_file(
    path: str | Path,
    *,
    arch: str,
    unet_lora_layers: Mapping[str, torch.Tensor],
    unet_lora_config: Any,
    text_encoder_lora_layers: Mapping[str, torch.Tensor] | None = None,
    text_encoder_2_lora_layers: Mapping[str, torch.Tensor] | None = None,
    text_encoder_lora_config: Any = None,
    metadata: Mapping[str, str],
) -> Path:
    """Write a diffusers-format LoRA with `save_lora_weights`, add `metadata` to its header, atomically.

    Layers are peft state dicts (`get_peft_model_state_dict`); configs are peft `LoraConfig`s (or
    their `to_dict()`), stored as diffusers' adapter metadata so alpha is kept. `oeuvre.arch` is
    filled in from `arch` when `metadata` does not carry it."""
    import safetensors.torch

    path = Path(path)
    _require_safetensors_name(path, "LoRA")
    ours = _check_metadata(metadata)
    if ours.setdefault("oeuvre.arch", arch) != arch:
        raise ValueError(f"metadata oeuvre.arch={ours['oeuvre.arch']!r} contradicts arch={arch!r}")
    cls = _pipeline_class(arch)
    if text_encoder_2_lora_layers and arch != "sdxl":
        raise ValueError("text_encoder_2_lora_layers: only SDXL has a second text encoder")

    kwargs: dict[str, Any] = dict(
        unet_lora_layers=_to_diffusers_layout(unet_lora_layers),
        unet_lora_adapter_metadata=_adapter_metadata(unet_lora_config),
    )
    if text_encoder_lora_layers:
        kwargs["text_encoder_lora_layers"] = _to_diffusers_layout(text_encoder_lora_layers, text_encoder=True)
        kwargs["text_encoder_lora_adapter_metadata"] = _adapter_metadata(text_encoder_lora_config)
    if text_encoder_2_lora_layers:
        kwargs["text_encoder_2_lora_layers"] = _to_diffusers_layout(
            text_encoder_2_lora_layers, text_encoder=True
        )
        kwargs["text_encoder_2_lora_adapter_metadata"] = _adapter_metadata(text_encoder_lora_config)

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        cls.save_lora_weights(tmp, weight_name="lora.safetensors", **kwargs)
        written = Path(tmp) / "lora.safetensors"
        header = read_lora_metadata(written)
        tensors = safetensors.torch.load_file(written)
    if any(key.startswith("ss_") for key in ours):
        # kohya's sshs_* hashes cover the tensor bytes actually written, so they are taken here.
        from infer.lora.metadata import sshs_hashes

        ours["sshs_model_hash"], ours["sshs_legacy_hash"] = sshs_hashes(tensors, ours)
    # diffusers' own keys (format, lora_adapter_metadata) stay; ours are added beside them.
    data = safetensors.torch.save(tensors, metadata={**header, **ours})
    return atomic_write_bytes(path, data)


def save_embedding_file(
    path: str | Path, *, arch: str, embeddings: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Token embeddings in the A1111/ComfyUI layout: SD 1.5 {"emb_params": [n, 768]},
    SDXL {"clip_l": [n, 768], "clip_g": [n, 1280]}."""
    import safetensors.torch

    path = Path(path)
    _require_safetensors_name(path, "token embedding")
    _pipeline_class(arch)
    wanted = EMBEDDING_KEYS[arch]
    if sorted(embeddings) != sorted(wanted):
        raise ValueError(f"embeddings for {arch}: expected keys {list(wanted)}, got {sorted(embeddings)}")
    counts = {key: tuple(value.shape) for key, value in embeddings.items()}
    if any(len(shape) != 2 for shape in counts.values()) or len({s[0] for s in counts.values()}) != 1:
        raise ValueError(f"embeddings: expected [n, dim] tensors with the same n, got {counts}")
    ours = _check_metadata(metadata)
    if ours.setdefault("oeuvre.arch", arch) != arch:
        raise ValueError(f"metadata oeuvre.arch={ours['oeuvre.arch']!r} contradicts arch={arch!r}")
    tensors = {key: value.detach().to("cpu").float().contiguous() for key, value in embeddings.items()}
    return atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=ours))


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size; one-line errors."""
    path = Path(path)
    _require_safetensors_name(path, "LoRA or embedding")
    if not path.is_file():
        raise LoraFileError(f"{path}: no such file")
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{size} bytes, too short for a header")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(size - 8, 100_000_000):
                raise ValueError(f"header length {header_len} exceeds the file ({size} bytes)")
            header = json.loads(handle.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = max((_checked_extent(k, v) for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise ValueError(f"tensor data ends at byte {8 + header_len + end} but the file has {size}")
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise LoraFileError(
            f"{path}: not a valid safetensors file (truncated or corrupt: {exc}); re-copy or re-export it"
        ) from exc
    return header


# Bytes per element of each safetensors dtype; a LoRA's weights are one of the float ones.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def _checked_extent(name: str, entry: dict) -> int:
    """The end offset of one tensor's bytes, once its dtype, shape and offsets agree with each other."""
    dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"tensor {name}: unknown dtype {dtype}")
    count = 1
    for side in shape:
        count *= int(side)
    if int(begin) < 0 or int(end) - int(begin) != count * DTYPE_BYTES[dtype]:
        raise ValueError(f"tensor {name}: {dtype} {shape} does not fill bytes {begin}..{end}")
    return int(end)


def read_lora_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a safetensors header (diffusers' keys and our `oeuvre.*` keys)."""
    metadata = read_safetensors_header(path).get("__metadata__") or {}
    return {str(key): str(value) for key, value in metadata.items()}


def lora_tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the header alone, without loading any weights."""
    header = read_safetensors_header(path)
    return {key: tuple(value["shape"]) for key, value in header.items() if key != "__metadata__"}


def find_run_lora(run_dir: str | Path) -> tuple[Path, Path | None]:
    """In RUN_DIR/lora/: the diffusers-format `<artist>.safetensors` (not `*.kohya.safetensors`)
    and, when pivotal tuning made one, `<artist>_emb.safetensors`."""
    folder = Path(run_dir) / "lora"
    if not folder.is_dir():
        raise LoraFileError(f"{run_dir}: no lora/ folder; expected a training run folder (runs/<artist>)")
    loras = sorted(
        p
        for p in folder.glob("*.safetensors")
        if not p.name.endswith(".kohya.safetensors") and not p.stem.endswith("_emb")
    )
    if len(loras) != 1:
        found = ", ".join(p.name for p in loras) or "none"
        raise LoraFileError(f"{folder}: expected exactly one <artist>.safetensors LoRA, found {found}")
    embedding = folder / f"{loras[0].stem}_emb.safetensors"
    return loras[0], embedding if embedding.is_file() else None


def lora_module_paths(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Component (unet, text_encoder, text_encoder_2) -> module path -> shape of its LoRA down matrix,
    for files in diffusers' layouts; empty when the keys are in another layout (kohya)."""
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        component, _, rest = key.partition(".")
        if component not in ("unet", "text_encoder", "text_encoder_2"):
            continue
        for suffix in DOWN_SUFFIXES:
            if rest.endswith(suffix):
                found.setdefault(component, {})[rest[: -len(suffix)]] = shape
    return found


def check_lora_fits(path: str | Path, pipe, base_name: str) -> None:
    """Refuse, before loading, a LoRA whose layers do not exist in this base or have other sizes
    (an SDXL LoRA on SD 1.5 or the reverse), since diffusers may otherwise load it as nothing."""
    base_arch = pipeline_arch(pipe)
    lora_arch = read_lora_metadata(path).get("oeuvre.arch")
    if lora_arch and lora_arch != base_arch:
        raise LoraFileError(
            f"{path}: LoRA trained for {lora_arch}, but base {base_name} is {base_arch}; "
            f"pass an {lora_arch} base with --base"
        )
    shapes = lora_tensor_shapes(path)
    modules = lora_module_paths(shapes)
    if not modules:
        _check_kohya_fits(path, shapes, base_arch, base_name)
    for component, paths in modules.items():
        model = getattr(pipe, component, None)
        if model is None:
            raise LoraFileError(
                f"{path}: LoRA has {component} layers, but base {base_name} ({base_arch}) has no {component}"
            )
        for module_path, shape in paths.items():
            module = _find_module(model, module_path)
            weight = getattr(module, "weight", None)
            if weight is None or (len(shape) > 1 and weight.shape[1] != shape[1]):
                have = "no such layer" if weight is None else f"input size {weight.shape[1]}"
                raise LoraFileError(
                    f"{path}: LoRA layer {component}.{module_path} (input size {shape[1]}) does not fit "
                    f"base {base_name} ({base_arch}: {have}); expected a LoRA trained for this base"
                )


def _check_kohya_fits(
    path: Path, shapes: Mapping[str, tuple[int, ...]], base_arch: str, base_name: str
) -> None:
    """kohya files name their layers differently: judge the architecture by their names and shapes,
    since a LoRA for the other one loads as nothing in other tools."""
    from infer.lora.arch import arch_from_keys
    from infer.lora.kohya import is_kohya

    if not is_kohya(shapes):
        return
    lora_arch = arch_from_keys(shapes)
    if lora_arch != base_arch:
        raise LoraFileError(
            f"{path}: kohya LoRA for {lora_arch}, but base {base_name} is {base_arch}; "
            f"expected a LoRA trained for this base"
        )


def _find_module(model, module_path: str):
    # Text-encoder paths come with or without transformers 4's `text_model.` level; models likewise.
    for candidate in (module_path, f"text_model.{module_path}", module_path.removeprefix("text_model.")):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    return None
