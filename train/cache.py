"""Caches that make a step cheap: VAE latents on disk, prompt embeddings in memory.

A latent is keyed by image content hash, bucket and a fingerprint of the VAE, so a changed dataset,
bucket or VAE never reuses a stale entry. What is stored is the latent distribution's parameters
(mean and log-variance), so a cached step samples exactly what an uncached step would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from oeuvre.atomic import atomic_write_bytes


def vae_fingerprint(vae: torch.nn.Module) -> str:
    digest = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class LatentCache:
    def __init__(self, folder: Path, vae: torch.nn.Module):
        self.folder = folder / vae_fingerprint(vae)

    def path(self, key: str, bucket: tuple[int, int]) -> Path:
        # key: a sha256, maybe followed by its mask's digest (kept whole)
        return self.folder / f"{key[:32]}{key[64:]}_{bucket[0]}x{bucket[1]}.safetensors"

    def get(self, key: str, bucket: tuple[int, int]) -> torch.Tensor | None:
        entry = self.entry(key, bucket)
        return None if entry is None else entry["latent_dist"]

    def entry(self, key: str, bucket: tuple[int, int]) -> dict[str, torch.Tensor] | None:
        """`latent_dist`, and `mask` (on the latent grid) for a masked work."""
        path = self.path(key, bucket)
        return load_file(path) if path.is_file() else None

    def put(
        self, key: str, bucket: tuple[int, int], parameters: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        tensors = {"latent_dist": parameters.detach().float().cpu().contiguous()}
        if mask is not None:
            tensors["mask"] = mask.detach().float().cpu().contiguous()
        atomic_write_bytes(self.path(key, bucket), save(tensors))


class PromptCache:
    """Prompt -> embeddings, valid only while the text encoders and token embeddings are frozen."""

    def __init__(self, encode):
        self.encode = encode
        self.entries: dict[str, tuple] = {}

    def __call__(self, prompt: str) -> tuple:
        if prompt not in self.entries:
            with torch.no_grad():
                self.entries[prompt] = tuple(
                    t.detach() if t is not None else None for t in self.encode([prompt])
                )
        return self.entries[prompt]
