"""What the step needs besides the models: timesteps to train at, the target, per-sample weights."""

from __future__ import annotations

import torch

from oeuvre.config_schema import TrainConfig

BIAS_PORTION = 0.25  # share of the schedule that `earlier` / `later` favour


def timestep_weights(cfg: TrainConfig, num_train_timesteps: int) -> torch.Tensor:
    """Sampling weights over timesteps: uniform, or biased towards low noise (`earlier`: detail and
    texture), high noise (`later`: composition and colour masses) or a `range`."""
    weights = torch.ones(num_train_timesteps)
    span = int(num_train_timesteps * BIAS_PORTION)
    if cfg.timestep_bias == "earlier":
        weights[:span] *= cfg.timestep_bias_multiplier
    elif cfg.timestep_bias == "later":
        weights[-span:] *= cfg.timestep_bias_multiplier
    elif cfg.timestep_bias == "range":
        begin, end = cfg.timestep_bias_range
        weights[begin : min(end, num_train_timesteps)] *= cfg.timestep_bias_multiplier
    return weights


def sample_timesteps(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(weights, count, replacement=True, generator=generator)


def make_noise(latents: torch.Tensor, noise_offset: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    if noise_offset:
        # An offset per image and channel lets the model learn very dark and very light paintings.
        offset = torch.randn(latents.shape[:2] + (1, 1), generator=generator).to(latents)
        noise = noise + noise_offset * offset
    return noise


def target_for(noise_scheduler, latents, noise, timesteps) -> torch.Tensor:
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"scheduler prediction_type {kind!r}: expected epsilon or v_prediction")


def per_sample_weights(noise_scheduler, timesteps: torch.Tensor, snr_gamma: float | None) -> torch.Tensor:
    """Min-SNR-γ (Hang et al. 2023) through diffusers' compute_snr; ones when off."""
    if snr_gamma is None:
        return torch.ones(timesteps.shape[0])
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=snr_gamma)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    # Zero terminal SNR (rescaled betas) makes the last timestep's SNR 0, where min(snr, γ)/snr -> 1.
    return torch.where(snr > 0, clipped / snr.clamp(min=1e-12), torch.ones_like(snr))


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, pixel_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample weighted MSE; `pixel_weights` ([n, 1, h, w], masked loss) scale each latent cell."""
    squared = (pred.float() - target.float()).pow(2)
    if pixel_weights is not None:
        squared = squared * pixel_weights.to(squared)
    per_sample = squared.mean(dim=list(range(1, pred.ndim)))
    return (per_sample * weights.to(per_sample)).mean()
