"""LoRA file tools behind `python -m infer lora`: inspect, convert, resize, merge, push.

Every tool reads either layout (diffusers or kohya) into the same in-memory form (`LoadedLora`:
per component, module -> down, up, alpha), so each is written once and carries the metadata along.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer.lora import kohya
from infer.lora.arch import arch_from_keys
from infer.lora.files import (
    EMBEDDING_KEYS,
    FLOAT_DTYPES,
    LoraFileError,
    read_lora_metadata,
    read_safetensors_header,
    save_lora_file,
)
from infer.lora.kohya import ComponentLora
from infer.lora.metadata import for_file, style_training, summary
from infer.lora.recommended import recommended_settings

if TYPE_CHECKING:
    import torch

# Written by diffusers' save_lora_weights itself; never carried over from another file.
DIFFUSERS_OWN_KEYS = ("format", "lora_adapter_metadata")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class LoadedLora:
    path: Path
    format: str  # "diffusers" or "kohya"
    arch: str
    components: dict[str, ComponentLora]
    metadata: dict[str, str]


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    import safetensors.torch

    header = read_safetensors_header(path)  # refuses pickles by name and damaged files with one line
    odd = {k: v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"] not in FLOAT_DTYPES}
    if odd:
        key, dtype = next(iter(odd.items()))
        raise LoraFileError(f"{path}: tensor {key} is {dtype}; expected floating-point LoRA weights")
    return safetensors.torch.load_file(path), read_lora_metadata(path)


def load_lora(path: str | Path) -> LoadedLora:
    """Read a LoRA in either layout; one-line errors for anything else."""
    path = Path(path)
    tensors, metadata = _load_tensors(path)
    keys = list(tensors)
    if set(keys) & {key for keys in EMBEDDING_KEYS.values() for key in keys}:
        raise LoraFileError(f"{path}: a token embedding, not a LoRA; expected a LoRA file")
    if kohya.is_kohya(keys):
        fmt = "kohya"
    elif any(key.partition(".")[0] in kohya.COMPONENTS and "lora" in key for key in keys):
        fmt = "diffusers"
    else:
        shown = ", ".join(keys[:3]) or "no tensors"
        raise LoraFileError(
            f"{path}: no LoRA keys (found {shown}); expected diffusers (unet./text_encoder.) "
            "or kohya (lora_unet_/lora_te_) keys"
        )
    arch = metadata.get("oeuvre.arch") or arch_from_keys({k: tuple(v.shape) for k, v in tensors.items()})
    if arch not in kohya.KOHYA_PREFIXES:
        raise LoraFileError(f"{path}: metadata oeuvre.arch={arch!r}; expected sd15 or sdxl")
    try:
        if fmt == "kohya":
            components = kohya.components_from_kohya(tensors, arch)
        else:
            components = kohya.components_from_diffusers(tensors, metadata)
    except LoraFileError as exc:
        raise LoraFileError(f"{path}: {exc}") from exc
    except ValueError as exc:  # diffusers' converters reject keys they cannot place
        first = str(exc).strip().splitlines()[0]
        raise LoraFileError(
            f"{path}: LoRA keys not understood ({first}); expected an SD 1.5/SDXL LoRA"
        ) from exc
    if not any(c.down for c in components.values()):
        raise LoraFileError(f"{path}: no LoRA layers found; expected LoRA down/up weights")
    return LoadedLora(path, fmt, arch, components, metadata)


def save_lora(lora: LoadedLora, out: str | Path, fmt: str) -> Path:
    """Write `lora` in `fmt` (diffusers or kohya) with its metadata (and fresh hashes) atomically."""
    import safetensors.torch

    from oeuvre.atomic import atomic_write_bytes

    out = Path(out)
    metadata = {k: v for k, v in lora.metadata.items() if k not in DIFFUSERS_OWN_KEYS}
    metadata["oeuvre.arch"] = lora.arch
    if fmt == "kohya":
        if out.suffix.lower() != ".safetensors":
            raise LoraFileError(f"{out}: expected an output name ending in .safetensors")
        tensors = kohya.to_kohya(lora.components, lora.arch)
        data = safetensors.torch.save(tensors, metadata=for_file(metadata, tensors, "kohya"))
        return atomic_write_bytes(out, data)
    if fmt != "diffusers":
        raise ValueError(f"fmt: expected kohya or diffusers, got {fmt!r}")
    layers = {name: lora.components[name].peft_state_dict() for name in lora.components}
    tensors = {f"{c}.{k}": v for c, state in layers.items() for k, v in state.items()}
    text = lora.components.get("text_encoder") or lora.components.get("text_encoder_2")
    if "unet" not in lora.components:
        raise LoraFileError(f"{lora.path}: no UNet layers; expected a LoRA with UNet layers")
    return save_lora_file(
        out,
        arch=lora.arch,
        unet_lora_layers=layers["unet"],
        unet_lora_config=lora.components["unet"].lora_config(),
        text_encoder_lora_layers=layers.get("text_encoder"),
        text_encoder_2_lora_layers=layers.get("text_encoder_2"),
        text_encoder_lora_config=text.lora_config() if text else None,
        metadata=for_file(metadata, tensors, "diffusers"),
    )


def _parameter_count(components: Mapping[str, ComponentLora]) -> int:
    low_rank = sum(c.down[m].numel() + c.up[m].numel() for c in components.values() for m in c.down)
    return low_rank + sum(v.numel() for c in components.values() for v in c.magnitude.values())


def _refuse_dora(lora: LoadedLora, tool: str, why: str) -> None:
    if any(c.magnitude for c in lora.components.values()):
        raise LoraFileError(f"{lora.path}: a DoRA LoRA; {tool} refuses it: {why}")


def inspect_file(path: str | Path) -> dict[str, Any]:
    """What a person asks of a LoRA (or embedding) file, as plain data."""
    path = Path(path)
    tensors, metadata = _load_tensors(path)
    if set(tensors) in [set(keys) for keys in EMBEDDING_KEYS.values()]:
        return {
            "file": str(path),
            "format": "embedding",
            "arch": "sdxl" if "clip_g" in tensors else "sd15",
            "vectors": {key: list(value.shape) for key, value in tensors.items()},
            "parameters": sum(v.numel() for v in tensors.values()),
            "trigger": metadata.get("oeuvre.trigger_token"),
            "metadata": metadata,
        }
    lora = load_lora(path)
    ranks = sorted({c.rank(m) for c in lora.components.values() for m in c.down})
    alphas = sorted({a for c in lora.components.values() for a in c.alpha.values()})
    targets = {
        name: {"modules": len(c.down), "layer_types": sorted({_layer_type(m) for m in c.down})}
        for name, c in lora.components.items()
    }
    return {
        "file": str(path),
        "format": lora.format,
        "arch": lora.arch,
        "dora": any(c.magnitude for c in lora.components.values()),
        "rank": ranks[0] if len(ranks) == 1 else ranks,
        "alpha": alphas[0] if len(alphas) == 1 else alphas,
        "targets": targets,
        "parameters": _parameter_count(lora.components),
        "trigger": summary(metadata)["trigger"],
        "recommended": recommended_settings(metadata),
        "style_training": style_training(metadata),
        "metadata": metadata,
    }


def _layer_type(module: str) -> str:
    """`...attn1.to_q` -> to_q; `...attn1.to_out.0` -> to_out.0 (the index belongs to the name)."""
    parts = module.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def resize(lora: LoadedLora, rank: int) -> tuple[LoadedLora, float]:
    """Truncated SVD of each module's update to at most `rank`; returns the new LoRA and the share
    of the update's energy (squared Frobenius norm, all modules together) it keeps.

    Alpha is scaled with the rank so `alpha / rank` (the LoRA's strength) does not change."""
    import torch

    if rank < 1:
        raise LoraFileError(f"--rank {rank}: expected a positive rank")
    _refuse_dora(
        lora,
        "resize",
        "its magnitudes rescale W + ΔW by that sum's own norm, so a truncated ΔW would not keep the "
        "learnt magnitudes' meaning; retrain with train.lora_rank set lower",
    )
    kept = total = 0.0
    components = {}
    for name, c in lora.components.items():
        new = ComponentLora()
        for module, down in c.down.items():
            up = c.up[module]
            old_rank = c.rank(module)
            delta = up.reshape(up.shape[0], -1).double() @ down.reshape(old_rank, -1).double()
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            keep = min(rank, old_rank)
            energy = s.pow(2)
            kept += float(energy[:keep].sum())
            total += float(energy.sum())
            root = s[:keep].sqrt()
            new.up[module] = (u[:, :keep] * root).to(up.dtype).reshape(up.shape[0], keep, *up.shape[2:])
            new.down[module] = (root[:, None] * vh[:keep]).to(down.dtype).reshape(keep, *down.shape[1:])
            new.alpha[module] = c.alpha[module] * keep / old_rank
        components[name] = new
    metadata = {**lora.metadata, "ss_network_dim": str(rank)}
    any_alpha = next(a for c in components.values() for a in c.alpha.values())
    metadata["ss_network_alpha"] = str(any_alpha)
    retained = kept / total if total else 1.0
    return replace(lora, components=components, metadata=metadata), retained


def merge(a: LoadedLora, b: LoadedLora, weights: Sequence[float] = (1.0, 1.0)) -> LoadedLora:
    """One LoRA whose update is weights[0]·A + weights[1]·B exactly: ranks are stacked, each
    input's alpha/rank scale and weight folded into its up matrix, and alpha = the new rank."""
    import torch

    if len(weights) != 2:
        raise LoraFileError(f"--weights {list(weights)}: expected two numbers, one per LoRA")
    for lora in (a, b):
        _refuse_dora(
            lora,
            "merge",
            "a DoRA update is m·(W + ΔW)/‖W + ΔW‖, not linear in ΔW, so no single LoRA is the weighted "
            "sum of two; load both with their own weights instead (diffusers set_adapters, two LoRA "
            "nodes in ComfyUI)",
        )
    if a.arch != b.arch:
        raise LoraFileError(
            f"{b.path}: an {b.arch} LoRA cannot merge with {a.path} ({a.arch}); expected the same base"
        )
    base_a, base_b = a.metadata.get("oeuvre.base_model"), b.metadata.get("oeuvre.base_model")
    if base_a and base_b and base_a != base_b:
        raise LoraFileError(
            f"{b.path}: trained on base {base_b}, but {a.path} on {base_a}; expected LoRAs of the same base"
        )
    components: dict[str, ComponentLora] = {}
    for name in sorted(set(a.components) | set(b.components)):
        merged = ComponentLora()
        parts = [(lora.components.get(name), w, lora.path) for lora, w in ((a, weights[0]), (b, weights[1]))]
        modules = sorted({m for c, _, _ in parts if c for m in c.down})
        for module in modules:
            downs, ups = [], []
            for c, weight, path in parts:
                if c is None or module not in c.down:
                    continue
                if downs and (
                    c.down[module].shape[1:] != downs[0].shape[1:] or c.up[module].shape[0] != ups[0].shape[0]
                ):
                    raise LoraFileError(
                        f"{path}: layer {name}.{module} has another shape than in {a.path}; "
                        "expected LoRAs of the same base"
                    )
                downs.append(c.down[module])
                ups.append(c.up[module] * (weight * c.alpha[module] / c.rank(module)))
            merged.down[module] = torch.cat(downs, dim=0)
            merged.up[module] = torch.cat(ups, dim=1)
            merged.alpha[module] = float(merged.down[module].shape[0])
        components[name] = merged
    metadata = {
        **a.metadata,
        "oeuvre.merged_from": json.dumps([a.path.name, b.path.name]),
        "oeuvre.merge_weights": json.dumps(list(weights)),
    }
    ranks = {int(d.shape[0]) for c in components.values() for d in c.down.values()}
    metadata["ss_network_dim"] = metadata["ss_network_alpha"] = str(max(ranks))
    return LoadedLora(a.path, a.format, a.arch, components, metadata)


def push_plan(run_dir: str | Path) -> list[tuple[Path, str]]:
    """(local file, path in the repo) for everything a run shares: LoRA files, card, samples."""
    folder = Path(run_dir) / "lora"
    if not folder.is_dir():
        raise LoraFileError(f"{run_dir}: no lora/ folder; expected a training run folder (runs/<artist>)")
    files = sorted(folder.glob("*.safetensors")) + sorted((folder / "samples").glob("*.png"))
    if not any(p.suffix == ".safetensors" for p in files):
        raise LoraFileError(f"{folder}: no .safetensors files to upload; train first")
    card = folder / "README.md"
    if not card.is_file():
        raise LoraFileError(f"{card}: no model card; expected the README.md training writes")
    return [(path, path.relative_to(folder).as_posix()) for path in [card, *files]]


def push(
    run_dir: str | Path,
    repo: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    api=None,
    extra_files: Callable[[str | Path, str], list[tuple[Path, str]]] | None = None,
) -> list[str]:
    """Upload the run's lora/ files to the Hub model repo `repo` in one commit (huggingface_hub's
    `create_repo` + `create_commit`); with `dry_run`, only say what would go up. `extra_files(run_dir,
    repo)` adds (local file, path in repo) pairs: the app's Space files come in this way, so the LoRA
    tools never import the app."""
    if not REPO_ID.fullmatch(repo):
        raise LoraFileError(f"--repo {repo!r}: expected USER/NAME, a Hub model repo id")
    plan = push_plan(run_dir)
    if extra_files is not None:
        plan += extra_files(run_dir, repo)
    lines = [f"{path_in_repo}  ({local.stat().st_size} bytes)" for local, path_in_repo in plan]
    if dry_run:
        return lines
    from huggingface_hub import CommitOperationAdd, HfApi

    api = api or HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.create_commit(
            repo_id=repo,
            repo_type="model",
            operations=[CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for local, p in plan],
            commit_message=f"oeuvre: upload {Path(run_dir).name} LoRA",
        )
    except Exception as exc:  # network, auth, offline mode: one line the user can act on
        if isinstance(exc, LoraFileError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LoraFileError(
            f"--repo {repo}: upload failed ({first}); "
            "check `huggingface-cli login` and that HF_HUB_OFFLINE is unset"
        ) from exc
    return lines
